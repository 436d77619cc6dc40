"""Rows to images: an image scores as its best row (max), so whole-image retrieval (one row per
image) and region-level retrieval (many) are the same search. Every search returns its top
images this way (`ImageHits`): the exact one block by block (`best_per_image`), an
approximate one from a shortlist of rows (`group_by_image`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

AGGREGATIONS = ("max",)


@dataclass
class ImageHits:
    """Per query, best first: gallery image, its score, and the row that gave it."""

    scores: np.ndarray
    images: np.ndarray
    rows: np.ndarray
    """-1 where `images` is padding."""


def widest_image(row_image: np.ndarray) -> int:
    """Rows of the image with the most (0 without rows; 1: one row per image), in one linear
    pass rather than a sort of every row."""
    row_image = np.asarray(row_image)
    return int(np.bincount(row_image).max()) if len(row_image) else 0


def best_per_image(
    scores: torch.Tensor, owner: torch.Tensor, n_images: int, first_row: int | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(queries, rows) similarities of a block of rows whose images are `owner` -> per query and
    image, the best row's score (-inf for an image without rows in the block) and, unless
    `first_row` is None, that row's index (counted from `first_row`; the lower on a tie)."""
    owner = owner.expand(len(scores), -1)
    best = torch.full((len(scores), n_images), -torch.inf, device=scores.device).scatter_reduce_(1, owner, scores, "amax")
    if first_row is None:
        return best, None
    ids = torch.arange(first_row, first_row + scores.shape[1], device=scores.device).expand(len(scores), -1)
    first = torch.where(scores == best.gather(1, owner), ids, torch.iinfo(torch.int64).max)
    rows = torch.full(best.shape, torch.iinfo(torch.int64).max, dtype=torch.int64, device=scores.device)
    return best, rows.scatter_reduce_(1, owner, first, "amin")


def group_by_image(scores: np.ndarray, ids: np.ndarray, row_image: np.ndarray, k: int) -> ImageHits:
    """Per query, (row score, row id) best first -> each image once, at its best row."""
    out = (np.full((len(ids), k), -np.inf, np.float32), np.full((len(ids), k), -1), np.full((len(ids), k), -1))
    for row, (row_scores, row_ids) in enumerate(zip(scores, ids)):
        found = row_ids >= 0
        images = row_image[row_ids[found]]
        _, first = np.unique(images, return_index=True)
        first = np.sort(first)[:k]
        out[0][row, : len(first)] = row_scores[found][first]
        out[1][row, : len(first)] = images[first]
        out[2][row, : len(first)] = row_ids[found][first]
    return ImageHits(*out)
