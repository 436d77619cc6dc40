"""Localisation metrics (docs/formats.md sections 7 and 8): did the result say *where* the object is.

Overlap helpers (box and mask IoU, best match among several ground-truth instances) and
ranking metrics that take, next to a ranking, the IoU of each returned item's predicted
box or mask with the query's object in that image (`ious`, aligned with `ranked`; NaN = no
prediction). Computing those IoUs from region search results is the caller's job.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd

from retrieval.metrics import (
    ap_from_hits,
    count_positives,
    drop_junk,
    kept_entries,
    trapezoid_ap_from_hits,
)
from retrieval.records import QueryTruth

IOU_THRESHOLDS = np.round(np.linspace(0.50, 0.95, 10), 2)
"""0.50, 0.55, ..., 0.95: the thresholds averaged into mAP@50:5:95."""

PIXEL_RETRIEVAL_IGNORED = {"roxford5k": (56, 63), "rparis6k": (57, 59)}
"""0-based queries the pixel-retrieval reference skips but keeps in its denominator."""

AP_KINDS = ("standard", "trapezoid")
"""`standard`: section 3 AP; `trapezoid`: the revisitop AP of section 2."""


def box_iou(boxes_a: npt.ArrayLike, boxes_b: npt.ArrayLike) -> np.ndarray:
    """Pairwise IoU (N, M) of xyxy boxes, right/bottom exclusive; 0 for empty or NaN boxes."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    width = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    height = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = np.clip(a[..., 2] - a[..., 0], 0, None) * np.clip(a[..., 3] - a[..., 1], 0, None)
    area_b = np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.nan_to_num(iou, nan=0.0)


def mask_iou(predicted: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """|A and B| / |A or B| of two binary HxW masks; an empty prediction scores 0."""
    predicted = np.asarray(predicted, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    union = np.logical_or(predicted, truth).sum()
    if not predicted.any() or union == 0:
        return 0.0
    return float(np.logical_and(predicted, truth).sum() / union)


def best_box_iou(predicted: npt.ArrayLike, truths: npt.ArrayLike) -> float:
    """IoU with the ground-truth box the prediction overlaps most (0 when there is none)."""
    ious = box_iou(predicted, truths)
    return float(ious.max()) if ious.size else 0.0


def best_mask_iou(predicted: npt.ArrayLike, truths: Sequence[npt.ArrayLike]) -> float:
    """IoU with the ground-truth mask the prediction overlaps most (0 when there is none)."""
    return max((mask_iou(predicted, truth) for truth in truths), default=0.0)


def positive_ious(
    ranked: npt.ArrayLike, positives: npt.ArrayLike, ious: npt.ArrayLike
) -> np.ndarray:
    """IoU per distinct positive (sorted by index), from its first place in the ranking.

    NaN for a positive that was not returned or was returned without a prediction.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    keep = kept_entries(ranked)
    returned = dict(zip(ranked[keep].tolist(), np.asarray(ious, dtype=np.float64)[keep]))
    positives = np.unique(np.asarray(positives, dtype=np.int64))
    return np.array([returned.get(p, np.nan) for p in positives.tolist()], dtype=np.float64)


def localised_hits(
    ranked: npt.ArrayLike,
    positives: npt.ArrayLike,
    ious: npt.ArrayLike,
    threshold: float,
    junk: npt.ArrayLike = (),
) -> np.ndarray:
    """Relevance of the scored entries where a positive counts only if its IoU > threshold.

    A positive that fails stays where it stands, as a negative. `threshold <= 0` is
    retrieval alone (no IoU test), as docs/formats.md section 8 defines t = 0.
    """
    ranked = np.asarray(ranked, dtype=np.int64)
    keep = kept_entries(ranked, junk)
    hits = np.isin(ranked[keep], np.asarray(positives, dtype=np.int64))
    if threshold > 0:
        hits &= np.nan_to_num(np.asarray(ious, dtype=np.float64)[keep], nan=0.0) > threshold
    return hits


def localised_ap(
    ranked: npt.ArrayLike,
    positives: npt.ArrayLike,
    ious: npt.ArrayLike,
    threshold: float,
    junk: npt.ArrayLike = (),
    kind: str = "standard",
) -> float:
    """AP at IoU threshold t, divided by all positives (NaN without positives)."""
    if kind not in AP_KINDS:
        raise ValueError(f"kind must be one of {AP_KINDS}, not {kind!r}")
    hits = localised_hits(ranked, positives, ious, threshold, junk)
    npos = count_positives(positives)
    return ap_from_hits(hits, npos) if kind == "standard" else trapezoid_ap_from_hits(hits, npos)


def localised_ap_range(
    ranked: npt.ArrayLike,
    positives: npt.ArrayLike,
    ious: npt.ArrayLike,
    thresholds: Sequence[float] = tuple(IOU_THRESHOLDS),
    junk: npt.ArrayLike = (),
    kind: str = "standard",
) -> float:
    """Mean localised AP over thresholds (default 0.50:0.05:0.95, i.e. AP@50:5:95)."""
    return float(
        np.mean([localised_ap(ranked, positives, ious, t, junk, kind) for t in thresholds])
    )


def mean_iou(ranked: npt.ArrayLike, positives: npt.ArrayLike, ious: npt.ArrayLike) -> float:
    """Mean IoU over all positives of a query; one without a prediction counts 0."""
    per_positive = positive_ious(ranked, positives, ious)
    return float(np.nan_to_num(per_positive, nan=0.0).mean()) if per_positive.size else np.nan


def per_query_localisation(
    indices: npt.ArrayLike,
    ious: npt.ArrayLike,
    truths: Sequence[QueryTruth],
    kind: str = "standard",
) -> pd.DataFrame:
    """Per query: npos, ap@iou0 (retrieval alone), ap@iou50, ap@iou50:95 and miou.

    Column means over the queries with positives give mAP@t and mIoU (NaN rows excluded).
    """
    rows = []
    for ranked, row_ious, truth in zip(np.asarray(indices), np.asarray(ious), truths):
        args = (ranked, truth.positives, row_ious)
        rows.append(
            {
                "npos": count_positives(truth.positives),
                "ap@iou0": localised_ap(*args, 0.0, truth.junk, kind),
                "ap@iou50": localised_ap(*args, 0.5, truth.junk, kind),
                "ap@iou50:95": localised_ap_range(*args, IOU_THRESHOLDS, truth.junk, kind),
                "miou": mean_iou(*args),
            }
        )
    return pd.DataFrame(rows).astype({"npos": np.int64})


# Pixel-retrieval compatibility (PROxford / PRParis reference evaluation).


def pixel_retrieval_ap(
    ranked: npt.ArrayLike,
    positives: npt.ArrayLike,
    ious: npt.ArrayLike,
    threshold: float,
    junk: npt.ArrayLike = (),
) -> float:
    """The reference's AP at one threshold: NaN when no positive passes (query dropped).

    Positives whose IoU is not > threshold stop being positives (negatives where they
    stand), and the trapezoid AP is divided by the number that pass, not by all positives.
    """
    candidates = np.unique(np.asarray(positives, dtype=np.int64))
    found_ious = np.nan_to_num(positive_ious(ranked, candidates, ious), nan=0.0)
    passing = candidates[found_ious > threshold]
    if len(passing) == 0:
        return float("nan")
    hits = np.isin(drop_junk(ranked, junk), passing)
    return trapezoid_ap_from_hits(hits, len(passing))


def pixel_retrieval_map(
    indices: npt.ArrayLike,
    ious: npt.ArrayLike,
    truths: Sequence[QueryTruth],
    ignored: Sequence[int] = (),
    thresholds: Sequence[float] = tuple(IOU_THRESHOLDS),
) -> float:
    """The reference's mAP@50:5:95 (strict IoU > t; pass box IoUs to match its numbers).

    At each threshold, queries with no passing positive are dropped from that threshold's
    mean, while `ignored` queries (see PIXEL_RETRIEVAL_IGNORED) add 0 but stay in the
    denominator. A threshold with nothing left to average scores 0.
    """
    indices, ious = np.asarray(indices), np.asarray(ious)
    ignored_set = set(ignored)
    per_threshold = []
    for t in thresholds:
        aps = np.array(
            [
                pixel_retrieval_ap(indices[q], truth.positives, ious[q], t, truth.junk)
                for q, truth in enumerate(truths)
                if q not in ignored_set
            ]
        )
        denominator = len(truths) - int(np.isnan(aps).sum())
        per_threshold.append(np.nansum(aps) / denominator if denominator else 0.0)
    return float(np.mean(per_threshold))


def pixel_retrieval_iou(
    ranked: npt.ArrayLike,
    positives: npt.ArrayLike,
    ious: npt.ArrayLike,
    skip_if_unpredicted: npt.ArrayLike = (),
) -> float:
    """The reference's per-query mIoU: positives in `skip_if_unpredicted` (the easy ones in
    Medium) are skipped when they have no prediction; other unpredicted ones count 0.
    """
    candidates = np.unique(np.asarray(positives, dtype=np.int64))
    per_positive = positive_ious(ranked, candidates, ious)
    skipped = np.isnan(per_positive) & np.isin(candidates, np.asarray(skip_if_unpredicted))
    counted = np.nan_to_num(per_positive[~skipped], nan=0.0)
    return float(counted.mean()) if counted.size else float("nan")
