"""Which pixels an extractor sees: a whole image or a crop of it (a query's cut-out, the region
around a gallery hit), resized so its longer side is `resize` pixels. Upscaling is allowed on
purpose: a small object cropped and enlarged keeps enough keypoints to be matched."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from retrieval.images import DEFAULT_MAX_PIXELS, ImageError, load_rgb
from retrieval.local_features import LocalFeatures
from retrieval.masks import decode
from retrieval.records import MaskRef

log = logging.getLogger(__name__)

MIN_SOURCE_SIDE = 16
"""Shortest side, in source pixels, of a region worth extracting from: below it an object has
no local structure left to match, however much it is enlarged."""


class FrameError(Exception):
    """A frame that cannot be extracted from: `reason` is "unreadable" or "too_small"."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    """One extraction input; `key` identifies its features in the cache."""

    key: str
    path: Path
    crop: tuple[int, int, int, int] | None = None
    """(x1, y1, x2, y2) pixels of the source image, or None for all of it (clipped to it)."""
    mask: MaskRef | None = field(default=None, compare=False, hash=False)
    """Only keypoints on this mask of the source image are kept (a query's mask cut-out)."""


class Prepared(NamedTuple):
    """A frame ready for its extractor, and what turns its keypoints into `LocalFeatures`."""

    pixels: np.ndarray
    """HxWx3 uint8, what the extractor sees."""
    to_image: np.ndarray
    """3x3 frame -> source pixel map."""
    image_size: tuple[int, int]
    """Source (width, height)."""
    mask: np.ndarray | None
    """Source-image mask: only keypoints on it are kept (None: all)."""

    def features(self, keypoints: np.ndarray, descriptors: np.ndarray) -> LocalFeatures:
        """The extractor's output for this frame, as `LocalFeatures`, off-mask keypoints dropped."""
        height, width = self.pixels.shape[:2]
        features = LocalFeatures(keypoints, descriptors, (width, height), self.to_image, self.image_size)
        return features if self.mask is None else _on_mask(features, self.mask)


def prepare(frame: Frame, resize: int, min_side: int, max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """The frame's pixels and their map to the source image; FrameError when the image cannot
    be read or the region is too small."""
    try:
        image = load_rgb(frame.path, max_pixels)
    except ImageError as error:
        raise FrameError("unreadable", str(error)) from error
    height, width = image.shape[:2]
    x1, y1, x2, y2 = frame.crop or (0, 0, width, height)
    x1, y1, x2, y2 = max(int(x1), 0), max(int(y1), 0), min(int(x2), width), min(int(y2), height)
    if min(x2 - x1, y2 - y1) < MIN_SOURCE_SIDE:
        raise FrameError("too_small", f"{frame.path}: region {x2 - x1}x{y2 - y1} px, under {MIN_SOURCE_SIDE} px")
    scale = resize / max(x2 - x1, y2 - y1)
    size = (max(round((x2 - x1) * scale), 1), max(round((y2 - y1) * scale), 1))
    if min(size) < min_side:
        raise FrameError("too_small", f"{frame.path}: frame {size[0]}x{size[1]} px, under the extractor's {min_side} px")
    pixels = cv2.resize(image[y1:y2, x1:x2], size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    return Prepared(pixels, frame_to_image(size, (x1, y1, x2, y2)), (width, height),
                    source_mask(frame.mask, (height, width), frame.path))


def source_mask(ref: MaskRef | None, size_hw: tuple[int, int], path: Path) -> np.ndarray | None:
    """The query mask in source pixels, or None when there is none or it cannot be decoded for
    this image: then the box cut-out stands in, both for which keypoints are kept and for the
    outline projected into the gallery (one policy, so the two always agree)."""
    if ref is None:
        return None
    try:
        return decode(ref, size_hw)
    except (OSError, ValueError) as error:
        log.warning("%s: unusable mask (%s); the box cut-out stands in for it", path, error)
        return None


def _on_mask(features: LocalFeatures, mask: np.ndarray) -> LocalFeatures:
    """The features whose keypoint lies on `mask` (source-image pixels)."""
    points = np.round(features.image_points()).astype(np.int64)
    height, width = mask.shape
    inside = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    keep = np.zeros(len(points), dtype=bool)
    keep[inside] = mask[points[inside, 1], points[inside, 0]]
    return features.subset(keep)


def grown_box(box: np.ndarray | tuple | None, context: float) -> tuple[int, int, int, int] | None:
    """The box grown by `context` x its size on each side, in whole pixels (None: no box)."""
    if box is None or not np.isfinite(np.asarray(box, dtype=np.float64)).all():
        return None
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = context * (x2 - x1), context * (y2 - y1)
    return math.floor(x1 - dx), math.floor(y1 - dy), math.ceil(x2 + dx), math.ceil(y2 + dy)


def frame_to_image(size: tuple[int, int], crop: tuple[int, int, int, int]) -> np.ndarray:
    """The 3x3 map from frame pixels to source pixels of a crop resized to `size` (w, h), in
    OpenCV's pixel-centre convention (source = (frame + 0.5) / scale - 0.5 + offset)."""
    x1, y1, x2, y2 = crop
    sx, sy = size[0] / (x2 - x1), size[1] / (y2 - y1)
    return np.array([[1 / sx, 0, x1 + 0.5 / sx - 0.5], [0, 1 / sy, y1 + 0.5 / sy - 0.5], [0, 0, 1]], dtype=np.float64)
