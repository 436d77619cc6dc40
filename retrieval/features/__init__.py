"""The one form every representation produces, and where it is kept.

Whatever describes an image (one whole-image vector, or hundreds of region vectors with
their boxes and masks) is a set of *rows*: a vector plus, per row, the image it belongs to
and optionally a box, a mask and the proposer that made it. Whole-image retrieval is the
one-row-per-image case of the same form, so search, re-ranking and localisation have one
code path.

    keys.py     what identifies an item (an image, or a query's cut-out of one)
    store.py    per-item shards on disk: built independently, found by item key, merged
    extract.py  the one batched, resumable extraction loop that fills a store
    mapped.py   a store's vectors read in place, block by block (galleries larger than memory)
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from retrieval.features.mapped import MappedRows


@dataclass
class Features:
    """Rows of vectors for a list of images, in listing order (rows of an image contiguous)."""

    keys: list[str]
    """Per image: the record key (path relative to the dataset root)."""
    vectors: np.ndarray | MappedRows
    """(n_rows, D) L2-normalised, float32 or float16; `MappedRows` (sliced like an array, read
    from the shards on demand) when the gallery is left on disk (`search.memory_budget`)."""
    row_image: np.ndarray
    """(n_rows,) int64: index into `keys` of each row's image."""
    valid: np.ndarray
    """(n_images,) bool: False = the image was skipped (its reason is in `errors`); it has no rows."""
    errors: dict[int, str] = field(default_factory=dict)
    boxes: np.ndarray | None = None
    """(n_rows, 4) float32 xyxy in original pixels, or None when rows are whole images."""
    masks: list[str] | None = None
    """Per row: COCO RLE as a JSON string, "" = the box is the mask; None when no row has one."""
    sources: np.ndarray | None = None
    """(n_rows,) int8 index into `source_names` (which proposer made the row)."""
    source_names: list[str] = field(default_factory=list)
    images_per_s: float | None = None
    """Extraction speed of the shards these rows came from (None: nothing was timed)."""

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    @property
    def localises(self) -> bool:
        """Whether rows say where in their image they are (region representations)."""
        return self.boxes is not None

    def per_image(self) -> np.ndarray:
        """(n_images, D) float32, one vector per image (zeros for skipped images); only for
        one-row-per-image features such as queries."""
        if len(np.unique(self.row_image)) != len(self.row_image):
            raise ValueError("per_image() needs one row per image; these features have several")
        out = np.zeros((len(self.keys), self.vectors.shape[1]), dtype=np.float32)
        out[self.row_image] = self.vectors
        return out

    def row_masks(self, rows: np.ndarray) -> list[dict | None]:
        """Decoded JSON of the masks of `rows` (None where the row has no mask)."""
        if self.masks is None:
            return [None] * len(rows)
        return [json.loads(self.masks[r]) if self.masks[r] else None for r in rows.tolist()]
