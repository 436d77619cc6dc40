"""Localisation scoring of a ranking that says where the object is (docs/formats.md sections 7 and 8).

For each returned positive, the IoU of its predicted box (or mask) with the query's
instances in that image (the best-matching one when there are several); then, through
`retrieval.localisation`, mAP at IoU 0, 0.5 and 0.50:0.05:0.95 and mIoU, for boxes and for
masks. A ranking entry without a mask (grid windows, the whole image) has its box as mask.
Results are added to the protocol's tables as `box_*` and `mask_*` metrics, with the AP and
the extra metrics the dataset's protocol declares in its `LocalisationSpec`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from retrieval.localisation import best_box_iou, best_mask_iou, per_query_localisation
from retrieval.masks import decode, tight_box
from retrieval.protocols import ID_COLUMNS, ProtocolResult, evaluate_setups, localisation_spec
from retrieval.ranking import Ranking
from retrieval.records import Dataset, Instance, QueryTruth

KINDS = ("box", "mask")
COLUMNS = {"ap@iou0": "ap@0", "ap@iou50": "ap@50", "ap@iou50:95": "ap@50:95", "miou": "iou"}
"""per_query_localisation column -> per-query column suffix."""
SUMMARY = {"ap@0": "mAP@0", "ap@50": "mAP@50", "ap@50:95": "mAP@50:95", "iou": "mIoU"}
"""per-query column suffix -> summary metric suffix ("box_mAP@50", "mask_mIoU", ...)."""


def _box_of(instance: Instance) -> tuple | None:
    if instance.box is not None:
        return instance.box
    return tight_box(decode(instance.mask)) if instance.mask is not None else None


def _box_raster(box: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(size_hw, dtype=bool)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    mask[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
    return mask


def _truths(kind: str, instances: list[Instance]) -> list:
    """The ground truth of `kind` for these instances: boxes, or decoded masks."""
    if kind == "box":
        return [b for b in map(_box_of, instances) if b is not None]
    return [decode(i.mask) for i in instances if i.mask is not None]


def prediction_ious(ranking: Ranking, dataset: Dataset, kind: str) -> np.ndarray:
    """(n_query, k) IoU of each returned image's prediction with the query's instances in it;
    NaN where the image holds none of them or there is no prediction. Each image's truth is
    decoded once per set of wanted instances, however many queries return the image."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    ious = np.full(ranking.indices.shape, np.nan)
    truths_of: dict[tuple[int, str], list] = {}
    for q, query in enumerate(dataset.queries):
        wanted = set(query.instance_ids)
        wanted_key = ",".join(sorted(wanted))
        for j, g in enumerate(ranking.indices[q].tolist()):
            if g < 0:
                continue
            matches = [i for i in dataset.gallery[g].instances if i.id in wanted]
            box = ranking.boxes[q, j] if ranking.boxes is not None else np.full(4, np.nan)
            if not matches or (np.isnan(box).any() and kind == "box"):
                continue
            if (g, wanted_key) not in truths_of:
                truths_of[g, wanted_key] = _truths(kind, matches)
            truths = truths_of[g, wanted_key]
            if not truths:
                continue
            if kind == "box":
                ious[q, j] = best_box_iou(box, np.asarray(truths, dtype=np.float64))
                continue
            rle = ranking.mask(q, j)
            if rle is not None:
                predicted = decode(rle)
            elif not np.isnan(box).any():
                predicted = _box_raster(box, truths[0].shape)
            else:
                continue
            ious[q, j] = best_mask_iou(predicted, truths)
    return ious


def available_kinds(ranking: Ranking, dataset: Dataset) -> list[str]:
    """Which localisation kinds can be scored: the ranking predicts, the gallery has truth."""
    if ranking.boxes is None and ranking.mask_ids is None:
        return []
    instances = [i for record in dataset.gallery for i in record.instances]
    has_mask = any(i.mask is not None for i in instances)
    kinds = ["box"] if ranking.boxes is not None and (has_mask or any(i.box is not None for i in instances)) else []
    return kinds + (["mask"] if has_mask else [])


def localisation_result(ranking: Ranking, dataset: Dataset, ious: Mapping[str, np.ndarray]) -> ProtocolResult:
    """Per-query and summary localisation metrics (`<kind>_mAP@50`, ...) for every setup and
    query group from each kind's `prediction_ious`, with the AP of the dataset's protocol."""
    ap_kind = localisation_spec(dataset.protocol).ap
    kinds = list(ious)

    def scorer(indices: np.ndarray, truths: Sequence[QueryTruth]) -> pd.DataFrame:
        frames = []
        for kind in kinds:
            frame = per_query_localisation(indices, ious[kind], truths, ap_kind)
            frames.append(frame.drop(columns="npos").rename(columns=lambda c: f"{kind}_{COLUMNS[c]}"))
        return pd.concat([frame[["npos"]], *frames], axis=1)

    result = evaluate_setups(ranking, dataset, scorer)
    for label, metrics in result.summary.items():
        renamed = {}
        for name, value in metrics.items():  # "box_ap@50" -> "box_mAP@50"
            kind, suffix = name.split("_", 1)
            renamed[f"{kind}_{SUMMARY[suffix]}"] = value
        result.summary[label] = renamed
    return result


def split_options(protocol: str, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(scoring, localisation) options: a protocol's options minus the localisation flags
    its `LocalisationSpec` declares, which go to `add_localisation` instead."""
    flags = localisation_spec(protocol).options
    scoring = {name: value for name, value in options.items() if name not in flags}
    return scoring, {name: value for name, value in options.items() if name in flags}


def add_localisation(result: ProtocolResult, ranking: Ranking, dataset: Dataset, **options: Any) -> ProtocolResult:
    """`result` with the localisation metrics added, when the ranking and gallery allow them.

    `options` are flags of the dataset's protocol (see `split_options`): each one that is on
    adds the extra metrics its `LocalisationSpec` declares. A flag the protocol does not
    declare may only be off, so an option set for the wrong protocol is an error.
    """
    extras = localisation_spec(dataset.protocol).options
    unknown = sorted(name for name, on in options.items() if on and name not in extras)
    if unknown:
        raise ValueError(
            f"protocol {dataset.protocol!r} has no localisation option {', '.join(map(repr, unknown))}; "
            f"its options: {', '.join(sorted(extras)) or 'none'}"
        )
    kinds = available_kinds(ranking, dataset)
    if not kinds:
        return result
    ious = {kind: prediction_ious(ranking, dataset, kind) for kind in kinds}
    found = localisation_result(ranking, dataset, ious)
    for name, extra in extras.items():
        if options.get(name):
            for label, metrics in extra(ranking, dataset, ious).items():
                found.summary.setdefault(label, {}).update(metrics)
    columns = [c for c in found.per_query.columns if c not in ID_COLUMNS]
    per_query = result.per_query.merge(found.per_query[["setup", "query", *columns]], on=["setup", "query"], how="left")
    summary = {label: {**metrics, **found.summary.get(label, {})} for label, metrics in result.summary.items()}
    return ProtocolResult(summary=summary, per_query=per_query, counts=result.counts)
