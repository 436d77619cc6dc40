"""Drawing composed images: objects lit, rotated and warped, pasted onto background crops at
places where they hide at most a bounded part of what is already there, and query images of
one object alone."""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from retrieval.masks import tight_box
from retrieval.scenes.plan import ComposeSpec, Paste
from retrieval.scenes.sources import BackgroundSource, Cutout, ObjectSource

_QUERY_SIDE = (0.6, 0.9)
"""Object's longer side / query image side: queries show the object large, as a user would."""


@dataclass(frozen=True)
class Patch:
    """A rendered object cropped to its mask's box; `rgb` matters only where `mask` is set."""

    rgb: np.ndarray
    mask: np.ndarray
    angle: float
    scale: float


def relight(rgb: np.ndarray, rng: np.random.Generator, strength: float,
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
    lit, light = relight(crop, rng, strength, colour=0.3)
    return lit, {"name": name, "crop": [x, y, crop_w, crop_h], **light}


@dataclass
class Placed:
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


def _position(patch: Patch, placed: list[Placed], spec: ComposeSpec,
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


def _hidden(earlier: Placed, patch: Patch, x: int, y: int) -> float:
    """Fraction of `earlier` (of its whole pasted mask) not visible once `patch` is at (x, y)."""
    ph, pw = patch.mask.shape
    covered = earlier.visible[y : y + ph, x : x + pw] & patch.mask
    return 1 - (earlier.visible.sum() - covered.sum()) / earlier.patch.mask.sum()


def scene_image(
    objects: ObjectSource, backgrounds: BackgroundSource, pastes: list[Paste], spec: ComposeSpec,
    rng: np.random.Generator,
) -> tuple[np.ndarray, list[Placed], dict, list[dict]]:
    """Paste objects in order (later ones on top) and track what stays visible of each."""
    canvas, background = _background(backgrounds, spec.scene_size, spec.lighting, rng)
    placed: list[Placed] = []
    dropped = []
    for paste in pastes:
        source = objects.read(paste.instance, paste.view)
        rgb, light = relight(source.rgb, rng, spec.lighting)
        cut = Cutout(rgb, source.mask)
        angle = float(rng.uniform(-spec.rotation, spec.rotation))
        patch = _fit(cut, angle, np.zeros((4, 2)), spec.area, spec.scene_size, rng)
        spot = None if patch is None else _position(patch, placed, spec, rng)
        if patch is None or spot is None:
            reason = "no room" if patch else "cannot fit the area range"
            dropped.append({"instance": paste.instance, "view": paste.view, "reason": reason})
            continue
        item = Placed(paste, patch, spot, np.zeros(canvas.shape[:2], dtype=bool), light)
        for earlier in placed:
            earlier.visible[item.region] &= ~patch.mask
        item.visible[item.region] = patch.mask
        canvas[item.region][patch.mask] = patch.rgb[patch.mask]
        placed.append(item)
    return canvas, placed, background, dropped


def query_image(objects: ObjectSource, backgrounds: BackgroundSource, instance: str, view: str,
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
    rgb, light = relight(source.rgb, rng, spec.lighting)
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
