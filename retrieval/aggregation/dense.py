"""From pixels to the local features the aggregators take, and back from cells to pixels.

A feature map of h x w cells covers the whole (resized) image, so cell (i, j) spans pixels
[i H/h, (i+1) H/h) x [j W/w, (j+1) W/w) of an H x W image: boxes and masks pass between the two
by that scale alone.
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.device import autocast
from retrieval.errors import UserError
from retrieval.models.base import Embedder
from retrieval.models.dense import dense_features
from retrieval.models.transform import normalise


def dense_maps(
    model: Embedder,
    pixels: torch.Tensor,
    layer: int | None = None,
    facet: str = "token",
    precision: str = "auto",
) -> torch.Tensor:
    """B x C x h x w float32 features of a B x 3 x H x W uint8 batch (on the model's device),
    normalised as the model expects; see `retrieval.models.dense` for `layer` and `facet`."""
    with torch.inference_mode(), autocast(pixels.device, precision):
        return dense_features(model, normalise(pixels, model.preprocess), layer, facet).float()


def check_map(feature_map: torch.Tensor) -> tuple[int, int]:
    """(h, w) of a C x h x w map; a UserError for an empty one (an input smaller than a patch)."""
    if feature_map.dim() != 3:
        raise ValueError(f"expected one C x h x w feature map, got shape {tuple(feature_map.shape)}")
    height, width = feature_map.shape[-2:]
    if height == 0 or width == 0:
        raise UserError(
            f"the feature map is empty ({height}x{width} cells): its image is smaller than one patch of the model; "
            "drop such images or embed them at a larger input size"
        )
    return height, width


def local_descriptors(feature_map: torch.Tensor) -> torch.Tensor:
    """(h*w, C) float32 L2-normalised descriptors of a C x h x w map, cells in row-major order
    (AnyLoc normalises every descriptor before clustering and encoding)."""
    check_map(feature_map)
    return F.normalize(feature_map.float().flatten(1).T, dim=1)


def sample_descriptors(maps: Iterable[torch.Tensor], per_map: int | None, seed: int) -> torch.Tensor:
    """(N, C) L2-normalised descriptors of the C x h x w `maps`: `per_map` cells of each drawn
    without replacement (all when None or fewer), the draw of the i-th map fixed by (seed, i)."""
    parts = []
    for index, feature_map in enumerate(maps):
        descriptors = local_descriptors(feature_map)
        if per_map is not None and per_map < len(descriptors):
            chosen = np.random.default_rng([seed, index]).choice(len(descriptors), per_map, replace=False)
            descriptors = descriptors[torch.from_numpy(np.sort(chosen)).to(descriptors.device)]
        parts.append(descriptors)
    if not parts:
        raise UserError("no feature maps to sample descriptors from")
    return torch.cat(parts)


def cells_to_pixels(cells: tuple[int, int, int, int], map_hw: tuple[int, int], image_hw: tuple[int, int]) -> tuple[float, float, float, float]:
    """An (x1, y1, x2, y2) box in cells (ends exclusive) as the same box in image pixels."""
    x1, y1, x2, y2 = cells
    sx, sy = image_hw[1] / map_hw[1], image_hw[0] / map_hw[0]
    return (x1 * sx, y1 * sy, x2 * sx, y2 * sy)


def pixel_cells(length: int, cells: int, device: torch.device | None = None) -> torch.Tensor:
    """For each of `length` pixels along a side, the index of the cell (of `cells`) it lies in."""
    return torch.div(torch.arange(length, device=device) * cells, length, rounding_mode="floor")
