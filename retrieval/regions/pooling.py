"""Region vectors, two ways.

`roi`: a few backbone passes over the scene (aspect kept, long sides `input_sizes`: an image
pyramid), then every region is ROI-aligned out of the feature map of the pass in which it
looks closest to the size the model embeds queries at (torchvision `roi_align`), and pooled
with the model's own `pool`; segments weight the aligned cells by their mask, so the
background inside their box is left out. Hundreds of regions cost a few forward passes, and
a small object is still seen at the scale the backbone was trained on.

`crop`: each region is cut out (segments: background filled with the image mean, as the
`mask` query mode does), resized like a query and embedded on its own. One pass per region:
far slower, but it works for models without a dense feature map (CLIP towers) and embeds
regions exactly as queries are embedded.

The CPU half of each (resizing, mask weights, crops) runs in DataLoader workers; the device
half takes tensors.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.ops import roi_align

from retrieval.models.transform import prepare
from retrieval.models.base import Embedder, Preprocess
from retrieval.regions.proposals import Regions

POOLINGS = ("roi", "crop")


def scene_pixels(image: np.ndarray, long_side: int) -> np.ndarray:
    """The scene for the backbone pass: aspect kept, longer side `long_side` (bicubic)."""
    height, width = image.shape[:2]
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def pyramid_levels(boxes: np.ndarray, size_hw: tuple[int, int], input_sizes: tuple[int, ...], target: int) -> np.ndarray:
    """Per region, the pass (index into `input_sizes`, the scene's longer side in each pass)
    in which the region's longer side is closest to `target` pixels, on a log scale."""
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clip(min=1)
    scales = np.asarray(input_sizes, dtype=np.float64) / max(size_hw)
    return np.abs(np.log(sides[:, None] * scales[None] / target)).argmin(axis=1)


def roi_weights(regions: Regions, roi_size: int) -> np.ndarray:
    """(n, roi_size, roi_size) float32: the fraction of each ROI bin inside the region's mask
    (1 everywhere for box regions), matching the bins `roi_align` samples."""
    weights = np.ones((len(regions), roi_size, roi_size), dtype=np.float32)
    for index, mask in enumerate(regions.masks):
        if mask is not None:
            weights[index] = cv2.resize(mask.astype(np.float32), (roi_size, roi_size), interpolation=cv2.INTER_AREA)
    return weights


def crop_pixels(image: np.ndarray, regions: Regions, preprocess: Preprocess) -> np.ndarray:
    """(n, 3, s, s) uint8: each region cut out and resized as the model expects."""
    fill = image.reshape(-1, 3).mean(0).round().astype(np.uint8)
    crops = []
    for box, mask in zip(regions.boxes.astype(np.int64), regions.masks):
        x1, y1, x2, y2 = box
        crop = image[y1:y2, x1:x2]
        if mask is not None:
            crop = np.where(mask[..., None], crop, fill)
        crops.append(prepare(np.ascontiguousarray(crop), preprocess).transpose(2, 0, 1))
    return np.stack(crops)


def roi_vectors(
    model: Embedder,
    features: torch.Tensor,
    boxes: torch.Tensor,
    scale_xy: tuple[float, float],
    weights: torch.Tensor,
    chunk: int = 256,
) -> torch.Tensor:
    """Pool regions out of one image's feature map (1, C, h, w).

    `boxes` (n, 4) are in original-image pixels and `scale_xy` maps them to feature-map
    cells (per axis, since the map's aspect is rounded). Returns (n, D), not normalised."""
    roi_size = weights.shape[-1]
    scale = torch.tensor([*scale_xy, *scale_xy], dtype=torch.float32, device=features.device)
    features = features.float()
    out = []
    for start in range(0, len(boxes), chunk):
        cells = boxes[start : start + chunk].to(features.device, torch.float32) * scale
        aligned = roi_align(features, [cells], output_size=roi_size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
        aligned = aligned * weights[start : start + chunk, None].to(features.device)
        out.append(model.pool(aligned).float())
    return torch.cat(out) if out else features.new_zeros((0, model.dim))
