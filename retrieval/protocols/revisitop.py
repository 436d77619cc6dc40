"""Revisited Oxford and Paris (docs/formats.md section 2): trapezoid mAP and mP@k per setup.

The dataset adapter resolves the Easy / Medium / Hard positives and junk into
`dataset.truth["easy" | "medium" | "hard"]`, so this module only scores. Localisation is
scored with the same trapezoid AP, and the `pixel_reference` option adds the PROxford /
PRParis reference evaluation's own numbers (docs/formats.md section 8).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Annotated

import numpy as np
import pandas as pd

from retrieval.config.rules import Rule
from retrieval.localisation import PIXEL_RETRIEVAL_IGNORED, pixel_retrieval_iou, pixel_retrieval_map
from retrieval.metrics import (
    Indices,
    count_positives,
    revisitop_mp_at,
    revisitop_mp_at_k,
    trapezoid_ap,
    trapezoid_ap_at,
)
from retrieval.protocols import LocalisationSpec, ProtocolResult, evaluate_setups, register, with_listed_positives
from retrieval.ranking import Ranking
from retrieval.records import Dataset, QueryTruth

AP_MODES = ("standard", "reference")
"""`standard`: docs/formats.md section 2 on the ranking with each item once; `reference`: revisitop's
`compute_map` itself (repeated entries counted at each occurrence)."""


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
    return trapezoid_ap_at(positions, listed), [revisitop_mp_at(positions, k) for k in ks]


def revisitop_per_query(
    indices: np.ndarray,
    truths: Sequence[QueryTruth],
    ks: Sequence[int] = (1, 5, 10),
    ap: str = "standard",
) -> pd.DataFrame:
    """npos, trapezoid `ap` and `mP@k` per query; NaN for queries without positives.

    `ap="reference"` takes `truths` from `protocols.listed_truths` and scores with
    `revisitop_reference`.
    """
    rows = []
    for ranked, truth in zip(indices, truths):
        positives, junk = truth.positives, truth.junk
        npos = count_positives(positives)
        row: dict[str, float] = {"npos": npos}
        if ap == "reference":
            average, precisions = revisitop_reference(ranked, positives, junk, truth.listed, ks)
            row["ap"] = average
            row.update({f"mP@{k}": value for k, value in zip(ks, precisions)})
        else:
            row["ap"] = trapezoid_ap(ranked, positives, junk)
            row.update(
                {
                    f"mP@{k}": revisitop_mp_at_k(ranked, positives, k, junk) if npos else np.nan
                    for k in ks
                }
            )
        rows.append(row)
    return pd.DataFrame(rows).astype({"npos": np.int64})


def pixel_reference_summary(
    ranking: Ranking, dataset: Dataset, ious: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Medium and Hard as the PROxford/PRParis reference evaluation computes them (docs/formats.md
    section 8, compatibility): box IoU, strict IoU > t, queries with no passing positive
    dropped per threshold, its two ignored queries kept in the denominator; mIoU skipping
    unpredicted easy positives in Medium. Of `ious` (per kind), the reference uses boxes."""
    if "box" not in ious:
        raise ValueError("protocol_options.pixel_reference needs predicted boxes and dataset.pixel_labels")
    box_ious = ious["box"]
    ignored = PIXEL_RETRIEVAL_IGNORED.get(dataset.name, ())
    summary = {}
    for setup in ("medium", "hard"):
        truths = dataset.truth[setup]
        skip = [dataset.truth["easy"][q].positives if setup == "medium" else () for q in range(len(truths))]
        per_query = [
            pixel_retrieval_iou(ranking.indices[q], truth.positives, box_ious[q], skip[q])
            for q, truth in enumerate(truths)
            if len(truth.positives)
        ]
        summary[setup] = {
            "reference_box_mAP@50:95": pixel_retrieval_map(ranking.indices, box_ious, truths, ignored),
            "reference_box_mIoU": float(np.nanmean(per_query)) if per_query else float("nan"),
        }
    return summary


@register("revisitop", LocalisationSpec(ap="trapezoid", options={"pixel_reference": pixel_reference_summary}))
def revisitop(
    ranking: Ranking,
    dataset: Dataset,
    ks: Annotated[Sequence[int], Rule(low=1)] = (1, 5, 10),
    ap: Annotated[str, Rule(choices=lambda: AP_MODES)] = "standard",
) -> ProtocolResult:
    """Revisited Oxford/Paris: trapezoid mAP and mP@k per setup, junk removed (ap='reference':
    revisitop's compute_map).

    Queries without positives in a setup are left out of that setup's means and counted.
    The default scores each returned item once, at its first place. `ap="reference"` computes
    AP and mP@k as `compute_map` does on any ranking it accepts: an id repeated in the ranking
    counts at each occurrence, and AP divides by the setup's `ok` list with its repeats (the
    adapter's `extra["listed_positives"]`). Papers report 100 x mAP rounded to 2 decimals;
    the reporting layer does that.
    """
    if ap == "reference":
        dataset = with_listed_positives(dataset)
    return evaluate_setups(ranking, dataset, partial(revisitop_per_query, ks=tuple(ks), ap=ap))
