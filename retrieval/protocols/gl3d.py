"""GL3D matchable-image retrieval (docs/formats.md section 5): mAP@200.

Every image is a query against the whole set, itself included, as the reference pipeline
retrieves it; the adapter gives each query itself as junk. The top `depth` entries of the raw
ranking are taken first and the query dropped after, so 199 results remain.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Annotated

import numpy as np
import pandas as pd

from retrieval.config.rules import Rule
from retrieval.metrics import Indices, count_positives, relevance, trapezoid_ap, trapezoid_ap_from_hits
from retrieval.protocols import ProtocolResult, evaluate_setups, register, with_listed_positives
from retrieval.ranking import Ranking
from retrieval.records import Dataset, QueryTruth

AP_MODES = ("standard", "reference")
"""`standard`: each neighbour once, divided by the distinct neighbours; `reference`: as MIRorR
(repeated results and duplicated ground-truth lines both counted)."""


def gl3d_reference_ap(ranked: Indices, positives: Indices, listed: int, junk: Indices = ()) -> float:
    """Trapezoid AP of one query as MIRorR's `compute_overlap_benchmark.py` computes it.

    Junk (the query itself) is dropped at every occurrence, as the reference skips `i i` result
    lines; every other entry counts where it stands, a repeated neighbour at each occurrence
    (so AP can exceed 1). Divided by `listed`: the query's ground-truth lines, duplicated lines
    included; NaN when there are none (query left out). -1 padding is dropped first.
    """
    hits = relevance(ranked, positives, junk, unique=False)
    return trapezoid_ap_from_hits(hits, listed)


def gl3d_per_query(
    indices: np.ndarray, truths: Sequence[QueryTruth], depth: int = 200, ap: str = "standard"
) -> pd.DataFrame:
    """npos and trapezoid `ap@<depth>` per query; NaN without neighbours.

    `ap="standard"` de-duplicates the results and divides by the distinct neighbours;
    `ap="reference"` takes `truths` from `protocols.listed_truths` and scores with
    `gl3d_reference_ap`.
    """
    rows = []
    for ranked, truth in zip(indices, truths):
        top = ranked[:depth]
        if ap == "reference":
            value = gl3d_reference_ap(top, truth.positives, truth.listed, truth.junk)
        else:
            value = trapezoid_ap(top, truth.positives, truth.junk)
        rows.append({"npos": count_positives(truth.positives), f"ap@{depth}": value})
    return pd.DataFrame(rows).astype({"npos": np.int64})


@register("gl3d")
def gl3d(
    ranking: Ranking,
    dataset: Dataset,
    depth: Annotated[int, Rule(low=1)] = 200,
    ap: Annotated[str, Rule(choices=lambda: AP_MODES)] = "standard",
) -> ProtocolResult:
    """GL3D: trapezoid mAP@200 over the raw top 200, self dropped (ap='reference': MIRorR's own).

    Images without ground-truth neighbours are left out and counted. The default counts each
    neighbour once, at its first place, and divides by the distinct neighbours. `ap="reference"`
    computes what MIRorR's `compute_overlap_benchmark.py` does, for comparison with published
    figures: a neighbour returned twice counts twice, and the normaliser counts every
    ground-truth line of the image, a duplicated line as often as it occurs (the adapter's
    `extra["listed_positives"]`), so AP can exceed 1.
    """
    if ap == "reference":
        dataset = with_listed_positives(dataset)
    return evaluate_setups(ranking, dataset, partial(gl3d_per_query, depth=depth, ap=ap))
