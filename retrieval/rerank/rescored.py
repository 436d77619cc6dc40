"""A ranking rewritten row by row by a step that re-scores some of each query's entries (verify,
refine): the re-scored entries first, by their new score, each with the box and mask the step
found; every other entry after them, in its previous order, with its previous score, box and
mask (its score is not comparable with the new ones)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from retrieval.ranking import Ranking


@dataclass(frozen=True)
class Rescored:
    """An entry's new score, and where the step found the object in its image."""

    score: float
    box: np.ndarray | None = None
    """None: the step found no box (the entry keeps its own, and its mask)."""
    mask: dict | None = None
    """COCO RLE over the image; None with a box: the box stands in for the mask."""


class Reordered:
    """The ranking being rewritten, row by row."""

    def __init__(self, ranking: Ranking):
        self.source = ranking
        self.indices, self.scores = ranking.indices.copy(), ranking.scores.copy()
        self.boxes = (np.full((*ranking.indices.shape, 4), np.nan, dtype=np.float32) if ranking.boxes is None
                      else ranking.boxes.copy())
        self.mask_ids = (np.full(ranking.indices.shape, -1, dtype=np.int64) if ranking.mask_ids is None
                         else ranking.mask_ids.copy())
        self.masks = list(ranking.mask_table)

    def promote(self, q: int, rescored: dict[int, Rescored]) -> None:
        """Move row q's re-scored positions to the front, by new score then previous position."""
        first = sorted(rescored, key=lambda p: (-rescored[p].score, p))
        order = np.array([*first, *(p for p in range(self.indices.shape[1]) if p not in rescored)], dtype=np.int64)
        for array in (self.indices, self.scores, self.boxes, self.mask_ids):
            array[q] = array[q][order]
        for position, p in enumerate(first):
            found = rescored[p]
            self.scores[q, position] = found.score
            if found.box is not None:
                self.boxes[q, position] = found.box
                self.mask_ids[q, position] = -1
                if found.mask is not None:
                    self.masks.append(found.mask)
                    self.mask_ids[q, position] = len(self.masks) - 1

    def ranking(self) -> Ranking:
        """The rewritten ranking; its mask table holds only the masks it refers to."""
        used = np.unique(self.mask_ids[self.mask_ids >= 0])
        renumber = np.full(len(self.masks) + 1, -1, dtype=np.int64)  # id -1 reads the spare last slot: -1
        renumber[used] = np.arange(len(used))
        return dataclasses.replace(
            self.source, indices=self.indices, scores=self.scores, boxes=self.boxes,
            mask_ids=renumber[self.mask_ids], mask_table=[self.masks[i] for i in used.tolist()],
        )
