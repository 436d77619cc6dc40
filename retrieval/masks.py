"""Binary masks in every encoding our datasets use, decoded to one form: a bool HxW array.

Annotation files mix COCO RLE (compressed or not), COCO polygons, mask PNGs, dense arrays and
the VoxDet builder's own row-major run lengths. Everything downstream (query modes, mask IoU)
only ever sees `decode(ref)`; storage uses `encode(mask)`, a compressed COCO RLE whose counts
are a `str` so that records stay small and JSON-able.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as coco_mask

from retrieval.images import ImageError, open_image

SizeHW = tuple[int, int]


class MaskFileError(OSError):
    """A mask file that exists but cannot be read as an image (not an image, not a regular
    file, corrupt); query modes treat it as an absent mask, or skip the query that needs it."""


def decode(ref: Any, size_hw: SizeHW | None = None) -> np.ndarray:
    """Decode any supported mask reference to a bool HxW array.

    Accepted: a COCO RLE dict (`counts` as str/bytes, or an int list read column-major); the
    VoxDet builder's RLE dict (int-list `counts` with a `transpose` key: False = row-major);
    a list of COCO polygons (flat `[x1, y1, x2, y2, ...]` lists; needs `size_hw`); a path to
    an image file (non-zero in any channel = object); a 2-D numpy array or torch tensor
    (non-zero = object). `size_hw`, when given, must agree with the mask's own size.
    """
    if isinstance(ref, dict):
        mask = _decode_dict(ref)
    elif isinstance(ref, (str, Path)):
        mask = _decode_image(Path(ref))
    elif isinstance(ref, list):
        if size_hw is None:
            raise ValueError("decoding COCO polygons needs size_hw=(height, width)")
        return _decode_polygons(ref, size_hw)
    elif isinstance(ref, np.ndarray) or _is_tensor(ref):
        mask = _decode_array(ref)
    else:
        raise TypeError(
            f"unsupported mask type {type(ref).__name__}: expected a COCO RLE dict, a list of "
            "COCO polygons, a path to a mask image, or a 2-D numpy array / torch tensor"
        )
    if size_hw is not None and tuple(mask.shape) != tuple(size_hw):
        raise ValueError(
            f"mask is {mask.shape[0]}x{mask.shape[1]}, expected {size_hw[0]}x{size_hw[1]}"
        )
    return mask


def encode(mask: Any, size_hw: SizeHW | None = None) -> dict[str, Any]:
    """Compressed COCO RLE `{"size": [h, w], "counts": str}` of any mask `decode` accepts."""
    dense = decode(mask, size_hw)
    rle = coco_mask.encode(np.asfortranarray(dense, dtype=np.uint8))
    height, width = (int(v) for v in rle["size"])
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) of the object pixels, right/bottom exclusive; None for an empty mask."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(mask, axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def decode_runs(
    counts: Sequence[int], size_hw: SizeHW, column_major: bool, first_value: bool = False
) -> np.ndarray:
    """Expand alternating run lengths to a bool HxW mask.

    `first_value` is the value of the first run: COCO and a correct VoxDet RLE start with a
    run of zeros, but the VoxDet builder starts with a run of ones when pixel (0, 0) is object,
    so its files need both readings (see `retrieval.datasets.anns`).
    """
    height, width = int(size_hw[0]), int(size_hw[1])
    runs = np.asarray([int(count) for count in counts], dtype=np.int64)
    if runs.size and runs.min() < 0:
        raise ValueError("RLE counts must not be negative")
    if int(runs.sum()) != height * width:
        raise ValueError(
            f"RLE counts sum to {int(runs.sum())}, expected {height}x{width}={height * width}"
        )
    values = (np.arange(runs.size) % 2 == 1) != first_value
    flat = np.repeat(values, runs)
    if column_major:
        return flat.reshape(width, height).T.copy()
    return flat.reshape(height, width)


def _decode_dict(rle: dict) -> np.ndarray:
    if "counts" not in rle or "size" not in rle:
        raise ValueError(f"an RLE dict needs 'counts' and 'size', got keys {sorted(rle)}")
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    if isinstance(counts, bytes):
        return _coco_decode({"size": [height, width], "counts": counts})
    # An int list: the builder's dict says its order; without `transpose` it is COCO's
    # column-major order, as the reference decoder reads it.
    column_major = bool(rle.get("transpose", True))
    return decode_runs(counts, (height, width), column_major=column_major)


def _coco_decode(rle: dict) -> np.ndarray:
    # pycocotools (2.0.11 and older) trips numpy 2's copy-keyword deprecation on every call;
    # silence exactly that so real warnings stay visible.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "__array__ implementation doesn't accept a copy", DeprecationWarning
        )
        return coco_mask.decode(rle).astype(bool)


def _decode_polygons(polygons: list, size_hw: SizeHW) -> np.ndarray:
    height, width = int(size_hw[0]), int(size_hw[1])
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    if not all(
        isinstance(p, (list, tuple, np.ndarray)) and len(p) >= 6 and len(p) % 2 == 0
        for p in polygons
    ):
        raise ValueError(
            "COCO polygons must be a list of flat [x1, y1, x2, y2, ...] lists (>= 3 points)"
        )
    rles = coco_mask.frPyObjects([[float(v) for v in p] for p in polygons], height, width)
    return _coco_decode(coco_mask.merge(rles))


def _decode_image(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"mask image not found: {path}")
    try:
        with open_image(path) as (image, _):
            pixels = np.asarray(image)
    except ImageError as error:
        raise MaskFileError(f"unreadable mask: {error}") from error
    except Exception as error:  # any decoding failure of one mask file is that mask's problem
        raise MaskFileError(f"unreadable mask {path}: {type(error).__name__}: {error}") from error
    if pixels.ndim == 3:
        return np.any(pixels != 0, axis=2)
    return pixels != 0


def _is_tensor(ref: Any) -> bool:
    return type(ref).__module__.split(".")[0] == "torch" and hasattr(ref, "detach")


def _decode_array(array: Any) -> np.ndarray:
    if _is_tensor(array):
        array = array.detach().cpu().numpy()
    if array.ndim != 2:
        raise ValueError(f"a dense mask must be 2-D (HxW), got shape {tuple(array.shape)}")
    if array.dtype == object:
        raise TypeError("a dense mask must be a numeric or bool array, not dtype=object")
    return array != 0
