"""Decode any image a user may have into RGB uint8, or say clearly why not."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

Image.MAX_IMAGE_PIXELS = 300_000_000  # gigapixel scans are legitimate gallery images


class ImageError(Exception):
    """An input image that cannot be used; callers count and log it, then skip it."""


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: PIL's own convert clips to 255, so scale by the real range.
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        grey = np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 in display orientation (EXIF rotation applied); CMYK, palette and
    16-bit images converted. Raises ImageError for missing, corrupt or truncated files."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"missing file: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.asarray(_to_rgb(image))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageError(f"cannot decode {path}: {error}") from error
