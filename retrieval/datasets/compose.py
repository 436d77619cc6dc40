"""Composed instance-retrieval sets: real object cut-outs pasted into scenes, saved as anns.pt.

One generator serves two needs. The built-in demo set cuts 8 objects out of scikit-image's
sample photos (so it needs no download) and pastes them large into 40 scenes. Benchmarks use
any masked object folder (e.g. ETH-80, `images/<instance>/` + `masks/<instance>/`) and paste
small objects (0.5-5 % of the image) with same-category distractors and partial occlusion.

Output (keys of `anns.pt` are paths relative to `<out>`; VoxDet format, FORMATS.md section 1):

    <out>/anns.pt                    queries and gallery entries
    <out>/queries/<instance>/<n>.png one object on a plain or textured background
    <out>/scenes/<n>.jpg             2-4 objects (plus distractors) on a background crop
    <out>/compose.json               parameters, then what was pasted where (provenance)

Everything is drawn from random generators seeded by (seed, purpose, index), so a set is a
pure function of its parameters, and re-running with the same parameters does nothing.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from retrieval.artifacts import config_key, read_json, writable, write_json
from retrieval.datasets import is_hidden, load_dataset, register
from retrieval.images import open_image
from retrieval.records import Dataset
from retrieval.masks import tight_box

GENERATOR_VERSION = 1
"""Bump when the same parameters would produce different files, so old sets are rebuilt."""

COMPOSE_JSON = "compose.json"
ANNS = "anns.pt"
_QUERY_SIDE = (0.6, 0.9)
"""Object's longer side / query image side: queries show the object large, as a user would."""
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


# ---------------------------------------------------------------------------------------------
# Sources


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


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir()
        if p.suffix.lower() in _IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
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
    for folder in sorted(p for p in (root / "images").iterdir() if p.is_dir() and not p.name.startswith(".")):
        masked = [p.name for p in _image_files(folder) if _mask_file(root, folder.name, p.name).is_file()]
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
    files = sorted(
        p for p in root.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES and not is_hidden(p, root) and p.is_file()
    )
    if not files:
        raise FileNotFoundError(f"no background images under {root}")

    def read(name: str) -> np.ndarray:
        return _read(root / name)

    return BackgroundSource(str(root), tuple(str(p.relative_to(root)) for p in files), read)


# ---------------------------------------------------------------------------------------------
# Parameters and plan


@dataclass(frozen=True)
class ComposeSpec:
    """Everything besides the sources that determines a composed set."""

    scenes: int = 500
    instances: int | None = None
    """Instances that get queries (spread over categories); None = all. The others of the
    source appear only as distractors."""
    queries_per_instance: int = 5
    objects_per_scene: tuple[int, int] = (2, 4)
    """Query instances per scene (inclusive range); dealt from a deck so all appear evenly."""
    distractors_per_scene: tuple[int, int] = (0, 2)
    """Extra objects of the same category as one of the scene's instances."""
    scene_size: tuple[int, int] = (640, 480)
    """Width, height."""
    query_size: int = 224
    area: tuple[float, float] = (0.005, 0.05)
    """Object area as a fraction of the scene, before occlusion (log-uniform)."""
    max_occlusion: float = 0.5
    """Largest fraction of an object that later-pasted objects may hide."""
    overlap: float = 0.3
    """Chance that an object is aimed at an earlier one, to make occlusion common."""
    rotation: float = 20.0
    """Largest in-plane rotation, degrees."""
    lighting: float = 0.25
    """Brightness, contrast (+-) and per-channel colour (+- half) jitter strength."""
    tilt: float = 0.12
    """Query views only: corner jitter of a perspective warp, as a fraction of the side."""
    scene_format: str = "jpg"
    set_name: str = "compose"
    seed: int = 0

    def __post_init__(self) -> None:
        lo, hi = self.area
        if not 0 < lo < hi < 1:
            raise ValueError(f"area range must satisfy 0 < low < high < 1, got {self.area}")
        if self.objects_per_scene[0] < 1 or self.objects_per_scene[0] > self.objects_per_scene[1]:
            raise ValueError(f"bad objects_per_scene {self.objects_per_scene}")
        if not 0 <= self.max_occlusion < 1:
            raise ValueError(f"max_occlusion must be in [0, 1), got {self.max_occlusion}")
        if self.scene_format not in ("jpg", "png"):
            raise ValueError(f"scene_format must be jpg or png, got {self.scene_format!r}")


DEMO_SPEC = ComposeSpec(
    scenes=40,
    distractors_per_scene=(0, 0),
    scene_size=(384, 288),
    query_size=192,
    area=(0.03, 0.12),
    rotation=30.0,
    set_name="demo",
)
"""The built-in demo set: 8 instances x 5 queries, 40 scenes of 2-4 large objects."""


@dataclass(frozen=True)
class Paste:
    """One object to paste into a scene."""

    instance: str
    view: str
    role: str
    """"target" (dealt instance) or "distractor" (same category as a target)."""


@dataclass(frozen=True)
class Plan:
    """Which instances are queried, which views go where, and what each scene holds."""

    ids: dict[str, int]
    query_views: dict[str, tuple[str, ...]]
    scenes: list[list[Paste]]


def _rng(spec: ComposeSpec, purpose: int, *index: int) -> np.random.Generator:
    return np.random.default_rng([spec.seed, purpose, *index])


def _query_instances(objects: ObjectSource, count: int | None, rng: np.random.Generator) -> list[str]:
    """`count` instances taken round-robin over categories, so every category is queried."""
    by_category: dict[str, list[str]] = {}
    for name in sorted(objects.views):
        by_category.setdefault(objects.category(name), []).append(name)
    queues = [list(rng.permutation(names)) for names in by_category.values()]
    order = [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]
    return sorted(order[: count or len(order)])


def _split_views(
    views: tuple[str, ...], count: int, rng: np.random.Generator
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(query views, scene views), disjoint unless the instance has a single view."""
    if len(views) == 1:
        return views * count, views
    chosen = set(rng.choice(len(views), size=min(count, len(views) - 1), replace=False).tolist())
    picked = [views[i] for i in sorted(chosen)]
    query = tuple(picked[i % len(picked)] for i in range(count))
    return query, tuple(v for i, v in enumerate(views) if i not in chosen)


def _deal(deck: list[str], pool: list[str], count: int, rng: np.random.Generator) -> list[str]:
    """Take `count` distinct instances off the deck, reshuffling the pool into it when short."""
    hand: list[str] = []
    while len(hand) < count:
        fresh = [name for name in deck if name not in hand]
        if not fresh:
            deck.extend(rng.permutation(pool).tolist())
            continue
        deck.remove(fresh[0])
        hand.append(fresh[0])
    return hand


def _distractors(objects: ObjectSource, hand: list[str], queried: set[str], count: int,
                 rng: np.random.Generator) -> list[str]:
    """Same-category instances not in the scene, preferring ones that have no queries."""
    chosen: list[str] = []
    for _ in range(count):
        category = objects.category(hand[rng.integers(len(hand))])
        taken = set(hand) | set(chosen)
        same = [n for n in sorted(objects.views) if objects.category(n) == category and n not in taken]
        candidates = [n for n in same if n not in queried] or same
        if candidates:
            chosen.append(candidates[rng.integers(len(candidates))])
    return chosen


def _between(bounds: tuple[int, int], rng: np.random.Generator) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def plan(objects: ObjectSource, spec: ComposeSpec) -> Plan:
    """Decide everything discrete (instances, views, scene contents) before any rendering."""
    rng = _rng(spec, 0)
    queried = _query_instances(objects, spec.instances, rng)
    query_views, scene_views = {}, {}
    for name, views in sorted(objects.views.items()):
        if name in queried:
            query_views[name], scene_views[name] = _split_views(views, spec.queries_per_instance, rng)
        else:
            scene_views[name] = views
    deck: list[str] = []
    scenes = []
    for _ in range(spec.scenes):
        size = min(_between(spec.objects_per_scene, rng), len(queried))
        hand = _deal(deck, queried, size, rng)
        extra = _distractors(objects, hand, set(queried), _between(spec.distractors_per_scene, rng), rng)
        roles = [(n, "target") for n in hand] + [(n, "distractor") for n in extra]
        pastes = [Paste(n, scene_views[n][rng.integers(len(scene_views[n]))], role) for n, role in roles]
        scenes.append([pastes[i] for i in rng.permutation(len(pastes))])
    ids = {name: i + 1 for i, name in enumerate(sorted(objects.views))}
    return Plan(ids=ids, query_views=query_views, scenes=scenes)


# ---------------------------------------------------------------------------------------------
# Rendering


@dataclass(frozen=True)
class Patch:
    """A rendered object cropped to its mask's box; `rgb` matters only where `mask` is set."""

    rgb: np.ndarray
    mask: np.ndarray
    angle: float
    scale: float


def _light(rgb: np.ndarray, rng: np.random.Generator, strength: float,
           colour: float | None = None) -> tuple[np.ndarray, dict]:
    """Brightness, contrast and per-channel colour jitter (+- `colour`, default half the
    strength); the identity when both are 0."""
    brightness = 1 + rng.uniform(-strength, strength)
    contrast = 1 + rng.uniform(-strength, strength)
    spread = strength / 2 if colour is None else colour
    gain = 1 + rng.uniform(-spread, spread, size=3)
    mean = float(np.mean(cv2.mean(rgb)[:3]))
    scale = contrast * brightness * gain
    offset = mean * (1 - contrast) * brightness * gain
    out = cv2.transform(rgb, np.column_stack([np.diag(scale), offset]))  # rounds and saturates
    params = {"brightness": round(brightness, 4), "contrast": round(contrast, 4),
              "gain": np.round(gain, 4).tolist()}
    return out, params


def _quad(width: int, height: int, angle: float, jitter: np.ndarray) -> np.ndarray:
    """Corners of a width x height image after rotating about its centre and jittering."""
    corners = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float64)
    centre = corners.mean(axis=0)
    theta = math.radians(angle)
    rotation = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    return (corners - centre) @ rotation.T + centre + jitter * [width, height]


def _render(cut: Cutout, scale: float, angle: float, jitter: np.ndarray) -> Patch:
    """Resize (area filter, no aliasing), then rotate/warp; the mask is thresholded at 0.5."""
    height, width = cut.mask.shape
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    rgb = cv2.resize(cut.rgb, size, interpolation=shrink)
    weight = cv2.resize(cut.mask.astype(np.float32), size, interpolation=shrink)
    source = np.array([[0, 0], [size[0], 0], [size[0], size[1]], [0, size[1]]], dtype=np.float32)
    target = _quad(size[0], size[1], angle, jitter)
    target -= target.min(axis=0) - 1
    out_size = tuple(int(v) + 2 for v in np.ceil(target.max(axis=0)))
    warp = cv2.getPerspectiveTransform(source, target.astype(np.float32))
    rgb = cv2.warpPerspective(rgb, warp, out_size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    weight = cv2.warpPerspective(weight, warp, out_size, flags=cv2.INTER_LINEAR)
    mask = weight >= 0.5
    if not mask.any():
        return Patch(rgb[:0, :0], mask[:0, :0], angle, scale)
    x1, y1, x2, y2 = tight_box(mask)
    return Patch(rgb[y1:y2, x1:x2], mask[y1:y2, x1:x2], angle, scale)


def _fit(cut: Cutout, angle: float, jitter: np.ndarray, area: tuple[float, float],
         canvas: tuple[int, int], rng: np.random.Generator) -> Patch | None:
    """Render at a log-uniform area fraction in `area` that also fits the canvas; None if the
    object cannot satisfy both (e.g. too elongated)."""
    width, height = canvas
    quad = _quad(cut.mask.shape[1], cut.mask.shape[0], angle, jitter)
    extent = quad.max(axis=0) - quad.min(axis=0)
    unit_area = cv2.contourArea(quad.astype(np.float32)) * cut.mask.mean() / (width * height)
    largest = unit_area * (0.95 * min(width / extent[0], height / extent[1])) ** 2
    low, high = area[0] * 1.03, min(area[1], largest) * 0.97
    if high <= low:
        return None
    goal = math.exp(rng.uniform(math.log(low), math.log(high)))
    scale = math.sqrt(goal / unit_area)
    for _ in range(4):
        patch = _render(cut, scale, angle, jitter)
        got = patch.mask.sum() / (width * height)
        fits = patch.mask.shape[0] <= height and patch.mask.shape[1] <= width
        if fits and area[0] <= got <= area[1]:
            return patch
        scale *= min(max(math.sqrt(goal / max(got, 1e-9)), 0.5), 2.0)
    return None


def _background(backgrounds: BackgroundSource, size: tuple[int, int], strength: float,
                rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A random crop with the canvas' aspect ratio, resized, lit and tinted (so grey textures
    come in colours)."""
    name = backgrounds.names[rng.integers(len(backgrounds.names))]
    image = backgrounds.read(name)
    width, height = size
    fit = min(image.shape[1] / width, image.shape[0] / height)
    crop_w, crop_h = (max(1, int(v * fit * rng.uniform(0.5, 1.0))) for v in (width, height))
    x = int(rng.integers(image.shape[1] - crop_w + 1))
    y = int(rng.integers(image.shape[0] - crop_h + 1))
    crop = cv2.resize(image[y : y + crop_h, x : x + crop_w], size, interpolation=cv2.INTER_AREA)
    lit, light = _light(crop, rng, strength, colour=0.3)
    return lit, {"name": name, "crop": [x, y, crop_w, crop_h], **light}


@dataclass
class _Placed:
    """An object in a scene, and what later objects left visible of it (scene-sized mask)."""

    paste: Paste
    patch: Patch
    origin: tuple[int, int]
    visible: np.ndarray
    light: dict

    @property
    def region(self) -> tuple[slice, slice]:
        (x, y), (height, width) = self.origin, self.patch.mask.shape
        return np.s_[y : y + height, x : x + width]


def _position(patch: Patch, placed: list[_Placed], spec: ComposeSpec,
              rng: np.random.Generator, attempts: int = 40) -> tuple[int, int] | None:
    """A position where the patch hides at most `max_occlusion` of every earlier object."""
    width, height = spec.scene_size
    ph, pw = patch.mask.shape
    for _ in range(attempts):
        if placed and rng.random() < spec.overlap:
            x1, y1, x2, y2 = tight_box(placed[rng.integers(len(placed))].visible)
            x = int(np.clip(rng.integers(x1, x2) - pw // 2, 0, width - pw))
            y = int(np.clip(rng.integers(y1, y2) - ph // 2, 0, height - ph))
        else:
            x, y = int(rng.integers(width - pw + 1)), int(rng.integers(height - ph + 1))
        if all(_hidden(p, patch, x, y) <= spec.max_occlusion for p in placed):
            return x, y
    return None


def _hidden(earlier: _Placed, patch: Patch, x: int, y: int) -> float:
    """Fraction of `earlier` (of its whole pasted mask) not visible once `patch` is at (x, y)."""
    ph, pw = patch.mask.shape
    covered = earlier.visible[y : y + ph, x : x + pw] & patch.mask
    return 1 - (earlier.visible.sum() - covered.sum()) / earlier.patch.mask.sum()


def _scene(
    objects: ObjectSource, backgrounds: BackgroundSource, pastes: list[Paste], spec: ComposeSpec,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[_Placed], dict, list[dict]]:
    """Paste objects in order (later ones on top) and track what stays visible of each."""
    canvas, background = _background(backgrounds, spec.scene_size, spec.lighting, rng)
    placed: list[_Placed] = []
    dropped = []
    for paste in pastes:
        source = objects.read(paste.instance, paste.view)
        rgb, light = _light(source.rgb, rng, spec.lighting)
        cut = Cutout(rgb, source.mask)
        angle = float(rng.uniform(-spec.rotation, spec.rotation))
        patch = _fit(cut, angle, np.zeros((4, 2)), spec.area, spec.scene_size, rng)
        spot = None if patch is None else _position(patch, placed, spec, rng)
        if patch is None or spot is None:
            reason = "no room" if patch else "cannot fit the area range"
            dropped.append({"instance": paste.instance, "view": paste.view, "reason": reason})
            continue
        item = _Placed(paste, patch, spot, np.zeros(canvas.shape[:2], dtype=bool), light)
        for earlier in placed:
            earlier.visible[item.region] &= ~patch.mask
        item.visible[item.region] = patch.mask
        canvas[item.region][patch.mask] = patch.rgb[patch.mask]
        placed.append(item)
    return canvas, placed, background, dropped


def _query(objects: ObjectSource, backgrounds: BackgroundSource, instance: str, view: str,
           spec: ComposeSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """The object alone, tilted as if seen from elsewhere, on a plain colour or a texture."""
    size = (spec.query_size, spec.query_size)
    if rng.random() < 0.5:
        colour = rng.integers(0, 256, size=3)
        canvas, background = np.empty((*size, 3), np.uint8), {"plain": colour.tolist()}
        canvas[:] = colour.astype(np.uint8)
    else:
        canvas, background = _background(backgrounds, size, spec.lighting, rng)
    source = objects.read(instance, view)
    rgb, light = _light(source.rgb, rng, spec.lighting)
    angle = float(rng.uniform(-spec.rotation, spec.rotation))
    jitter = rng.uniform(-spec.tilt, spec.tilt, size=(4, 2))
    quad = _quad(source.mask.shape[1], source.mask.shape[0], angle, jitter)
    side = rng.uniform(*_QUERY_SIDE)
    scale = side * spec.query_size / np.ptp(quad, axis=0).max()
    patch = _render(Cutout(rgb, source.mask), scale, angle, jitter)
    ph, pw = patch.mask.shape
    x, y = int(rng.integers(size[0] - pw + 1)), int(rng.integers(size[1] - ph + 1))
    mask = np.zeros(size, dtype=bool)
    mask[y : y + ph, x : x + pw] = patch.mask
    canvas[y : y + ph, x : x + pw][patch.mask] = patch.rgb[patch.mask]
    info = {"background": background, "angle": round(angle, 3), "tilt": np.round(jitter, 4).tolist(),
            "side_fraction": round(side, 4), "area_fraction": round(float(mask.mean()), 6),
            "lighting": light}
    return canvas, mask, info


# ---------------------------------------------------------------------------------------------
# Encoding


def _runs(flat: np.ndarray) -> list[int]:
    """Run lengths of a flat bool array, the first run counting zeros (0 if it starts set)."""
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat.size and flat[0] else runs


def builder_rle(mask: np.ndarray) -> dict[str, Any]:
    """The VoxDet builder's query RLE, row-major, always opening with a zero-run (the
    reference omits it when pixel (0, 0) is set; we write the unambiguous form)."""
    return {"counts": _runs(mask.ravel(order="C")), "size": tuple(mask.shape), "transpose": False}


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE (column-major, int counts), as VoxDet's gallery masks."""
    return {"counts": _runs(mask.ravel(order="F")), "size": list(mask.shape)}


def inclusive_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The builder's query box: the tight box with the last pixel included."""
    x1, y1, x2, y2 = tight_box(mask)
    return x1, y1, x2 - 1, y2 - 1


# ---------------------------------------------------------------------------------------------
# Writing


def _params(objects: ObjectSource, backgrounds: BackgroundSource, spec: ComposeSpec) -> dict[str, Any]:
    """The JSON form of everything that determines the output, compared on re-runs."""
    params = {"generator": GENERATOR_VERSION, "objects": objects.label,
              "backgrounds": backgrounds.label, **asdict(spec)}
    return json.loads(json.dumps(params))


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        Image.fromarray(image).save(path, quality=90)
    else:
        Image.fromarray(image).save(path, compress_level=1)


def _write_queries(objects: ObjectSource, backgrounds: BackgroundSource, spec: ComposeSpec,
                   layout: Plan, tmp: Path, anns: dict) -> list[dict]:
    records = []
    for instance, views in layout.query_views.items():
        ins = layout.ids[instance]
        for n, view in enumerate(views):
            rng = _rng(spec, 2, ins, n)
            image, mask, info = _query(objects, backgrounds, instance, view, spec, rng)
            key = f"queries/{instance}/{n:03d}.png"
            _save(image, tmp / key)
            anns[key] = {"bbox": inclusive_box(mask), "mask": builder_rle(mask), "ins": ins,
                         "set": spec.set_name, "is_query": True}
            records.append({"file": key, "instance": instance, "ins": ins, "view": view, **info})
    return records


def _object_record(item: _Placed, ins: int, area: int) -> dict[str, Any]:
    x1, y1, x2, y2 = tight_box(item.visible)
    full, visible = int(item.patch.mask.sum()), int(item.visible.sum())
    return {
        "instance": item.paste.instance, "ins": ins, "view": item.paste.view,
        "role": item.paste.role, "box": [x1, y1, x2, y2], "position": list(item.origin),
        "area_fraction": round(full / area, 6), "visible_fraction": round(visible / area, 6),
        "occluded_fraction": round(1 - visible / full, 6), "angle": round(item.patch.angle, 3),
        "scale": round(item.patch.scale, 5), "lighting": item.light,
    }


def _write_scenes(objects: ObjectSource, backgrounds: BackgroundSource, spec: ComposeSpec,
                  layout: Plan, tmp: Path, anns: dict) -> list[dict]:
    records = []
    area = spec.scene_size[0] * spec.scene_size[1]
    for n, pastes in enumerate(layout.scenes):
        image, placed, background, dropped = _scene(objects, backgrounds, pastes, spec, _rng(spec, 1, n))
        key = f"scenes/{n:06d}.{spec.scene_format}"
        _save(image, tmp / key)
        found = [_object_record(item, layout.ids[item.paste.instance], area) for item in placed]
        anns[key] = {
            "bbox": [tuple(o["box"]) for o in found],
            "mask": [coco_rle(item.visible) for item in placed],
            "ins": [o["ins"] for o in found], "num_ins": [len(found)] * len(found),
            "set": spec.set_name, "is_query": False,
        }
        records.append({"file": key, "background": background, "objects": found, "dropped": dropped})
    return records


def _is_current(out: Path, params: dict[str, Any]) -> bool:
    marker = out / COMPOSE_JSON
    return marker.exists() and (out / ANNS).exists() and read_json(marker).get("params") == params


def _install(tmp: Path, out: Path) -> None:
    """Swap the finished folder into place; an older composed set there is replaced."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def compose(objects: ObjectSource, backgrounds: BackgroundSource, spec: ComposeSpec, out: Path) -> Path:
    """Write a composed set to `out` (anns.pt, images, compose.json) and return `out`.

    Built in a temporary sibling folder and renamed into place, so `out` is either the old
    set or the complete new one; a no-op when `out/compose.json` has the same parameters."""
    out = Path(out).expanduser().resolve()
    params = _params(objects, backgrounds, spec)
    if _is_current(out, params):
        return out
    if out.exists() and not (out / COMPOSE_JSON).exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not a composed set; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        layout = plan(objects, spec)
        anns: dict[str, dict] = {}
        queries = _write_queries(objects, backgrounds, spec, layout, tmp, anns)
        scenes = _write_scenes(objects, backgrounds, spec, layout, tmp, anns)
        torch.save(anns, tmp / ANNS)
        write_json(tmp / COMPOSE_JSON, _summary(objects, params, layout, queries, scenes))
        if _is_current(out, params):  # another process finished the same set meanwhile
            return out
        _install(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _summary(objects: ObjectSource, params: dict, layout: Plan, queries: list, scenes: list) -> dict:
    instances = {
        name: {
            "ins": ins, "category": objects.category(name),
            "role": "query" if name in layout.query_views else "distractor",
            "query_views": sorted(set(layout.query_views.get(name, ()))),
        }
        for name, ins in layout.ids.items()
    }
    counts = {
        "queries": len(queries), "scenes": len(scenes),
        "objects": sum(len(s["objects"]) for s in scenes),
        "dropped": sum(len(s["dropped"]) for s in scenes),
        "query_instances": len(layout.query_views), "instances": len(instances),
    }
    return {"params": params, "counts": counts, "instances": instances, "queries": queries,
            "scenes": scenes}


# ---------------------------------------------------------------------------------------------
# Demo set and CLI


def demo_dataset_root(cache: Path, seed: int = 0) -> Path:
    """Root of the built-in demo set under `cache` (generated there on first use, ~2 s)."""
    objects, backgrounds = skimage_objects(), skimage_backgrounds()
    spec = replace(DEMO_SPEC, seed=seed)
    params = _params(objects, backgrounds, spec)
    out = Path(cache).expanduser() / "demo" / config_key(params)
    if not _is_current(out, params):
        writable(out.parent)  # generated into the cache: a read-only one is one line
    return compose(objects, backgrounds, spec, out)


@register("demo")
def load(root: str | Path | None = None, cache: str | Path = "cache/datasets", seed: int = 0,
         name: str = "demo") -> Dataset:
    """The built-in demo set: 8 objects cut from scikit-image photos, 40 composed scenes.

    Generated on first use into `root`, or else into `<cache>/demo/<key>/`; read back with the
    "anns" adapter like any composed set."""
    if root is None:
        folder = demo_dataset_root(Path(cache), seed)
    else:
        spec = replace(DEMO_SPEC, seed=seed)
        folder = compose(skimage_objects(), skimage_backgrounds(), spec, Path(root))
    return load_dataset("anns", root=folder, name=name)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.datasets compose",
        description="Paste masked objects into scenes; write a VoxDet-format anns.pt set.",
    )
    parser.add_argument(
        "--objects", required=True, help='"skimage" (demo objects) or a folder with images/ and masks/'
    )
    parser.add_argument("--backgrounds", default="skimage", help='"skimage" or a folder of images')
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--scenes", type=int)
    parser.add_argument("--instances", type=int, help="instances with queries (default: all)")
    parser.add_argument("--queries-per-instance", type=int)
    parser.add_argument("--objects-per-scene", type=int, nargs=2, metavar=("MIN", "MAX"))
    parser.add_argument(
        "--distractors", type=int, nargs=2, metavar=("MIN", "MAX"), dest="distractors_per_scene"
    )
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), dest="scene_size")
    parser.add_argument("--query-size", type=int)
    parser.add_argument("--area", type=float, nargs=2, metavar=("MIN", "MAX"))
    parser.add_argument("--max-occlusion", type=float)
    parser.add_argument("--rotation", type=float)
    parser.add_argument("--lighting", type=float)
    parser.add_argument("--format", choices=("jpg", "png"), dest="scene_format")
    parser.add_argument("--set", dest="set_name")
    parser.add_argument("--seed", type=int)
    return parser


def cli(argv: list[str]) -> int:
    """`compose` command: defaults are the demo set's for skimage objects, else ComposeSpec's."""
    args = vars(_parser().parse_args(argv))
    source, background, out = args.pop("objects"), args.pop("backgrounds"), args.pop("out")
    skimage = source == "skimage"
    objects = skimage_objects() if skimage else folder_objects(Path(source))
    if background == "skimage":
        backgrounds = skimage_backgrounds()
    else:
        backgrounds = folder_backgrounds(Path(background))
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if v is not None}
    spec = replace(DEMO_SPEC if skimage else ComposeSpec(), **given)
    start = time.perf_counter()
    current = _is_current(Path(out).expanduser().resolve(), _params(objects, backgrounds, spec))
    root = compose(objects, backgrounds, spec, out)
    counts = read_json(root / COMPOSE_JSON)["counts"]
    state = "up to date" if current else f"wrote in {time.perf_counter() - start:.1f} s"
    print(f"{root} ({state}): {counts['queries']} queries of {counts['query_instances']} instances, "
          f"{counts['scenes']} scenes with {counts['objects']} objects ({counts['dropped']} dropped)")
    return 0
