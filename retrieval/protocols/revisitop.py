"""Revisited Oxford and Paris (FORMATS.md section 2): trapezoid mAP and mP@k per setup.

The dataset adapter resolves the Easy / Medium / Hard positives and junk into
`dataset.truth["easy" | "medium" | "hard"]`, so this module only scores.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd

from retrieval.metrics import count_positives, revisitop_mp_at_k, trapezoid_ap
from retrieval.protocols import ProtocolResult, evaluate_setups, register
from retrieval.ranking import Ranking
from retrieval.records import Dataset, QueryTruth


def revisitop_per_query(
    indices: np.ndarray, truths: Sequence[QueryTruth], ks: Sequence[int] = (1, 5, 10)
) -> pd.DataFrame:
    """npos, trapezoid `ap` and `mP@k` per query; NaN for queries without positives."""
    rows = []
    for ranked, truth in zip(indices, truths):
        positives, junk = truth.positives, truth.junk
        npos = count_positives(positives)
        row: dict[str, float] = {"npos": npos, "ap": trapezoid_ap(ranked, positives, junk)}
        row.update(
            {
                f"mP@{k}": revisitop_mp_at_k(ranked, positives, k, junk) if npos else np.nan
                for k in ks
            }
        )
        rows.append(row)
    return pd.DataFrame(rows).astype({"npos": np.int64})


@register("revisitop")
def revisitop(
    ranking: Ranking, dataset: Dataset, ks: Sequence[int] = (1, 5, 10)
) -> ProtocolResult:
    """Revisited Oxford/Paris: trapezoid mAP and mP@k per setup, junk removed.

    Queries without positives in a setup are left out of that setup's means and counted.
    Papers report 100 x mAP rounded to 2 decimals; the reporting layer does that.
    """
    return evaluate_setups(ranking, dataset, partial(revisitop_per_query, ks=tuple(ks)))
