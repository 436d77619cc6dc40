"""Small JPEG thumbnails with the object's box or mask drawn in, made once and cached on disk.

Only the images the page shows get one. The file name hashes the image (path, size, mtime)
and the overlay, so a rebuild skips every thumbnail that is already there, and each source
image is decoded once however many overlays of it are needed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from retrieval.images import open_image

log = logging.getLogger(__name__)

SIZE = 240
"""Longest side in pixels: sharp at the 176-200 px the page shows; a click opens the original."""
QUALITY = 82
OVERLAY = (255, 212, 0)
SHADOW = (0, 0, 0)
VERSION = 3
"""Bump when the drawing changes, so cached thumbnails are remade."""


ORIENTATION = 0x0112
TURNED = {5, 6, 7, 8}
"""EXIF orientations that swap width and height: the pipeline reads images upright
(`load_rgb`), so its boxes and masks are in that frame, and so are the thumbnails."""


@dataclass(frozen=True)
class Request:
    """One thumbnail: an image, and where the object is in it (pixel box xyxy, COCO RLE JSON)."""

    path: str
    box: tuple[float, float, float, float] | None = None
    mask: str | None = None

    def name(self) -> str:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_size, stat.st_mtime_ns)
        except OSError:
            stamp = None
        blob = json.dumps([VERSION, SIZE, self.path, stamp, self.box, self.mask])
        return hashlib.sha1(blob.encode()).hexdigest()[:20] + ".jpg"


def valid_box(box: np.ndarray | list | None) -> tuple[float, float, float, float] | None:
    """A box worth drawing, or None for missing, padded (NaN) or empty boxes."""
    if box is None:
        return None
    values = np.asarray(box, dtype=float)
    if values.shape != (4,) or not np.isfinite(values).all():
        return None
    x1, y1, x2, y2 = values.tolist()
    return (x1, y1, x2, y2) if x2 > x1 and y2 > y1 else None


def _decode_mask(rle_json: str) -> np.ndarray:
    """Bool HxW mask of a COCO RLE (counts as str or list); pycocotools only when masks occur."""
    from pycocotools import mask as mask_utils

    rle = json.loads(rle_json)
    size = [int(v) for v in rle["size"]]
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, *size)
    else:
        rle = {"size": size, "counts": rle["counts"].encode()}
    return mask_utils.decode(rle).astype(bool)


def _draw_mask(thumb: Image.Image, rle_json: str) -> None:
    """Tint the object and trace its outline, so its shape reads at thumbnail size."""
    mask = Image.fromarray(_decode_mask(rle_json).astype(np.uint8) * 255)
    mask = mask.resize(thumb.size, Image.Resampling.NEAREST)
    tint = Image.new("RGB", thumb.size, OVERLAY)
    thumb.paste(Image.blend(thumb, tint, 0.2), mask=mask)
    ring = np.asarray(mask.filter(ImageFilter.MaxFilter(5))) > np.asarray(mask)
    shadow = np.asarray(mask.filter(ImageFilter.MaxFilter(7))) > np.asarray(mask)
    pixels = np.array(thumb)
    pixels[shadow & ~ring] = SHADOW
    pixels[ring] = OVERLAY
    thumb.paste(Image.fromarray(pixels))


def _draw_box(thumb: Image.Image, box: tuple[float, float, float, float], scale: tuple[float, float]) -> None:
    """Yellow frame with a dark edge around it, visible on light and dark images alike."""
    sx, sy = scale
    x1, y1, x2, y2 = box
    rect = [x1 * sx, y1 * sy, max(x1 * sx, x2 * sx - 1), max(y1 * sy, y2 * sy - 1)]
    draw = ImageDraw.Draw(thumb)
    draw.rectangle([rect[0] - 1, rect[1] - 1, rect[2] + 1, rect[3] + 1], outline=SHADOW, width=4)
    draw.rectangle(rect, outline=OVERLAY, width=2)


def _render_image(path: str, requests: list[tuple[Request, str]], folder: Path) -> dict[Request, str | None]:
    """Decode `path` once and write every requested overlay of it, under the given file names."""
    try:
        with open_image(path, max_side=SIZE) as (image, original):  # a JPEG decodes small
            turned = image.getexif().get(ORIENTATION) in TURNED
            base = ImageOps.exif_transpose(image).convert("RGB")
        base.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
        original = original[::-1] if turned else original  # boxes and masks are in display orientation
    except Exception as error:  # any failure to decode one image costs only its thumbnail
        log.warning("no thumbnail for %s: %s", path, error)
        return {request: None for request, _ in requests}
    scale = (base.width / original[0], base.height / original[1])
    done: dict[Request, str | None] = {}
    for request, name in requests:
        thumb = base.copy()
        try:
            if request.mask:
                _draw_mask(thumb, request.mask)
            if request.box:
                _draw_box(thumb, request.box, scale)
        except (ValueError, KeyError, TypeError) as error:
            log.warning("overlay not drawn on %s: %s", path, error)
        tmp = folder / f".{name}.tmp"
        thumb.save(tmp, "JPEG", quality=QUALITY, optimize=True)
        os.replace(tmp, folder / name)
        done[request] = name
    return done


def make_thumbnails(requests: set[Request], folder: Path, workers: int = 4) -> dict[Request, str | None]:
    """File name (inside `folder`) of each request's thumbnail, making only the missing ones.

    Files in `folder` that no request names any more are removed, so the folder holds
    exactly what the page shows.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = {request: request.name() for request in requests}
    result: dict[Request, str | None] = {}
    todo: dict[str, list[tuple[Request, str]]] = defaultdict(list)
    for request, name in names.items():
        if (folder / name).exists():
            result[request] = name
        else:
            todo[request.path].append((request, name))
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
        for done in pool.map(lambda item: _render_image(item[0], item[1], folder), todo.items()):
            result.update(done)
    keep = set(names.values())
    for stale in folder.glob("*.jpg"):
        if stale.name not in keep:
            stale.unlink()
    return result
