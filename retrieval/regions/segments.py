"""Class-agnostic object proposals from a classical segmenter (selective-search-like).

Felzenszwalb superpixels are merged greedily, most similar neighbours first (colour and
texture histograms, small regions first, compact unions first: the four measures of
Uijlings et al., "Selective Search", IJCV 2013), and every region of that hierarchy is a
proposal. Objects that are a single colour blob and objects made of several parts both
appear at some level, with a mask that follows their outline.
"""
from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import cv2
import numpy as np
from scipy import ndimage

from retrieval.config.rules import Rule
from retrieval.localisation import box_iou
from retrieval.masks import tight_box
from retrieval.regions.proposals import Regions, register

COLOUR_BINS = 25
ORIENTATIONS = 8
MAGNITUDE_BINS = 4


@dataclass
class _Hierarchy:
    """Regions of one grouping run on the label map: initial superpixels, then each merge."""

    members: list[list[int]]
    boxes: np.ndarray
    """(n, 4) xyxy exclusive, in label-map pixels."""
    sizes: np.ndarray


def _histograms(labels: np.ndarray, n: int, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per superpixel: L1-normalised colour histogram (RGB) and gradient histogram
    (orientation x magnitude on grey), both as (n, bins)."""
    flat = labels.ravel()
    colour = []
    for channel in range(3):
        bins = (image[..., channel].ravel().astype(np.int64) * COLOUR_BINS) // 256
        colour.append(np.bincount(flat * COLOUR_BINS + bins, minlength=n * COLOUR_BINS).reshape(n, -1))
    colour = np.concatenate(colour, axis=1).astype(np.float64)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    angle = ((np.arctan2(gy, gx) + np.pi) / (2 * np.pi) * ORIENTATIONS).astype(np.int64) % ORIENTATIONS
    magnitude = np.minimum(np.log1p(np.hypot(gx, gy)) / np.log1p(1024.0) * MAGNITUDE_BINS, MAGNITUDE_BINS - 1)
    code = angle * MAGNITUDE_BINS + magnitude.astype(np.int64)
    bins = ORIENTATIONS * MAGNITUDE_BINS
    texture = np.bincount(flat * bins + code.ravel(), minlength=n * bins).reshape(n, -1).astype(np.float64)
    return (colour / colour.sum(1, keepdims=True).clip(min=1), texture / texture.sum(1, keepdims=True).clip(min=1))


def _adjacent_pairs(labels: np.ndarray) -> np.ndarray:
    """Distinct (a, b) label pairs, a < b, that touch horizontally or vertically."""
    pairs = [
        np.stack([labels[:, :-1].ravel(), labels[:, 1:].ravel()], 1),
        np.stack([labels[:-1].ravel(), labels[1:].ravel()], 1),
    ]
    pairs = np.concatenate(pairs)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return np.unique(np.sort(pairs, axis=1), axis=0)


def group(labels: np.ndarray, image: np.ndarray) -> _Hierarchy:
    """Merge adjacent superpixels most-similar first until one region is left."""
    n = int(labels.max()) + 1
    area = float(labels.size)
    colour, texture = _histograms(labels, n, image)
    sizes = np.bincount(labels.ravel(), minlength=n).astype(np.float64)
    boxes = np.zeros((n, 4))
    for index, found in enumerate(ndimage.find_objects(labels + 1)):
        rows, cols = found
        boxes[index] = (cols.start, rows.start, cols.stop, rows.stop)
    colour, texture = list(colour), list(texture)
    sizes, boxes = list(sizes), list(boxes)
    members: list[list[int]] = [[i] for i in range(n)]
    neighbours: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in _adjacent_pairs(labels).tolist():
        neighbours[a].add(b)
        neighbours[b].add(a)

    def similarity(a: int, b: int) -> float:
        union = np.concatenate([np.minimum(boxes[a][:2], boxes[b][:2]), np.maximum(boxes[a][2:], boxes[b][2:])])
        box_area = (union[2] - union[0]) * (union[3] - union[1])
        return (
            np.minimum(colour[a], colour[b]).sum()
            + np.minimum(texture[a], texture[b]).sum()
            + 1.0 - (sizes[a] + sizes[b]) / area
            + 1.0 - (box_area - sizes[a] - sizes[b]) / area
        )

    heap = [(-similarity(a, b), a, b) for a in neighbours for b in neighbours[a] if a < b]
    heapq.heapify(heap)
    alive = set(range(n))
    while heap:
        _, a, b = heapq.heappop(heap)
        if a not in alive or b not in alive:
            continue
        t = len(sizes)
        size = sizes[a] + sizes[b]
        colour.append((sizes[a] * colour[a] + sizes[b] * colour[b]) / size)
        texture.append((sizes[a] * texture[a] + sizes[b] * texture[b]) / size)
        boxes.append(np.concatenate([np.minimum(boxes[a][:2], boxes[b][:2]), np.maximum(boxes[a][2:], boxes[b][2:])]))
        sizes.append(size)
        members.append(members[a] + members[b])
        alive -= {a, b}
        neighbours[t] = (neighbours.pop(a) | neighbours.pop(b)) - {a, b}
        for other in neighbours[t]:
            neighbours[other] -= {a, b}
            neighbours[other].add(t)
            heapq.heappush(heap, (-similarity(t, other), t, other))
        alive.add(t)
    return _Hierarchy(members, np.asarray(boxes).reshape(-1, 4), np.asarray(sizes))


def _spread(order: np.ndarray, count: int) -> np.ndarray:
    """`count` entries of `order` evenly spaced along it (all of them when it is short)."""
    if len(order) <= count:
        return order
    return order[np.round(np.linspace(0, len(order) - 1, count)).astype(np.int64)]


@register("segments")
def segments(
    image: np.ndarray,
    max_side: Annotated[int, Rule(low=1)] = 384,
    scales: Annotated[Sequence[float], Rule(above=0)] = (100, 300),
    sigma: Annotated[float, Rule(low=0)] = 0.8,
    min_area: Annotated[float, Rule(low=0, high=1)] = 0.001,
    max_area: Annotated[float, Rule(above=0, high=1)] = 0.5,
    dedupe_iou: Annotated[float, Rule(above=0, high=1)] = 0.9,
    max_regions: Annotated[int, Rule(low=1)] = 150,
) -> Regions:
    """Selective-search-like segments: Felzenszwalb superpixels (one run per `scales` value)
    grouped hierarchically by colour, texture, size and fill; every level is a proposal.

    Segmentation runs on the image shrunk to `max_side` (speed), masks are scaled back.
    Kept: mask area >= `min_area` and box area <= `max_area` (fractions of the image); a
    box overlapping an earlier one by IoU > `dedupe_iou` is a duplicate. Past `max_regions`,
    proposals are taken evenly across sizes so small and large objects both stay covered.
    """
    from skimage.segmentation import felzenszwalb

    height, width = image.shape[:2]
    shrink = min(1.0, max_side / max(height, width))
    small = image if shrink == 1 else cv2.resize(
        image, (max(1, round(width * shrink)), max(1, round(height * shrink))), interpolation=cv2.INTER_AREA
    )
    label_maps, found = [], []
    for scale in scales:
        labels = felzenszwalb(small, scale=scale, sigma=sigma, min_size=int(scale)).astype(np.int32)
        hierarchy = group(labels, small)
        keep = (hierarchy.sizes >= min_area * labels.size) & (
            (hierarchy.boxes[:, 2] - hierarchy.boxes[:, 0]) * (hierarchy.boxes[:, 3] - hierarchy.boxes[:, 1])
            <= max_area * labels.size
        )
        label_maps.append(labels)
        found += [(len(label_maps) - 1, hierarchy.members[i], hierarchy.boxes[i]) for i in np.flatnonzero(keep)]
    if not found:
        return Regions(np.zeros((0, 4), np.float32), [], [])
    small_boxes = np.array([box for _, _, box in found])
    kept: list[int] = []
    for index in np.argsort((small_boxes[:, 2] - small_boxes[:, 0]) * (small_boxes[:, 3] - small_boxes[:, 1]), kind="stable"):
        if not kept or box_iou(small_boxes[index], small_boxes[kept]).max() <= dedupe_iou:
            kept.append(int(index))
    kept = _spread(np.asarray(kept), max_regions).tolist()
    full_maps = [
        lab if shrink == 1 else cv2.resize(lab, (width, height), interpolation=cv2.INTER_NEAREST) for lab in label_maps
    ]
    boxes, masks = [], []
    for index in kept:
        which, members, box = found[index]
        x1, y1 = (int(np.floor(v / shrink)) for v in box[:2])
        x2, y2 = min(int(np.ceil(box[2] / shrink)), width), min(int(np.ceil(box[3] / shrink)), height)
        crop = np.isin(full_maps[which][y1:y2, x1:x2], members)
        tight = tight_box(crop)
        if tight is None:
            continue
        left, top, right, bottom = tight
        boxes.append((x1 + left, y1 + top, x1 + right, y1 + bottom))
        masks.append(crop[top:bottom, left:right])
    return Regions(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), masks, ["segments"] * len(masks))
