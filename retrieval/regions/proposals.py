"""Region proposers, resolved by name, and the one form they all return.

A proposer is a function `(image HxWx3 uint8, **options) -> Regions` registered with
`@register("name")`; its docstring's first line describes it in error messages. `propose`
runs the configured proposers on one image and always puts the whole image first, so region
retrieval never loses the global view.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.registry import Registry

IMAGE_SOURCE = "image"
"""Source name of the whole-image region (always region 0 of an image)."""


@dataclass
class Regions:
    """Regions of one image, in pixels of the original image.

    `masks[i]` is the region's mask cropped to its box (bool, box height x width), or None
    when the region is the box itself (grid windows, the whole image)."""

    boxes: np.ndarray
    """(n, 4) float32 (x1, y1, x2, y2), integer-valued, right/bottom exclusive."""
    masks: list[np.ndarray | None]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def concat(parts: list["Regions"]) -> "Regions":
        return Regions(
            boxes=np.concatenate([p.boxes for p in parts]).astype(np.float32).reshape(-1, 4),
            masks=[m for p in parts for m in p.masks],
            sources=[s for p in parts for s in p.sources],
        )


Proposer = Callable[..., Regions]

PROPOSERS: Registry[Proposer] = Registry(
    "region proposer", "retrieval.regions", ("grid", "segments", "learned"), checked="regions.proposals.{name}"
)
"""A proposer's options are checked on every call against the rules annotated beside its parameters."""
register = PROPOSERS.register
available = PROPOSERS.available


def boxes_only(boxes: np.ndarray, source: str) -> Regions:
    """Regions that are their boxes (no mask)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return Regions(boxes=boxes, masks=[None] * len(boxes), sources=[source] * len(boxes))


def whole_image(image: np.ndarray) -> Regions:
    height, width = image.shape[:2]
    return boxes_only(np.array([[0, 0, width, height]]), IMAGE_SOURCE)


def propose(image: np.ndarray, proposers: Mapping[str, Mapping[str, Any] | None]) -> Regions:
    """The whole image, then each configured proposer's regions (name -> its options)."""
    parts = [whole_image(image)]
    for name, options in proposers.items():
        regions = PROPOSERS.get(name)(image, **(options or {}))
        regions.sources = [name] * len(regions)
        parts.append(regions)
    return Regions.concat(parts)


def full_mask(regions: Regions, index: int, size_hw: tuple[int, int]) -> np.ndarray:
    """Region `index` as a bool mask over the whole image (the box when it has no mask)."""
    canvas = np.zeros(size_hw, dtype=bool)
    x1, y1, x2, y2 = (int(v) for v in regions.boxes[index])
    mask = regions.masks[index]
    canvas[y1:y2, x1:x2] = True if mask is None else mask
    return canvas
