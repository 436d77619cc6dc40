"""Query modes: which pixels of a query image describe the object asked for.

Each image mode is a function `(image, instance) -> image` registered by name; gallery images
are always embedded whole (`full`). A mode that cannot apply (an empty mask, a box entirely
outside the image) raises `QueryError`, which extraction counts and skips.

A query may also say what it asks for in words, alone or with an image part:

    spec.py    a `query` config node read into its parts: an image mode, words, or both
    files.py   query files, which bring the words of their queries and those queries' truth
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np

from retrieval.config.rules import Rule
from retrieval.records import Box, Instance
from retrieval.registry import Registry

log = logging.getLogger(__name__)


class QueryError(Exception):
    """A query whose object cannot be cut out as asked."""


QueryFn = Callable[..., np.ndarray]
"""(image HxWx3 uint8, the query's instance or None, **options) -> the pixels to embed."""

FILLS = ("mean", "blur")
"""query.fill of the mask mode, besides a constant 0..255."""
Margin = Annotated[float, Rule(above=-0.5)]
"""query.margin: the box grown (or, negative, shrunk) by this fraction of its size on each side."""

MODES: Registry[QueryFn] = Registry("query mode", __name__)
register = MODES.register


def reads(*annotations: str, requires: bool = False) -> Callable[[QueryFn], QueryFn]:
    """Declare which of the instance's annotations ("box", "mask") a mode cuts out with, and
    whether it cannot work without them; see `returns_whole_image`."""

    def mark(mode: QueryFn) -> QueryFn:
        mode.reads, mode.requires = annotations, requires  # type: ignore[attr-defined]
        return mode

    return mark


def returns_whole_image(mode: QueryFn, instance: Instance | None) -> bool:
    """Whether `mode` gives the image unchanged for this instance (it reads no annotation the
    instance has), so the query's vector is the gallery's vector of the same image."""
    if getattr(mode, "requires", True):
        return False
    present = {"box": instance is not None and instance.box is not None,
               "mask": instance is not None and instance.mask is not None}
    return not any(present[name] for name in getattr(mode, "reads", ("box", "mask")))
available = MODES.available
get_query_mode = MODES.get


class UnreadableMaskError(QueryError):
    """The instance's mask cannot be decoded for this image (a mask file that is missing or not
    an image, or a mask of another size): `box` falls back as if there were no mask."""


def _checked_box(box: Box) -> tuple[float, float, float, float]:
    """The box as floats, or a QueryError that says what is wrong with it."""
    x1, y1, x2, y2 = (float(v) for v in box)
    shown = "(" + ", ".join(f"{v:g}" for v in (x1, y1, x2, y2)) + ")"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise QueryError(f"box {shown} has a non-finite coordinate")
    if x2 < x1 or y2 < y1:
        raise QueryError(f"box {shown} is inverted (x2 < x1 or y2 < y1); boxes are (x1, y1, x2, y2)")
    if x2 == x1 or y2 == y1:
        raise QueryError(f"box {shown} is empty (zero width or height)")
    return x1, y1, x2, y2


def _pixel_box(box: Box, shape: tuple[int, ...], margin: float = 0.0) -> tuple[int, int, int, int]:
    """Round like Pillow's `crop` (half to even), after growing by `margin` x box size; clip."""
    x1, y1, x2, y2 = _checked_box(box)
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    height, width = shape[:2]
    left, top = max(round(x1 - dx), 0), max(round(y1 - dy), 0)
    right, bottom = min(round(x2 + dx), width), min(round(y2 + dy), height)
    if right <= left or bottom <= top:
        raise QueryError(f"box {tuple(box)} lies outside the {width}x{height} image")
    return left, top, right, bottom


def _object_mask(image: np.ndarray, instance: Instance | None) -> np.ndarray:
    from retrieval.masks import decode

    if instance is None or instance.mask is None:
        raise QueryError("query mode 'mask' needs a mask; this query has none (use query=box)")
    try:
        mask = decode(instance.mask, image.shape[:2])
    except OSError as error:  # masks.MaskFileError, or a mask file gone since loading
        raise UnreadableMaskError(str(error)) from error
    except ValueError as error:  # a mask of another size than its image, or a corrupt RLE
        raise UnreadableMaskError(f"unusable mask: {error}") from error
    if not mask.any():
        raise QueryError("empty mask")
    return mask


def _box_of(image: np.ndarray, instance: Instance | None) -> Box | None:
    if instance is None:
        return None
    if instance.box is not None:
        return instance.box
    if instance.mask is not None:
        from retrieval.masks import tight_box

        try:
            return tight_box(_object_mask(image, instance))
        except UnreadableMaskError as error:
            log.warning("%s; the query uses the whole image, as without a mask", error)
    return None


@register("full")
@reads()
def full_image(image: np.ndarray, instance: Instance | None, **_: Any) -> np.ndarray:
    """The whole image, as the gallery is embedded."""
    return image


@register("box")
@reads("box", "mask")
def box_crop(image: np.ndarray, instance: Instance | None, margin: Margin = 0.0, **_: Any) -> np.ndarray:
    """Crop to the object's box grown by `margin` x its size (whole image if it has no box)."""
    box = _box_of(image, instance)
    if box is None:
        return image
    left, top, right, bottom = _pixel_box(box, image.shape, margin)
    return image[top:bottom, left:right]


@register("mask")
@reads("mask", "box", requires=True)
def masked_crop(
    image: np.ndarray,
    instance: Instance | None,
    margin: Margin = 0.0,
    fill: Annotated[str | float, Rule(choices=lambda: FILLS, low=0, high=255)] = "mean",
    blur_sigma: Annotated[float, Rule(above=0)] = 8.0,
    **_: Any,
) -> np.ndarray:
    """Crop to the box and replace the background: a constant, the image mean, or a blur."""
    mask = _object_mask(image, instance)
    if fill == "mean":
        background = np.broadcast_to(image.reshape(-1, 3).mean(0).round().astype(np.uint8), image.shape)
    elif fill == "blur":
        import cv2

        background = cv2.GaussianBlur(image, (0, 0), sigmaX=blur_sigma)
    else:
        background = np.full_like(image, int(fill))
    filled = np.where(mask[..., None], image, background)
    left, top, right, bottom = _pixel_box(_box_of(image, instance), image.shape, margin)
    return filled[top:bottom, left:right]


@register("square")
@reads("box", "mask")
def square_crop(image: np.ndarray, instance: Instance | None, **_: Any) -> np.ndarray:
    """Find-your-Needle reference: square of side max(w, h) centred on the box, zero padding."""
    box = _box_of(image, instance)
    if box is None:
        return image
    x1, y1, x2, y2 = _checked_box(box)
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    # floor, not int(): truncation toward zero would shrink the square where it leaves the image
    left, top = math.floor(cx - side / 2), math.floor(cy - side / 2)
    right, bottom = math.floor(cx + side / 2), math.floor(cy + side / 2)
    height, width = image.shape[:2]
    canvas = np.zeros((bottom - top, right - left, 3), dtype=image.dtype)
    sx1, sy1, sx2, sy2 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if sx2 <= sx1 or sy2 <= sy1:
        raise QueryError(f"box {tuple(box)} lies outside the {width}x{height} image")
    canvas[sy1 - top : sy2 - top, sx1 - left : sx2 - left] = image[sy1:sy2, sx1:sx2]
    return canvas
