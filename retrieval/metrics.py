"""Pure ranking metrics (docs/formats.md sections 2, 3 and 5).

Every per-query function takes `ranked` (gallery indices, best first; -1 entries are padding),
`positives` and `junk` (gallery indices). Junk and padding are removed before scoring, as if
never returned, and a gallery item returned twice counts once, at its first position, so a
malformed ranking cannot score above 1. Metrics that divide by the number of positives return
NaN for a query without positives: it has no defined value, and the table functions leave
such queries out of the means (and count them) unless a compatibility mode says otherwise.

Reference modes reproduce a published evaluator on every input it accepts, quirks included
(docs/formats.md sections 2, 3 and 5): `revisitop_reference` (revisitop `compute_map`),
`gl3d_reference_ap` (MIRorR `compute_overlap_benchmark.py`) and `per_query_metrics(ap="fyn")`
(SoIR `calculate_map` / `get_recalls`). They count a repeated ranking entry at each occurrence,
and the first two divide by the positives as the ground-truth file lists them (`ListedTruth`).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from retrieval.records import QueryTruth

Indices = npt.ArrayLike
AP_MODES = ("standard", "fyn")
"""`standard`: AP divided by all positives; `fyn`: the Find-your-Needle (SoIR) convention."""

LISTED_POSITIVES = "listed_positives"
"""`Dataset.extra` key an adapter sets when its ground-truth file lists a positive more than
once (a duplicated line): setup -> {query index: positives listed, repeats included}, for those
queries only. Reference modes divide by that count, as the reference evaluators do."""


@dataclass(frozen=True)
class ListedTruth(QueryTruth):
    """A query's truth plus `listed`: its positives as the ground-truth file lists them,
    repeats included (the normaliser of the revisitop and MIRorR reference evaluators)."""

    listed: int = 0


def listed_truths(
    truths: Sequence[QueryTruth], listed: Mapping[int | str, int] | None = None
) -> list[ListedTruth]:
    """`truths` with their listed counts: `listed[q]` where given (an adapter's
    `LISTED_POSITIVES` entry for the setup; keys may be ints or their strings), else npos."""
    listed = {int(q): int(n) for q, n in (listed or {}).items()}
    return [
        ListedTruth(truth.positives, truth.junk, listed.get(q, count_positives(truth.positives)))
        for q, truth in enumerate(truths)
    ]


def kept_entries(ranked: Indices, junk: Indices = (), unique: bool = True) -> np.ndarray:
    """Bool mask over `ranked` of the entries that are scored.

    Returned as a mask rather than the filtered list so that per-entry data (boxes, IoUs)
    can be filtered in step with the ranking.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    keep = (ranked >= 0) & ~np.isin(ranked, np.asarray(junk, dtype=np.int64))
    if unique:
        first = np.zeros(len(ranked), dtype=bool)
        first[np.unique(ranked, return_index=True)[1]] = True
        keep &= first
    return keep


def drop_junk(ranked: Indices, junk: Indices = (), unique: bool = True) -> np.ndarray:
    """The ranking as scored: no padding, no junk, each item once (unless `unique=False`)."""
    ranked = np.asarray(ranked, dtype=np.int64)
    return ranked[kept_entries(ranked, junk, unique)]


def relevance(
    ranked: Indices, positives: Indices, junk: Indices = (), unique: bool = True
) -> np.ndarray:
    """Bool per scored entry: is it a positive. The one input every metric below needs."""
    return np.isin(drop_junk(ranked, junk, unique), np.asarray(positives, dtype=np.int64))


def count_positives(positives: Indices) -> int:
    """npos: distinct positives in the whole gallery, found or not."""
    return len(np.unique(np.asarray(positives, dtype=np.int64)))


# Metrics on a relevance vector `hits` (bool, best first). Shared by the per-query functions
# and the table functions so each ranking is matched against its positives only once;
# the two public ones also serve localisation, whose hits depend on IoU as well.


def _precisions_at_hits(hits: np.ndarray) -> np.ndarray:
    """P@i at the 1-based rank i of every hit."""
    ranks = np.flatnonzero(hits) + 1
    return np.arange(1, len(ranks) + 1) / ranks


def ap_from_hits(hits: np.ndarray, normaliser: int) -> float:
    """Sum of P@i over the hits / normaliser (NaN for 0): the core of every plain AP."""
    if normaliser == 0:
        return float("nan")
    return float(_precisions_at_hits(hits).sum() / normaliser)


def _found_ap(hits: np.ndarray) -> float:
    """AP divided by the positives found (Find-your-Needle); 0 when none is found."""
    return ap_from_hits(hits, int(hits.sum())) if hits.any() else 0.0


def _n_available(n_gallery: int, junk: np.ndarray) -> int:
    """Gallery items a ranking could return once junk is removed."""
    junk = np.unique(junk)
    return n_gallery - int(((junk >= 0) & (junk < n_gallery)).sum())


def _ap_at_k(hits: np.ndarray, npos: int, k: int) -> float:
    if npos == 0:
        return float("nan")
    return float(_precisions_at_hits(hits[:k]).sum() / min(npos, k))


def _precision_at_k(hits: np.ndarray, k: int, n_available: int) -> float:
    return float(hits[:k].sum() / max(min(k, n_available), 1))


def _recall_at_k(hits: np.ndarray, npos: int, k: int) -> float:
    return float(hits[:k].sum() / npos) if npos else float("nan")


def _hit_at_k(hits: np.ndarray, k: int) -> float:
    return float(hits[:k].any())


def trapezoid_ap_from_hits(hits: np.ndarray, npos: int) -> float:
    """Trapezoid AP of a relevance vector; shared with the localisation metrics."""
    return _trapezoid_ap_at(np.flatnonzero(hits), npos)


def _trapezoid_ap_at(positions: np.ndarray, normaliser: int) -> float:
    """Trapezoid AP from the 0-based positions r_0 <= r_1 <= ... of the hits (docs/formats.md
    section 2): sum_j ((1 if r_j = 0 else j / r_j) + (j + 1) / (r_j + 1)) / 2 / normaliser."""
    if normaliser == 0:
        return float("nan")
    positions = np.asarray(positions, dtype=np.int64)
    found = np.arange(len(positions))
    left = np.divide(found, positions, out=np.ones(len(positions)), where=positions > 0)
    right = (found + 1) / (positions + 1)
    return float(((left + right) / 2).sum() / normaliser)


def _revisitop_mp_at_k(hits: np.ndarray, k: int) -> float:
    return _revisitop_mp_at(np.flatnonzero(hits), k)


def _revisitop_mp_at(positions: np.ndarray, k: int) -> float:
    """mP@k from the 0-based positions of the hits; 0 when there are none."""
    places = np.asarray(positions, dtype=np.int64) + 1
    if len(places) == 0:
        return 0.0
    kq = min(int(places.max()), k)
    return float((places <= kq).sum() / kq)


# Per-query metrics.


def average_precision(
    ranked: Indices, positives: Indices, junk: Indices = (), normaliser: str = "standard"
) -> float:
    """Non-interpolated AP: mean of P@i over the positives.

    `normaliser="standard"` divides by npos (NaN when there are none), so positives never
    returned count as misses. `normaliser="found"` divides by the positives found in the
    returned list, as the Find-your-Needle code does; it equals the standard AP on a full
    ranking and is 0 when nothing is found.
    """
    hits = relevance(ranked, positives, junk)
    if normaliser == "standard":
        return ap_from_hits(hits, count_positives(positives))
    if normaliser == "found":
        return _found_ap(hits)
    raise ValueError(f"normaliser must be 'standard' or 'found', not {normaliser!r}")


def ap_at_k(ranked: Indices, positives: Indices, k: int, junk: Indices = ()) -> float:
    """AP over the top k, divided by min(npos, k) so that a perfect top k scores 1."""
    return _ap_at_k(relevance(ranked, positives, junk), count_positives(positives), k)


def precision_at_k(
    ranked: Indices, positives: Indices, k: int, n_gallery: int, junk: Indices = ()
) -> float:
    """Positives in the top k / k; divided by the gallery size instead when k exceeds it.

    Junk is not part of the gallery a perfect ranking could fill the top k with, so the
    gallery size used is `n_gallery` minus the junk items in it.
    """
    n_available = _n_available(n_gallery, np.asarray(junk, dtype=np.int64))
    return _precision_at_k(relevance(ranked, positives, junk), k, n_available)


def recall_at_k(ranked: Indices, positives: Indices, k: int, junk: Indices = ()) -> float:
    """True recall: positives in the top k / npos (NaN without positives)."""
    return _recall_at_k(relevance(ranked, positives, junk), count_positives(positives), k)


def hit_at_k(ranked: Indices, positives: Indices, k: int, junk: Indices = ()) -> float:
    """1 if any positive is in the top k, else 0 (what VPR papers call Recall@k)."""
    return _hit_at_k(relevance(ranked, positives, junk), k)


def trapezoid_ap(
    ranked: Indices, positives: Indices, junk: Indices = (), unique: bool = True
) -> float:
    """revisitop / GL3D AP: trapezoids under the precision-recall curve, divided by npos.

    `unique=False` keeps repeated items, as the GL3D reference does (its AP can exceed 1).
    """
    hits = relevance(ranked, positives, junk, unique)
    return trapezoid_ap_from_hits(hits, count_positives(positives))


def revisitop_mp_at_k(ranked: Indices, positives: Indices, k: int, junk: Indices = ()) -> float:
    """revisitop mP@k: precision at min(last positive's position, k), not plain P@k."""
    return _revisitop_mp_at_k(relevance(ranked, positives, junk), k)


# Reference evaluators, reproduced on every input they accept.


def revisitop_reference(
    ranked: Indices, positives: Indices, junk: Indices, listed: int, ks: Sequence[int] = ()
) -> tuple[float, list[float]]:
    """AP and mP@k of one query as revisitop's `compute_map` computes them.

    Every entry counts where it stands, a repeated one at each occurrence. A positive's
    position is its place in the ranking minus the junk entries strictly before it, so an item
    that is both positive and junk (possible when a gnd file's lists overlap) scores as a
    positive yet is skipped by the positives after it. AP divides by `listed`, the length of
    the setup's `ok` list (repeats included); NaN when it is 0 (query left out). -1 padding is
    "nothing returned" and is dropped first. mP@k of a query none of whose positives was
    returned is 0 (`compute_map` fails on it).
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    ranked = ranked[ranked >= 0]
    if listed == 0:
        return float("nan"), [float("nan")] * len(ks)
    hit_at = np.flatnonzero(np.isin(ranked, np.asarray(positives, dtype=np.int64)))
    junk_at = np.flatnonzero(np.isin(ranked, np.asarray(junk, dtype=np.int64)))
    positions = hit_at - np.searchsorted(junk_at, hit_at, side="left")
    return _trapezoid_ap_at(positions, listed), [_revisitop_mp_at(positions, k) for k in ks]


def gl3d_reference_ap(ranked: Indices, positives: Indices, listed: int, junk: Indices = ()) -> float:
    """Trapezoid AP of one query as MIRorR's `compute_overlap_benchmark.py` computes it.

    Junk (the query itself) is dropped at every occurrence, as the reference skips `i i` result
    lines; every other entry counts where it stands, a repeated neighbour at each occurrence
    (so AP can exceed 1). Divided by `listed`: the query's ground-truth lines, duplicated lines
    included; NaN when there are none (query left out). -1 padding is dropped first.
    """
    hits = relevance(ranked, positives, junk, unique=False)
    return trapezoid_ap_from_hits(hits, listed)


# Table-level scoring.


def _check_table(indices: np.ndarray, truths: Sequence[QueryTruth]) -> None:
    if indices.ndim != 2 or indices.shape[0] != len(truths):
        raise ValueError(
            f"indices must be (n_query, k) with one row per truth; got shape {indices.shape} "
            f"for {len(truths)} queries"
        )


def per_query_metrics(
    indices: npt.ArrayLike,
    truths: Sequence[QueryTruth],
    n_gallery: int,
    ks: Sequence[int] = (1, 5, 10),
    ap: str = "standard",
) -> pd.DataFrame:
    """One row per query: npos, ap, then ap@K, P@K, recall@K, hit@K for each K.

    Queries without positives get NaN everywhere, so plain means skip them.

    `ap="fyn"` computes what SoIR reports (`calculate_map`, `get_recalls`) as SoIR does:
    the ranking's entries each count where they stand, a repeated item at each occurrence;
    AP divides by the positives found (0 when none is); P@K = positives in the top K / K, and
    a query whose gallery (junk removed) holds fewer than K items is skipped for P@K (NaN; see
    `fyn_summary` for the mean over no query); hit@K is 1 if any of the top K entries is a
    positive. Queries without positives score 0 on these and stay in every mean. mAP@K and
    recall@K, which SoIR does not report, keep their definitions, except that such queries
    score 0 there too.
    """
    if ap not in AP_MODES:
        raise ValueError(f"ap must be one of {AP_MODES}, not {ap!r}")
    indices = np.asarray(indices, dtype=np.int64)
    _check_table(indices, truths)
    fyn = ap == "fyn"
    rows = []
    for ranked, truth in zip(indices, truths):
        hits = relevance(ranked, truth.positives, truth.junk)
        npos = count_positives(truth.positives)
        n_available = _n_available(n_gallery, truth.junk)
        row: dict[str, float] = {"npos": npos}
        if fyn:
            entries = relevance(ranked, truth.positives, truth.junk, unique=False)
            row["ap"] = _found_ap(entries)
            row.update({f"ap@{k}": _ap_at_k(hits, npos, k) for k in ks})
            row.update({f"P@{k}": _fyn_precision_at_k(entries, k, n_available) for k in ks})
            row.update({f"recall@{k}": _recall_at_k(hits, npos, k) for k in ks})
            row.update({f"hit@{k}": _hit_at_k(entries, k) for k in ks})
        else:
            row["ap"] = ap_from_hits(hits, npos)
            row.update({f"ap@{k}": _ap_at_k(hits, npos, k) for k in ks})
            row.update({f"P@{k}": _precision_at_k(hits, k, n_available) for k in ks})
            row.update({f"recall@{k}": _recall_at_k(hits, npos, k) for k in ks})
            row.update({f"hit@{k}": _hit_at_k(hits, k) for k in ks})
        rows.append(row)
    frame = pd.DataFrame(rows, index=pd.RangeIndex(len(rows), name="query"))
    empty = frame["npos"] == 0
    if fyn:
        frame.loc[empty, [f"{m}@{k}" for m in ("ap", "recall") for k in ks]] = 0.0
    else:
        frame.loc[empty, frame.columns.drop("npos")] = np.nan
    return frame.astype({"npos": np.int64})


def _fyn_precision_at_k(entries: np.ndarray, k: int, n_available: int) -> float:
    """SoIR P@K: positives among the top K entries / K; NaN (skipped) when K > the gallery."""
    return float(entries[:k].sum() / k) if k <= n_available else float("nan")


def fyn_summary(summary: Mapping[str, float]) -> dict[str, float]:
    """A summary of `per_query_metrics(ap="fyn")` rows with SoIR's empty mean: P@K over no
    query (all skipped) is 0, not undefined."""
    return {
        name: 0.0 if name.startswith("P@") and math.isnan(value) else value
        for name, value in summary.items()
    }


def summary_name(column: str) -> str:
    """Per-query column -> summary metric name: "ap" -> "mAP", "ap@10" -> "mAP@10"."""
    return "mAP" + column[2:] if column.startswith("ap") else column


def summarise(per_query: pd.DataFrame, metrics: Sequence[str]) -> dict[str, float]:
    """Mean of each metric column over the queries that have a value (NaN = excluded)."""
    return {summary_name(column): float(per_query[column].mean()) for column in metrics}


def count_queries(per_query: pd.DataFrame) -> dict[str, int]:
    """How many queries a summary covers, and how many of them had no positives."""
    return {
        "n_queries": len(per_query),
        "n_queries_without_positives": int((per_query["npos"] == 0).sum()),
    }


def score_rankings(
    indices: npt.ArrayLike,
    truths: Sequence[QueryTruth],
    n_gallery: int,
    ks: Sequence[int] = (1, 5, 10),
    ap: str = "standard",
) -> tuple[dict[str, float], pd.DataFrame]:
    """Summary (mAP, mAP@K, P@K, recall@K, hit@K, query counts) and the per-query table."""
    per_query = per_query_metrics(indices, truths, n_gallery, ks, ap)
    summary: dict[str, float] = summarise(per_query, list(per_query.columns.drop("npos")))
    if ap == "fyn":
        summary = fyn_summary(summary)
    summary.update(count_queries(per_query))
    return summary, per_query
