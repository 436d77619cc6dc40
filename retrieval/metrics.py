"""Pure ranking metrics (docs/formats.md sections 2, 3 and 5).

Every per-query function takes `ranked` (gallery indices, best first; -1 entries are padding),
`positives` and `junk` (gallery indices). Junk and padding are removed before scoring, as if
never returned, and a gallery item returned twice counts once, at its first position, so a
malformed ranking cannot score above 1. Metrics that divide by the number of positives return
NaN for a query without positives: it has no defined value, and the table functions leave
such queries out of the means (and count them) unless a compatibility mode says otherwise.

Reference modes, which reproduce one benchmark's published evaluator with its quirks, live with
that benchmark's protocol (`retrieval.protocols.revisitop`, `.gl3d`, `.instance`) and build on
the relevance-vector functions here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from retrieval.records import QueryTruth

Indices = npt.ArrayLike


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
# and the table functions so each ranking is matched against its positives only once; the
# public ones also serve localisation, whose hits depend on IoU as well, and the protocols'
# reference modes, whose hits count a repeated entry at each occurrence.


def _precisions_at_hits(hits: np.ndarray) -> np.ndarray:
    """P@i at the 1-based rank i of every hit."""
    ranks = np.flatnonzero(hits) + 1
    return np.arange(1, len(ranks) + 1) / ranks


def ap_from_hits(hits: np.ndarray, normaliser: int) -> float:
    """Sum of P@i over the hits / normaliser (NaN for 0): the core of every plain AP."""
    if normaliser == 0:
        return float("nan")
    return float(_precisions_at_hits(hits).sum() / normaliser)


def found_ap_from_hits(hits: np.ndarray) -> float:
    """AP divided by the positives found (Find-your-Needle); 0 when none is found."""
    return ap_from_hits(hits, int(hits.sum())) if hits.any() else 0.0


def available_items(n_gallery: int, junk: np.ndarray) -> int:
    """Gallery items a ranking could return once junk is removed."""
    junk = np.unique(junk)
    return n_gallery - int(((junk >= 0) & (junk < n_gallery)).sum())


def ap_at_k_from_hits(hits: np.ndarray, npos: int, k: int) -> float:
    """AP over the top k hits / min(npos, k); NaN without positives."""
    if npos == 0:
        return float("nan")
    return float(_precisions_at_hits(hits[:k]).sum() / min(npos, k))


def _precision_at_k(hits: np.ndarray, k: int, n_available: int) -> float:
    return float(hits[:k].sum() / max(min(k, n_available), 1))


def recall_at_k_from_hits(hits: np.ndarray, npos: int, k: int) -> float:
    """Hits in the top k / npos; NaN without positives."""
    return float(hits[:k].sum() / npos) if npos else float("nan")


def hit_at_k_from_hits(hits: np.ndarray, k: int) -> float:
    """1.0 if any of the top k is a hit, else 0.0."""
    return float(hits[:k].any())


def trapezoid_ap_from_hits(hits: np.ndarray, npos: int) -> float:
    """Trapezoid AP of a relevance vector; shared with the localisation metrics."""
    return trapezoid_ap_at(np.flatnonzero(hits), npos)


def trapezoid_ap_at(positions: np.ndarray, normaliser: int) -> float:
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
    return revisitop_mp_at(np.flatnonzero(hits), k)


def revisitop_mp_at(positions: np.ndarray, k: int) -> float:
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
        return found_ap_from_hits(hits)
    raise ValueError(f"normaliser must be 'standard' or 'found', not {normaliser!r}")


def ap_at_k(ranked: Indices, positives: Indices, k: int, junk: Indices = ()) -> float:
    """AP over the top k, divided by min(npos, k) so that a perfect top k scores 1."""
    return ap_at_k_from_hits(relevance(ranked, positives, junk), count_positives(positives), k)


def precision_at_k(
    ranked: Indices, positives: Indices, k: int, n_gallery: int, junk: Indices = ()
) -> float:
    """Positives in the top k / k; divided by the gallery size instead when k exceeds it.

    Junk is not part of the gallery a perfect ranking could fill the top k with, so the
    gallery size used is `n_gallery` minus the junk items in it.
    """
    n_available = available_items(n_gallery, np.asarray(junk, dtype=np.int64))
    return _precision_at_k(relevance(ranked, positives, junk), k, n_available)


def recall_at_k(ranked: Indices, positives: Indices, k: int, junk: Indices = ()) -> float:
    """True recall: positives in the top k / npos (NaN without positives)."""
    return recall_at_k_from_hits(relevance(ranked, positives, junk), count_positives(positives), k)


def hit_at_k(ranked: Indices, positives: Indices, k: int, junk: Indices = ()) -> float:
    """1 if any positive is in the top k, else 0 (what VPR papers call Recall@k)."""
    return hit_at_k_from_hits(relevance(ranked, positives, junk), k)


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


# Table-level scoring.


def check_table(indices: np.ndarray, truths: Sequence[QueryTruth]) -> None:
    """Refuse an index table that does not hold one ranking row per query truth."""
    if indices.ndim != 2 or indices.shape[0] != len(truths):
        raise ValueError(
            f"indices must be (n_query, k) with one row per truth; got shape {indices.shape} "
            f"for {len(truths)} queries"
        )


QueryScorer = Callable[[np.ndarray, QueryTruth, int, int], dict[str, float]]
"""Scores one query's ranked row: (ranked ids, truth, npos, gallery items besides its junk)."""


def query_table(indices: npt.ArrayLike, truths: Sequence[QueryTruth], n_gallery: int, score: QueryScorer) -> pd.DataFrame:
    """One row per query: npos, then what `score` gives; a protocol's per-query table."""
    indices = np.asarray(indices, dtype=np.int64)
    check_table(indices, truths)
    rows = []
    for ranked, truth in zip(indices, truths):
        npos = count_positives(truth.positives)
        rows.append({"npos": npos, **score(ranked, truth, npos, available_items(n_gallery, truth.junk))})
    return pd.DataFrame(rows, index=pd.RangeIndex(len(rows), name="query")).astype({"npos": np.int64})


def per_query_metrics(
    indices: npt.ArrayLike,
    truths: Sequence[QueryTruth],
    n_gallery: int,
    ks: Sequence[int] = (1, 5, 10),
) -> pd.DataFrame:
    """One row per query: npos, ap, then ap@K, P@K, recall@K, hit@K for each K.

    Queries without positives get NaN everywhere, so plain means skip them. (The instance
    protocol's `ap="fyn"` mode scores as Find-your-Needle does: `protocols.instance.fyn_per_query`.)
    """
    def score(ranked: np.ndarray, truth: QueryTruth, npos: int, n_available: int) -> dict[str, float]:
        hits = relevance(ranked, truth.positives, truth.junk)
        row = {"ap": ap_from_hits(hits, npos)}
        row.update({f"ap@{k}": ap_at_k_from_hits(hits, npos, k) for k in ks})
        row.update({f"P@{k}": _precision_at_k(hits, k, n_available) for k in ks})
        row.update({f"recall@{k}": recall_at_k_from_hits(hits, npos, k) for k in ks})
        row.update({f"hit@{k}": hit_at_k_from_hits(hits, k) for k in ks})
        return row

    frame = query_table(indices, truths, n_gallery, score)
    frame.loc[frame["npos"] == 0, frame.columns.drop("npos")] = np.nan
    return frame


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
) -> tuple[dict[str, float], pd.DataFrame]:
    """Summary (mAP, mAP@K, P@K, recall@K, hit@K, query counts) and the per-query table."""
    per_query = per_query_metrics(indices, truths, n_gallery, ks)
    summary: dict[str, float] = summarise(per_query, list(per_query.columns.drop("npos")))
    summary.update(count_queries(per_query))
    return summary, per_query
