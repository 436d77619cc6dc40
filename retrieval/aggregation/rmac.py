"""R-MAC (Tolias, Sicre and Jégou, "Particular object retrieval with integral max-pooling of
CNN activations", ICLR 2016; gtolias/rmac `rmac_regionvec_act.m` and `test.m`).

Regions: square windows at L scales. At scale l the side is floor(2 min(H, W) / (l + 1));
there are l windows along the shorter side and l + extra along the longer, spread evenly,
where `extra` (0 for a square map) is the number of additional windows at the largest scale
that makes consecutive ones overlap closest to 40%: of the counts 2..7 along the longer side,
the one whose step b = (max(H, W) - min(H, W)) / (count - 1) minimises
|(w^2 - w b) / w^2 - 0.4| with w = min(H, W). Windows of side 0 are dropped.

R-MAC: the max over each window of each channel (MAC), L2-normalised per window,
PCA-whitened (learnt on regional vectors) and L2-normalised again, summed over the windows,
L2-normalised. Unlike cnnimageretrieval-pytorch's `rmac`, the whole map's MAC is not added.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.aggregation.dense import check_map
from retrieval.aggregation.whitening import Whitening, whiten

OVERLAP = 0.4
LONG_SIDE_COUNTS = (2, 3, 4, 5, 6, 7)
"""Candidate numbers of windows along the longer side at the largest scale."""


def extra_windows(height: int, width: int, overlap: float = OVERLAP) -> int:
    """Windows added along the longer side, at every scale, beyond those along the shorter."""
    short, long = min(height, width), max(height, width)
    if short == long:
        return 0
    steps = [(long - short) / (count - 1) for count in LONG_SIDE_COUNTS]
    misfit = [abs((short**2 - short * step) / short**2 - overlap) for step in steps]
    return int(np.argmin(misfit)) + 1


def rmac_regions(height: int, width: int, levels: int = 3, overlap: float = OVERLAP) -> np.ndarray:
    """(R, 4) int64 windows (x1, y1, x2, y2), in cells with exclusive ends, of an h x w map:
    scale 1 first, rows then columns within a scale."""
    short = min(height, width)
    extra = extra_windows(height, width, overlap)
    extra_h, extra_w = (extra, 0) if height > width else (0, extra)
    windows = []
    for level in range(1, levels + 1):
        side = math.floor(2 * short / (level + 1))
        if side == 0:
            continue
        half = math.floor(side / 2 - 1)
        tops = _starts(height, side, level + extra_h, half)
        lefts = _starts(width, side, level + extra_w, half)
        windows += [(left, top, left + side, top + side) for top in tops for left in lefts]
    return np.array(windows, dtype=np.int64).reshape(-1, 4)


def _starts(length: int, side: int, count: int, half: int) -> list[int]:
    """First cells of `count` windows of `side` cells spread evenly along `length` cells (the
    reference's centre arithmetic, which rounds the same way)."""
    step = (length - side) / (count - 1) if count > 1 else 0.0
    return [math.floor(half + index * step) - half for index in range(count)]


def regional_mac(feature_map: torch.Tensor, regions: np.ndarray) -> torch.Tensor:
    """(R, C) float32: each window's channel maxima over a C x h x w map, L2-normalised."""
    check_map(feature_map)
    pooled = [feature_map[:, y1:y2, x1:x2].amax(dim=(1, 2)) for x1, y1, x2, y2 in regions.tolist()]
    return F.normalize(torch.stack(pooled).float(), dim=1)


def regional_vectors(feature_map: torch.Tensor, levels: int = 3) -> torch.Tensor:
    """(R, C) L2-normalised regional MACs of a C x h x w map on its R-MAC grid: what a
    whitening for R-MAC is fitted on."""
    height, width = check_map(feature_map)
    return regional_mac(feature_map, rmac_regions(height, width, levels))


def rmac(feature_map: torch.Tensor, whitening: Whitening | None = None, levels: int = 3) -> torch.Tensor:
    """(d,) R-MAC vector of a C x h x w map: regional MACs, each whitened and L2-normalised
    (unwhitened when `whitening` is None), summed, L2-normalised."""
    regional = regional_vectors(feature_map, levels)
    if whitening is not None:
        regional = whiten(regional, whitening)
    return F.normalize(regional.sum(dim=0), dim=0)
