"""A model's eval transform, split as the pipeline runs it: `prepare` resizes and crops one
uint8 image on the CPU (DataLoader workers), `normalise` scales a uint8 batch on the device.

Together they reproduce timm's and open_clip's eval transforms pixel for pixel: the same
Pillow filters on the same uint8 image, torchvision's rounding of the resized shorter side
and of the crop offsets, then ToTensor's x / 255 and Normalize's (x - mean) / std.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from retrieval.models.base import Preprocess

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
    "lanczos": Image.Resampling.LANCZOS,
}


def prepare(image: np.ndarray, preprocess: Preprocess) -> np.ndarray:
    """HxWx3 uint8 image -> input_size x input_size x 3 uint8, resized and cropped (or padded)
    as the model's weights expect; normalisation is left to `normalise`, on the device."""
    size = preprocess.input_size
    method = FILTERS[preprocess.interpolation]
    pil = Image.fromarray(image)
    if preprocess.resize == "stretch":
        return np.asarray(pil.resize((size, size), method))
    if preprocess.resize == "letterbox":
        scale = min(size / pil.width, size / pil.height)
        width, height = max(1, round(pil.width * scale)), max(1, round(pil.height * scale))
        canvas = Image.new("RGB", (size, size), tuple(round(255 * m) for m in preprocess.mean))
        canvas.paste(pil.resize((width, height), method), ((size - width) // 2, (size - height) // 2))
        return np.asarray(canvas)
    width, height = shorter_side_size(pil.width, pil.height, math.floor(size / preprocess.crop_pct))
    left, top = crop_offset(width, size), crop_offset(height, size)
    return np.asarray(pil.resize((width, height), method).crop((left, top, left + size, top + size)))


def shorter_side_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the shorter side `side`, the longer truncated as torchvision's
    Resize(int) does (it is what timm's and open_clip's eval transforms call)."""
    if width <= height:
        return side, int(side * height / width)
    return int(side * width / height), side


def crop_offset(length: int, crop: int) -> int:
    """Start of a centred `crop` along a side of `length`, as torchvision's CenterCrop puts it:
    round half to even when cropping; when the side is shorter, the zero padding (which
    Pillow's crop adds outside the image) takes the smaller half before the image."""
    if crop > length:
        return -((crop - length) // 2)
    return int(round((length - crop) / 2.0))


def normalise(batch: torch.Tensor, preprocess: Preprocess) -> torch.Tensor:
    """B x 3 x H x W uint8 (any device) -> float32 (x / 255 - mean) / std, in ToTensor's and
    Normalize's order of operations, so the result equals the libraries' to the last bit."""
    mean = torch.tensor(preprocess.mean, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocess.std, device=batch.device).view(1, 3, 1, 1)
    return (batch.float().div_(255) - mean) / std
