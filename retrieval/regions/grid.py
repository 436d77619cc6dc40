"""Multi-scale grid: square windows sized relative to the image, overlapping, covering it all."""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

import numpy as np

from retrieval.config.rules import Rule
from retrieval.regions.proposals import Regions, boxes_only, register


def positions(length: int, side: int, overlap: float) -> np.ndarray:
    """Window starts along one axis: evenly spread from 0 to `length - side`, as few as keep
    neighbours overlapping by at least `overlap` x side (one window when it spans the axis)."""
    if side >= length:
        return np.zeros(1, dtype=np.int64)
    stride = max(side * (1.0 - overlap), 1.0)
    count = math.ceil((length - side) / stride) + 1
    return np.round(np.linspace(0, length - side, count)).astype(np.int64)


@register("grid")
def grid(
    image: np.ndarray,
    scales: Annotated[Sequence[float], Rule(above=0, high=1)] = (0.5, 0.35, 0.25, 0.18),
    overlap: Annotated[float, Rule(low=0, below=1)] = 0.5,
    min_side: Annotated[int, Rule(low=1)] = 16,
) -> Regions:
    """Square windows of side = scale x the shorter image side, overlapping by `overlap`.

    Relative sizes make the grid independent of the image resolution; the default scales
    (a factor ~sqrt(2) apart) give ~270 windows on a 4:3 image. Windows shorter than
    `min_side` pixels are not made (they would be smaller than a feature-map cell).
    """
    height, width = image.shape[:2]
    boxes = []
    for scale in scales:
        side = min(round(scale * min(height, width)), height, width)
        if side < min_side:
            continue
        for y in positions(height, side, overlap):
            for x in positions(width, side, overlap):
                boxes.append((x, y, x + side, y + side))
    return boxes_only(np.array(boxes, dtype=np.float32).reshape(-1, 4), "grid")
