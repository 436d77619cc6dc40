"""Visual place recognition (docs/formats.md section 4): hit@N.

VPR papers call this metric Recall@N; it is hit@N (a query counts if any of its top N is a
positive), so it is named hit@N here to keep it apart from true recall.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Annotated

import numpy as np
import pandas as pd

from retrieval.config.rules import Rule
from retrieval.metrics import count_positives, hit_at_k
from retrieval.protocols import ProtocolResult, evaluate_setups, register
from retrieval.ranking import Ranking
from retrieval.records import Dataset, QueryTruth

DENOMINATORS = ("all", "with_positives")
"""`all`: AnyLoc, VPR-methods-evaluation, VPR-Bench; `with_positives`: Revisit-Anything."""


def vpr_per_query(
    indices: np.ndarray,
    truths: Sequence[QueryTruth],
    ns: Sequence[int] = (1, 5, 10, 20),
    denominator: str = "all",
) -> pd.DataFrame:
    """npos and hit@N per query; a query without positives is a miss, or NaN (excluded)."""
    rows = []
    for ranked, truth in zip(indices, truths):
        npos = count_positives(truth.positives)
        excluded = npos == 0 and denominator == "with_positives"
        row: dict[str, float] = {"npos": npos}
        row.update(
            {
                f"hit@{n}": np.nan if excluded else hit_at_k(ranked, truth.positives, n, truth.junk)
                for n in ns
            }
        )
        rows.append(row)
    return pd.DataFrame(rows).astype({"npos": np.int64})


@register("vpr")
def vpr(
    ranking: Ranking,
    dataset: Dataset,
    ns: Annotated[Sequence[int], Rule(low=1)] = (1, 5, 10, 20),
    denominator: Annotated[str, Rule(choices=lambda: DENOMINATORS)] = "all",
) -> ProtocolResult:
    """Place recognition: hit@N (papers' "Recall@N"), over all queries by default.

    `denominator="with_positives"` leaves queries without positives out, as Revisit-Anything
    does; by default they count as misses, as AnyLoc and VPR-Bench do.
    """
    scorer = partial(vpr_per_query, ns=tuple(ns), denominator=denominator)
    return evaluate_setups(ranking, dataset, scorer)
