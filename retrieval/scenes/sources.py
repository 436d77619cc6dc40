"""Where composed sets take their objects and backgrounds from: the demo's cut-outs of
scikit-image's sample photos, or any masked object folder and any folder of images."""
from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from scipy import ndimage

from retrieval.datasets.listing import image_files, visible_entries
from retrieval.images import open_image

SOURCE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Object views and backgrounds read from folders. Narrower than `IMAGE_SUFFIXES` (no .webp) on
purpose: a composed set is a pure function of its parameters (`GENERATOR_VERSION`), and reading
more files from the same folder would change sets already written."""


@dataclass(frozen=True)
class Cutout:
    """One view of an object, cropped to its mask; pixels outside the mask repeat the nearest
    object pixel so that interpolation at the edge never blends in the old background."""

    rgb: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class ObjectSource:
    """Object instances, the view names of each, and a reader of one view."""

    label: str
    """Where the objects come from; part of the parameters compared on re-runs."""
    views: Mapping[str, tuple[str, ...]]
    read: Callable[[str, str], Cutout] = field(compare=False, repr=False)

    def category(self, instance: str) -> str:
        """Instance name without trailing digits (`cup7` -> `cup`): distractors share it."""
        return re.sub(r"\d+$", "", instance)


@dataclass(frozen=True)
class BackgroundSource:
    """Named background images (any size, RGB uint8); scenes use random crops of them."""

    label: str
    names: tuple[str, ...]
    read: Callable[[str], np.ndarray] = field(compare=False, repr=False)


def _rgb(image: np.ndarray) -> np.ndarray:
    """Grey, RGB or RGBA uint8 -> contiguous HxWx3 uint8."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def cutout(rgb: np.ndarray, mask: np.ndarray, margin: int = 2) -> Cutout:
    """Crop an image to its mask's box (plus a margin) and bleed object colours outward."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        raise ValueError("empty object mask")
    y0, x0 = max(ys.min() - margin, 0), max(xs.min() - margin, 0)
    y1, x1 = ys.max() + margin + 1, xs.max() + margin + 1
    rgb, mask = _rgb(rgb)[y0:y1, x0:x1], mask[y0:y1, x0:x1].astype(bool)
    iy, ix = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
    return Cutout(rgb=np.ascontiguousarray(rgb[iy, ix]), mask=mask)


Part = Union[tuple[float, float, float, float], Sequence[tuple[float, float]]]
"""An ellipse (cx, cy, rx, ry) or a polygon [(x, y), ...], in pixels of the source photo."""

_SKIMAGE_OBJECTS: dict[str, tuple[str, tuple[Part, ...]]] = {
    "coffee_cup": ("coffee", ((278, 232, 201, 160), (290, 108, 118, 90))),
    "rocket": (
        "rocket",
        ([(322, 124), (333, 138), (337, 175), (338, 345), (357, 372), (356, 405), (288, 405),
          (288, 372), (306, 345), (307, 175), (311, 138)],),
    ),
    "cat_face": ("chelsea", ((222, 150, 185, 150),)),
    "astronaut_face": ("astronaut", ((227, 103, 76, 92),)),
    "shuttle_model": (
        "astronaut",
        ([(398, 22), (418, 0), (437, 2), (445, 45), (458, 58), (461, 212), (456, 262),
          (470, 282), (372, 286), (355, 226), (378, 186), (380, 86), (395, 48)],),
    ),
    "mission_patch": ("astronaut", ((172, 385, 39, 38),)),
    "coin": ("coins", ((347, 187, 34, 34),)),
    "cameraman": ("camera", ((248, 150, 92, 84),)),
}
"""Distinctive objects in scikit-image's bundled photos, each with a hand-drawn mask."""

_SKIMAGE_BACKGROUNDS = (
    "brick", "grass", "gravel", "moon", "cell", "immunohistochemistry", "hubble_deep_field",
    "retina",
)
"""Texture-like sample images that contain none of the objects above."""


def _skimage_image(name: str) -> np.ndarray:
    import skimage.data

    return _rgb(getattr(skimage.data, name)())


def _parts_mask(shape: tuple[int, int], parts: Sequence[Part]) -> np.ndarray:
    from skimage.draw import ellipse, polygon

    mask = np.zeros(shape, dtype=bool)
    for part in parts:
        if len(part) == 4 and not isinstance(part[0], tuple):
            cx, cy, rx, ry = part  # type: ignore[misc]
            rows, cols = ellipse(cy, cx, ry, rx, shape=shape)
        else:
            points = np.asarray(part, dtype=float)
            rows, cols = polygon(points[:, 1], points[:, 0], shape=shape)
        mask[rows, cols] = True
    return mask


@functools.lru_cache(maxsize=None)
def _skimage_cutout(instance: str, view: str) -> Cutout:
    photo, parts = _SKIMAGE_OBJECTS[instance]
    image = _skimage_image(photo)
    return cutout(image, _parts_mask(image.shape[:2], parts))


def skimage_objects() -> ObjectSource:
    """The demo objects: 8 cut-outs from scikit-image sample photos, one view each."""
    return ObjectSource(
        label="skimage", views={name: ("photo",) for name in _SKIMAGE_OBJECTS}, read=_skimage_cutout
    )


def skimage_backgrounds() -> BackgroundSource:
    """Textures and photos bundled with scikit-image, none showing a demo object."""
    return BackgroundSource(
        label="skimage", names=_SKIMAGE_BACKGROUNDS, read=functools.lru_cache(None)(_skimage_image)
    )


def _read(path: Path, mode: str = "RGB") -> np.ndarray:
    """The pixels of a source image in `mode`, opened as every image is (regular files only,
    pixel cap)."""
    with open_image(path) as (image, _):
        return np.asarray(image.convert(mode))


def folder_objects(root: Path) -> ObjectSource:
    """Objects from `<root>/images/<instance>/<view>.*`, masks `<root>/masks/<instance>/<view>.png`
    (> 127 = object, as in ETH-80); views without a mask are left out."""
    root = Path(root).resolve()
    views: dict[str, tuple[str, ...]] = {}
    for folder in (p for p in visible_entries(root / "images") if p.is_dir()):
        views_here = image_files(folder, SOURCE_SUFFIXES, recursive=False)
        masked = [p.name for p in views_here if _mask_file(root, folder.name, p.name).is_file()]
        if masked:
            views[folder.name] = tuple(masked)
    if not views:
        raise FileNotFoundError(f"no masked object images under {root}/images/<instance>/")

    def read(instance: str, view: str) -> Cutout:
        image = _read(root / "images" / instance / view)
        mask = _read(_mask_file(root, instance, view), "L") > 127
        return cutout(image, mask)

    return ObjectSource(label=str(root), views=views, read=read)


def _mask_file(root: Path, instance: str, view: str) -> Path:
    return root / "masks" / instance / f"{Path(view).stem}.png"


def folder_backgrounds(root: Path) -> BackgroundSource:
    """Every image file under `root` (recursively) as a background."""
    root = Path(root).resolve()
    files = sorted(image_files(root, SOURCE_SUFFIXES))  # as paths: the order sets were drawn with
    if not files:
        raise FileNotFoundError(f"no background images under {root}")

    def read(name: str) -> np.ndarray:
        return _read(root / name)

    return BackgroundSource(str(root), tuple(str(p.relative_to(root)) for p in files), read)
