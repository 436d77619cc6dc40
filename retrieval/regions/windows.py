"""Windows around a region, for a local search: the region shifted, scaled and reshaped, every
window in whole pixels inside its image, never empty and never thinner than a minimum side
(a window of a few pixels, enlarged to a model's input, shows nothing but blur)."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Window = tuple[int, int, int, int]
"""(x1, y1, x2, y2) whole pixels, right/bottom exclusive."""


def fit_window(box: Sequence[float] | np.ndarray | None, size: tuple[int, int], min_side: int) -> Window:
    """The box clipped to the image of `size` (width, height), then grown about its centre to
    at least `min_side` on each side (the image's side when that is shorter) and moved back
    inside: a window at the border stays at the border. No box, or one that is not finite: the
    whole image."""
    width, height = size
    values = np.asarray(box if box is not None else (np.nan,) * 4, dtype=np.float64)
    if not np.isfinite(values).all():
        return 0, 0, width, height
    x1, x2 = _fit_side(values[0], values[2], width, min_side)
    y1, y2 = _fit_side(values[1], values[3], height, min_side)
    return x1, y1, x2, y2


def _fit_side(low: float, high: float, length: int, min_side: int) -> tuple[int, int]:
    low, high = min(max(low, 0.0), length), min(max(high, 0.0), length)
    low, high = math.floor(min(low, high)), math.ceil(max(low, high))
    side = min(max(min_side, 1), length)
    if high - low >= side:
        return low, high
    start = min(max(round((low + high - side) / 2), 0), length - side)
    return start, start + side


def is_small(box: Sequence[float] | np.ndarray, min_side: int) -> bool:
    """Whether a finite box is thinner than `min_side` on a side (and will be grown)."""
    values = np.asarray(box, dtype=np.float64)
    return bool(np.isfinite(values).all() and min(values[2] - values[0], values[3] - values[1]) < min_side)


def neighbours(window: Window, step: float, shift: float, scales: Sequence[float], aspects: Sequence[float]) -> list[np.ndarray]:
    """The windows one move away, at `step` (1 the first round, smaller later): shifted by
    `shift` x step of its side left, right, up and down; scaled by each of `scales` to the
    power step about its centre; and reshaped by each of `aspects` to the power step (width
    times its square root, height divided by it: the area kept). Float boxes: `fit_window`
    puts each in its image."""
    x1, y1, x2, y2 = (float(v) for v in window)
    cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1

    def centred(x: float, y: float, width: float, height: float) -> np.ndarray:
        return np.array([x - width / 2, y - height / 2, x + width / 2, y + height / 2])

    out = [centred(cx + dx * shift * step * w, cy + dy * shift * step * h, w, h)
           for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    out += [centred(cx, cy, w * factor**step, h * factor**step) for factor in scales]
    out += [centred(cx, cy, w * math.sqrt(factor**step), h / math.sqrt(factor**step)) for factor in aspects]
    return out
