"""The ranking artifact: what `search` writes and `evaluate` reads, and nothing else.

File format (`ranking.npz`, readable with plain numpy):

| array         | shape / dtype         | meaning                                                   |
|---------------|-----------------------|-----------------------------------------------------------|
| `indices`     | (n_query, k) int64    | gallery indices, best first; -1 pads a short row          |
| `scores`      | (n_query, k) float32  | similarity of each entry (higher is better); -inf pads    |
| `query_ids`   | (n_query,) str        | query keys (image path relative to the dataset root)      |
| `gallery_ids` | (n_gallery,) str      | gallery keys, in the order `indices` refers to            |
| `boxes`       | (n_query, k, 4) f32   | optional: where in each returned image the object is      |
| `mask_ids`    | (n_query, k) int64    | optional: row of `mask_table` with each returned mask, -1 |
|               |                       | where the entry has none (its box stands in)              |
| `mask_table`  | () str                | JSON list of COCO RLE dicts, each distinct mask once      |
| `provenance`  | () str                | JSON list of the steps that produced the ranking          |

Masks are stored once each and referenced by id: one region is returned to many queries, and
an RLE is far longer than a box, so a per-entry copy would grow the file by the ranking depth.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.artifacts import atomic_path, rebuild_hint
from retrieval.errors import brief, unreadable

GIVEN = "give eval.ranking the ranking.npz that search or evaluate wrote"
"""What to do about an unreadable ranking given as eval.ranking."""
ZIP_MAGIC = b"PK\x03\x04"
"""How every .npz file (a zip archive) begins."""


def _head(path: Path, size: int = 16) -> bytes:
    """The first bytes of a file, to say what it is when it is not a ranking."""
    with open(path, "rb") as handle:
        return handle.read(size)
RANKING_FILE = "ranking.npz"
"""A ranking's name in its artifact folder (a search's, a re-rank step's) and in a run folder."""


@dataclass
class Ranking:
    indices: np.ndarray
    scores: np.ndarray
    query_ids: np.ndarray
    gallery_ids: np.ndarray
    boxes: np.ndarray | None = None
    mask_ids: np.ndarray | None = None
    mask_table: list[dict] = field(default_factory=list)
    provenance: list[dict] = field(default_factory=list)

    @property
    def k(self) -> int:
        return self.indices.shape[1]

    def mask(self, query: int, rank: int) -> dict | None:
        """COCO RLE of the mask returned at (query, rank), or None when there is none."""
        if self.mask_ids is None or self.mask_ids[query, rank] < 0:
            return None
        return self.mask_table[self.mask_ids[query, rank]]

    def save(self, path: Path) -> Path:
        arrays = dict(
            indices=self.indices.astype(np.int64),
            scores=self.scores.astype(np.float32),
            query_ids=np.asarray(self.query_ids, dtype=str),
            gallery_ids=np.asarray(self.gallery_ids, dtype=str),
            provenance=np.array(json.dumps(self.provenance)),
        )
        if self.boxes is not None:
            arrays["boxes"] = self.boxes.astype(np.float32)
        if self.mask_ids is not None:
            arrays["mask_ids"] = self.mask_ids.astype(np.int64)
            arrays["mask_table"] = np.array(json.dumps(self.mask_table))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: Path, remedy: str | None = None) -> "Ranking":
        """The ranking in `path`; an UnreadableFile naming the file, ending with `remedy` (by
        default how to rebuild a ranking in the cache), if it is not a ranking this module
        wrote (another kind of file, cut short, arrays missing, shapes that disagree, indices
        outside the gallery)."""
        remedy = remedy or rebuild_hint(path)
        what = "ranking file"
        head = _head(path)
        if not head.startswith(ZIP_MAGIC):
            reason = "it is empty (0 bytes)" if not head else f"not a .npz archive (it starts with {head!r})"
            raise unreadable(path, what, reason, remedy)
        try:
            with np.load(path, allow_pickle=False) as data:
                ranking = cls(
                    indices=data["indices"],
                    scores=data["scores"],
                    query_ids=data["query_ids"],
                    gallery_ids=data["gallery_ids"],
                    boxes=data["boxes"] if "boxes" in data else None,
                    mask_ids=data["mask_ids"] if "mask_ids" in data else None,
                    mask_table=json.loads(str(data["mask_table"])) if "mask_table" in data else [],
                    provenance=json.loads(str(data["provenance"])),
                )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise unreadable(path, what, f"a damaged or foreign .npz archive ({brief(error)})", remedy) from error
        problem = ranking._problem()
        if problem:
            raise unreadable(path, what, problem, remedy)
        return ranking

    def _problem(self) -> str | None:
        """What makes these arrays inconsistent with the file format above, if anything."""
        n_query, n_gallery = len(self.query_ids), len(self.gallery_ids)
        if self.indices.ndim != 2 or self.indices.dtype.kind not in "iu":
            return f"indices must be an integer (n_query, k) array, got {self.indices.dtype} {self.indices.shape}"
        if self.indices.shape[0] != n_query:
            return f"indices has {self.indices.shape[0]} rows for {n_query} query ids"
        if self.scores.shape != self.indices.shape:
            return f"scores {self.scores.shape} and indices {self.indices.shape} differ in shape"
        if self.indices.size and (self.indices.min() < -1 or self.indices.max() >= n_gallery):
            return (
                f"indices run from {self.indices.min()} to {self.indices.max()}; valid are -1 "
                f"(padding) to {n_gallery - 1} ({n_gallery} gallery ids)"
            )
        if self.boxes is not None and self.boxes.shape != (*self.indices.shape, 4):
            return f"boxes {self.boxes.shape} do not match indices {self.indices.shape}"
        if self.mask_ids is not None:
            if self.mask_ids.shape != self.indices.shape or self.mask_ids.dtype.kind not in "iu":
                return f"mask_ids {self.mask_ids.dtype} {self.mask_ids.shape} do not match indices {self.indices.shape}"
            if self.mask_ids.size and (self.mask_ids.min() < -1 or self.mask_ids.max() >= len(self.mask_table)):
                return f"mask_ids refer outside the mask table of {len(self.mask_table)} masks"
        return None
