"""PatternCom composed retrieval (docs/formats.md section 6): mAP per attribute and their plain mean.

Each query is one (query image, text) pair; its positives come from the adapter
(`retrieval.datasets.patterncom`) and its group is its attribute. AP is the non-interpolated
AP over the whole ranking: (1/npos) * sum of P@i at the 1-based rank i of every positive. The
ranking is scored in the order it comes in: the protocol sees no scores, so it has no tie rule
of its own (the toolkit's search puts equal scores in gallery-index order; the reference's
`torch.argsort` promises no order for them).

Rounding happens exactly where the rscir reference (`evaluate.py`) does it, since its
published numbers depend on it:
1. per pair: AP x 100 rounded to 2 decimals (Python's `round`); the per-query table's `ap`
   column holds that value / 100;
2. per attribute: the plain mean of the rounded pair values, rounded to 2 decimals;
3. overall: the plain mean of the per-attribute values (each attribute once, whatever its
   number of pairs; attributes without a scored pair left out), rounded to 2 decimals: the
   rscir README's "Avg".
Sums run left to right, as the reference's `sum` does on Python 3.9 (newer Pythons compensate
float sums). The summary stores each value / 100, a fraction like every other protocol's, so
the console and leaderboard (x100, 2 decimals) show the reference's digits.

`ap="standard"` divides by npos and leaves queries without positives out of the means (they
are counted); `ap="reference"` divides by the positives found in the ranking, scoring a query
without any as 0 and keeping it, and counts a repeated ranking entry at each occurrence, as
the reference's loop over its ranking does. On a full ranking without repeats (`dataset.k=null`,
as the reference ranks) with every query having positives, the two agree.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Annotated

import numpy as np
import pandas as pd

from retrieval.config.rules import Rule
from retrieval.metrics import count_positives, relevance
from retrieval.protocols import ProtocolResult, evaluate_setups, register
from retrieval.ranking import Ranking
from retrieval.records import Dataset, QueryTruth

log = logging.getLogger(__name__)

AP_MODES = ("standard", "reference")
"""`standard`: AP / npos, queries without positives excluded; `reference`: rscir's AP."""


def left_to_right_sum(values: Iterable[float]) -> float:
    """Sum in order, without compensation (Python 3.9's `sum` of floats)."""
    total = 0.0
    for value in values:
        total += value
    return total


def rounded_mean(values: Sequence[float]) -> float:
    """round(sum / count, 2), the reference's mean of already rounded values; NaN when empty."""
    return round(left_to_right_sum(values) / len(values), 2) if len(values) else float("nan")


def pair_ap_percent(hits: np.ndarray, npos: int, ap: str = "standard") -> float:
    """AP x 100 of one pair, rounded to 2 decimals (see the module docstring for `ap`)."""
    ranks = np.flatnonzero(hits) + 1
    if ap == "reference":
        if not len(ranks):
            return 0.0
        normaliser = len(ranks)
    elif npos == 0:
        return float("nan")
    else:
        normaliser = npos
    precisions = np.arange(1, len(ranks) + 1) / ranks  # each as Python's int / int gives it
    return round(left_to_right_sum(precisions.tolist()) / normaliser * 100, 2)


def patterncom_per_query(indices: np.ndarray, truths: Sequence[QueryTruth], ap: str = "standard") -> pd.DataFrame:
    """npos and `ap` (the pair's rounded AP x 100, / 100) per query."""
    rows = []
    for ranked, truth in zip(indices, truths):
        npos = count_positives(truth.positives)
        # the reference reads its ranking entry by entry: a repeated one counts at each occurrence
        hits = relevance(ranked, truth.positives, truth.junk, unique=ap == "standard")
        percent = pair_ap_percent(hits, npos, ap)
        rows.append({"npos": npos, "ap": percent / 100})
    return pd.DataFrame(rows, columns=["npos", "ap"]).astype({"npos": np.int64, "ap": np.float64})


def _percents(fractions: pd.Series) -> list[float]:
    """The rounded pair values back from their fractions (exact: round(x, 2) recovers them)."""
    return [round(value * 100, 2) for value in fractions.tolist() if not math.isnan(value)]


def summarise_attributes(per_query: pd.DataFrame, dataset: Dataset, labels: Iterable[str]) -> dict[str, dict[str, float]]:
    """Label -> {"mAP": fraction}: "<setup>" the mean of the attributes, "<setup>/<attribute>"
    each attribute, rounded as the module docstring says."""
    groups = list(dataset.query_groups())
    summary = {}
    for setup in dataset.truth:
        rows = per_query[per_query["setup"] == setup]
        by_group = {group: rounded_mean(_percents(rows.loc[rows["group"] == group, "ap"])) for group in groups}
        if groups:
            overall = rounded_mean([value for value in by_group.values() if not math.isnan(value)])
        else:
            overall = rounded_mean(_percents(rows["ap"]))
        summary[setup] = {"mAP": overall / 100}
        summary.update({f"{setup}/{group}": {"mAP": value / 100} for group, value in by_group.items()})
    return {label: summary[label] for label in labels}


@register("patterncom")
def patterncom(ranking: Ranking, dataset: Dataset, ap: Annotated[str, Rule(choices=lambda: AP_MODES)] = "standard") -> ProtocolResult:
    """PatternCom: mAP per attribute and their mean, rounded as rscir does (ap='reference': its AP)."""
    indices = np.asarray(ranking.indices)
    if indices.size and (indices.shape[1] < len(dataset.gallery) or (indices < 0).any()):
        log.warning(
            "%s: the ranking stops before the end of the gallery (%d of %d); the reference ranks "
            "the whole database (dataset.k=null), and AP differs with fewer results",
            dataset.name, indices.shape[1], len(dataset.gallery),
        )
    result = evaluate_setups(ranking, dataset, partial(patterncom_per_query, ap=ap))
    result.summary = summarise_attributes(result.per_query, dataset, result.summary)
    return result
