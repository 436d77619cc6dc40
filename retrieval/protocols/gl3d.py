"""GL3D matchable-image retrieval (FORMATS.md section 5): mAP@200.

Every image is a query against the whole set, itself included, as the reference pipeline
retrieves it; the adapter gives each query itself as junk. The top `depth` entries of the raw
ranking are taken first and the query dropped after, so 199 results remain.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd

from retrieval.metrics import count_positives, trapezoid_ap
from retrieval.protocols import ProtocolResult, evaluate_setups, register
from retrieval.ranking import Ranking
from retrieval.records import Dataset, QueryTruth

AP_MODES = ("standard", "reference")
"""`standard` de-duplicates the results; `reference` keeps duplicates as MIRorR does."""


def gl3d_per_query(
    indices: np.ndarray, truths: Sequence[QueryTruth], depth: int = 200, ap: str = "standard"
) -> pd.DataFrame:
    """npos and trapezoid `ap@<depth>` (normaliser: all neighbours); NaN without neighbours."""
    rows = [
        {
            "npos": count_positives(truth.positives),
            f"ap@{depth}": trapezoid_ap(
                ranked[:depth], truth.positives, truth.junk, unique=ap == "standard"
            ),
        }
        for ranked, truth in zip(indices, truths)
    ]
    return pd.DataFrame(rows).astype({"npos": np.int64})


@register("gl3d")
def gl3d(
    ranking: Ranking, dataset: Dataset, depth: int = 200, ap: str = "standard"
) -> ProtocolResult:
    """GL3D: trapezoid mAP@200 over the raw top 200, self dropped (ap='reference': no dedup).

    Images without ground-truth neighbours are left out and counted. The reference counts a
    neighbour returned twice twice, which can push its AP above 1; `ap="reference"`
    reproduces that for comparison with published figures.
    """
    if ap not in AP_MODES:
        raise ValueError(f"ap must be one of {AP_MODES}, not {ap!r}")
    return evaluate_setups(ranking, dataset, partial(gl3d_per_query, depth=depth, ap=ap))
