"""Instance retrieval (docs/formats.md section 3): mAP, mAP@K, P@K, recall@K and hit@K, and the
Find-your-Needle (SoIR) reference mode."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Annotated

import numpy as np
import numpy.typing as npt
import pandas as pd

from retrieval.config.rules import Rule
from retrieval.metrics import (
    ap_at_k_from_hits,
    found_ap_from_hits,
    hit_at_k_from_hits,
    per_query_metrics,
    query_table,
    recall_at_k_from_hits,
    relevance,
)
from retrieval.protocols import ProtocolResult, evaluate_setups, register
from retrieval.ranking import Ranking
from retrieval.records import Dataset, QueryTruth

AP_MODES = ("standard", "fyn")
"""`standard`: AP divided by all positives; `fyn`: the Find-your-Needle (SoIR) convention."""


def fyn_per_query(
    indices: npt.ArrayLike,
    truths: Sequence[QueryTruth],
    n_gallery: int,
    ks: Sequence[int] = (1, 5, 10),
) -> pd.DataFrame:
    """The rows of `metrics.per_query_metrics`, computed as SoIR computes what it reports
    (`calculate_map`, `get_recalls`).

    The ranking's entries each count where they stand, a repeated item at each occurrence;
    AP divides by the positives found (0 when none is); P@K = positives in the top K / K, and
    a query whose gallery (junk removed) holds fewer than K items is skipped for P@K (NaN; see
    `fyn_summary` for the mean over no query); hit@K is 1 if any of the top K entries is a
    positive. Queries without positives score 0 on these and stay in every mean. mAP@K and
    recall@K, which SoIR does not report, keep their definitions, except that such queries
    score 0 there too.
    """
    def score(ranked: np.ndarray, truth: QueryTruth, npos: int, n_available: int) -> dict[str, float]:
        hits = relevance(ranked, truth.positives, truth.junk)
        entries = relevance(ranked, truth.positives, truth.junk, unique=False)
        row = {"ap": found_ap_from_hits(entries)}
        row.update({f"ap@{k}": ap_at_k_from_hits(hits, npos, k) for k in ks})
        row.update({f"P@{k}": _fyn_precision_at_k(entries, k, n_available) for k in ks})
        row.update({f"recall@{k}": recall_at_k_from_hits(hits, npos, k) for k in ks})
        row.update({f"hit@{k}": hit_at_k_from_hits(entries, k) for k in ks})
        return row

    frame = query_table(indices, truths, n_gallery, score)
    frame.loc[frame["npos"] == 0, [f"{m}@{k}" for m in ("ap", "recall") for k in ks]] = 0.0
    return frame


def _fyn_precision_at_k(entries: np.ndarray, k: int, n_available: int) -> float:
    """SoIR P@K: positives among the top K entries / K; NaN (skipped) when K > the gallery."""
    return float(entries[:k].sum() / k) if k <= n_available else float("nan")


def fyn_summary(summary: Mapping[str, float]) -> dict[str, float]:
    """A summary of `fyn_per_query` rows with SoIR's empty mean: P@K over no query (all
    skipped) is 0, not undefined."""
    return {
        name: 0.0 if name.startswith("P@") and math.isnan(value) else value
        for name, value in summary.items()
    }


@register("instance")
def instance(
    ranking: Ranking,
    dataset: Dataset,
    ks: Annotated[Sequence[int], Rule(low=1)] = (1, 5, 10),
    ap: Annotated[str, Rule(choices=lambda: AP_MODES)] = "standard",
) -> ProtocolResult:
    """Instance retrieval: mAP, mAP@K, P@K, recall@K, hit@K (ap='fyn': Find-your-Needle's own).

    With `ap="standard"` queries without positives are left out of every mean and counted.
    `ap="fyn"` reproduces SoIR's published numbers on any ranking (`fyn_per_query`):
    repeated entries counted at each occurrence, AP divided by the positives found, P@K = hits
    in the top K / K with queries skipped when the gallery holds fewer than K items (a mean
    over no query is 0), and queries without positives scored 0, kept in the means.
    """
    per_query = fyn_per_query if ap == "fyn" else per_query_metrics
    scorer = partial(per_query, n_gallery=len(dataset.gallery), ks=tuple(ks))
    result = evaluate_setups(ranking, dataset, scorer)
    if ap == "fyn":
        result.summary = {label: fyn_summary(metrics) for label, metrics in result.summary.items()}
    return result
