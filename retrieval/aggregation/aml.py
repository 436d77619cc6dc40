"""Approximate max-pooling localisation (AML; Tolias, Sicre and Jégou, ICLR 2016; gtolias/rmac
`aml.c` and its call in `test.m`): the window of a feature map whose max-pooled vector is most
similar to a query's.

The max over a window of a channel is approximated by the generalised sum (sum x^p)^(1/p)
(p = 10), which integral images of x^p give for any window in four look-ups. Windows of at
least 2 x 2 cells are searched on a grid of corners `step` cells apart (t = 3 in the paper),
optionally only those whose aspect ratio is within a factor `aspect_tolerance` (s = 1.1) of
the query's; the best one, by cosine similarity to the query, is then refined by moving one
side at a time by `refine_step` cells, then fewer, down to 1, keeping each move that raises
the similarity (at most `refine_iterations` rounds per step size). The whole map is also a
candidate (the reference starts from it but never scores it).

Activations are clamped at 0, as the reference's maps are ReLU outputs, and scaled by their
maximum before the power, which changes no similarity and keeps x^p in range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.aggregation.dense import cells_to_pixels, check_map

WINDOWS_PER_PASS = 1024
"""Windows scored at once: bounds the (windows x channels) float64 blocks."""


@dataclass(frozen=True)
class Localisation:
    """The window of a feature map most similar to a query."""

    cells: tuple[int, int, int, int]
    """(x1, y1, x2, y2) in feature-map cells, ends exclusive."""
    box: tuple[float, float, float, float]
    """The same window in image pixels (x1, y1, x2, y2)."""
    score: float
    """Cosine similarity of the query to the window's approximate max-pooled vector."""
    windows: int
    """Windows scored, in the search and the refinement."""


class _WindowScorer:
    """Cosine similarity of a query to windows' generalised sums, from integral images (kept
    as one row of channels per corner, so a window's four corners are four row look-ups)."""

    def __init__(self, query: torch.Tensor, feature_map: torch.Tensor, power: float):
        values = feature_map.double().clamp(min=0)
        values = values / values.max().clamp(min=torch.finfo(torch.float64).tiny)
        integral = F.pad(values.pow(power).cumsum(1).cumsum(2), (1, 0, 1, 0))
        self.stride = integral.shape[2]
        self.integral = integral.flatten(1).T.contiguous()
        self.query = F.normalize(query.double().to(feature_map.device), dim=0)
        self.power = power
        self.count = 0

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        """(n,) similarities of (n, 4) windows (x1, y1, x2, y2), cells, ends exclusive."""
        x1, y1, x2, y2 = windows.to(self.integral.device).T
        table, stride = self.integral, self.stride
        sums = table[y2 * stride + x2] - table[y1 * stride + x2] - table[y2 * stride + x1] + table[y1 * stride + x1]
        pooled = sums.clamp(min=0).pow(1 / self.power)
        self.count += len(windows)
        return (pooled @ self.query) / pooled.norm(dim=1).clamp(min=torch.finfo(torch.float64).tiny)


def _grid_windows(height: int, width: int, step: int) -> np.ndarray:
    """Windows of at least 2 x 2 cells whose sides start and end `step` cells apart (the
    reference's search grid), plus the whole map: (n, 4) x1, y1, x2, y2."""
    def spans(length: int) -> list[tuple[int, int]]:
        return [(start, end) for start in range(0, length - 1, step) for end in range(start + 2, length + 1, step)]

    windows = [(x1, y1, x2, y2) for y1, y2 in spans(height) for x1, x2 in spans(width)]
    return np.array([*windows, (0, 0, width, height)], dtype=np.int64)


def _refine(scorer: _WindowScorer, best: np.ndarray, score: float, height: int, width: int, step: int, iterations: int) -> tuple[np.ndarray, float]:
    """Greedy moves of one side at a time by `step`, then fewer cells, keeping windows at
    least 2 cells wide and inside the map (the reference's `box_refine`)."""
    limits = (width, height, width, height)
    for size in range(step, 0, -1):
        for _ in range(iterations):
            changed = False
            for side in (1, 3, 0, 2):  # top, bottom, left, right, as the reference orders them
                for move in (-size, size):
                    trial = best.copy()
                    trial[side] += move
                    low, high = (trial[side - 2], trial[side]) if side >= 2 else (trial[side], trial[side + 2])
                    if not (0 <= trial[side] <= limits[side] and high - low >= 2):
                        continue
                    trial_score = float(scorer(torch.from_numpy(trial[None]))[0])
                    if trial_score > score:
                        best, score, changed = trial, trial_score, True
            if not changed:
                break
    return best, score


def localise(
    query: torch.Tensor,
    feature_map: torch.Tensor,
    image_hw: tuple[int, int] | None = None,
    power: float = 10.0,
    step: int = 3,
    query_aspect: float | None = None,
    aspect_tolerance: float = 1.1,
    refine_step: int = 3,
    refine_iterations: int = 5,
) -> Localisation:
    """The window of a C x h x w `feature_map` most similar to a (C,) `query` (the query's
    MAC in the reference), in cells and in the pixels of an `image_hw` image (default: one
    pixel per cell). `query_aspect` (height / width of the query, None: any) limits the
    search, not the refinement, to windows of about that shape in pixels."""
    height, width = check_map(feature_map)
    if query.shape != feature_map.shape[:1]:
        raise ValueError(f"a query of shape {tuple(query.shape)} cannot be compared with a map of {feature_map.shape[0]} channels")
    if step < 1 or refine_step < 0 or aspect_tolerance < 1:
        raise ValueError("AML needs step >= 1, refine_step >= 0 and aspect_tolerance >= 1")
    image_hw = image_hw or (height, width)
    scorer = _WindowScorer(query, feature_map, power)
    windows = _grid_windows(height, width, step)
    if query_aspect is not None:
        cell_h, cell_w = image_hw[0] / height, image_hw[1] / width
        shape = (windows[:, 3] - windows[:, 1]) * cell_h / ((windows[:, 2] - windows[:, 0]) * cell_w)
        fits = np.abs(np.log(query_aspect / shape)) <= math.log(aspect_tolerance)
        fits[-1] = True  # the whole map stays a candidate
        windows = windows[fits]
    scores = torch.cat([scorer(torch.from_numpy(windows[start : start + WINDOWS_PER_PASS]))
                        for start in range(0, len(windows), WINDOWS_PER_PASS)])
    first = int(scores.argmax())
    best, score = _refine(scorer, windows[first].copy(), float(scores[first]), height, width, refine_step, refine_iterations)
    cells = tuple(int(value) for value in best)
    return Localisation(cells=cells, box=cells_to_pixels(cells, (height, width), image_hw), score=score, windows=scorer.count)
