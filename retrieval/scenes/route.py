"""A place-recognition route cut from real photos: overlapping crops along a path across each
photo make the database, crops near them seen from another viewpoint and under other light make
the queries, and every crop's position is in its file name, so `dataset=vpr` (positives `utm`,
within `dataset.radius_m`) reads the set back with no adapter of its own.

Each photo is resized to `photo_height` pixels high and one pixel of it counts as one metre.
The path runs diagonally from the top-left to the bottom-right crop centre; database crops sit
every `step` metres along it, queries anywhere along it and up to `lateral` metres across it.
A query's viewpoint change is a rotation, a zoom and a perspective warp of its crop square; on
the motorcycle stereo pair it is the other camera instead (the database is cut from the left
photo, the queries from the right one, shifted by the median ground-truth disparity of the
content they show, and placed where that content is in the left photo). Its lighting change is
a gamma, then brightness, contrast and a colour cast (`paste.relight`). Photos lie 10 km apart,
so a crop is never a positive of another photo's.

Output (read with `python evaluate.py dataset=vpr dataset.root=<out>`):

    <out>/database/@<east>@<north>@@@@@<photo>-<n>@@@@@@@@.jpg
    <out>/queries/@<east>@<north>@@@@@<photo>-<n>@@@@@@@@.jpg
    <out>/route.json     parameters, then each crop: photo, pixel centre, east/north, view, light

Everything is drawn from generators seeded by (seed, photo, query), so a set is a pure function
of its parameters, and re-running with the same parameters does nothing.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from retrieval.artifacts import read_json, write_json
from retrieval.scenes.paste import relight
from retrieval.scenes.sources import _rgb, _skimage_image
from retrieval.scenes.write import save_image, write_set

GENERATOR_VERSION = 1
"""Bump when the same parameters would produce different files, so old sets are rebuilt."""
ROUTE_JSON = "route.json"
DATABASE, QUERIES = "database", "queries"
STEREO = "motorcycle"
"""The one photo with a true second viewpoint: scikit-image's rectified stereo pair."""
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
          "immunohistochemistry", STEREO)
"""scikit-image's colour photos (its grey textures repeat themselves: no place to recognise)."""
ORIGIN = (500_000.0, 5_000_000.0)
"""East and north of the first photo's top-left pixel; y grows southward."""
PHOTO_SPACING = 10_000.0
"""Metres between the origins of successive photos: far beyond any radius."""


@dataclass(frozen=True)
class RouteSpec:
    """Everything that determines a route set (sizes in metres = pixels of the resized photo)."""

    photos: tuple[str, ...] = PHOTOS
    photo_height: int = 400
    crop: int = 200
    """Side of every crop, which is also the side of the written image."""
    step: float = 30.0
    """Database spacing along the path; with the default 25 m radius a query has 1-2 positives."""
    queries_per_photo: int = 6
    lateral: float = 8.0
    """Largest query offset across the path."""
    rotation: float = 10.0
    """Largest in-plane rotation of a query, degrees."""
    zoom: float = 1.15
    """Largest zoom factor of a query (in or out, log-uniform)."""
    tilt: float = 0.06
    """Corner jitter of a query's perspective warp, as a fraction of the side."""
    gamma: float = 1.5
    """Largest gamma factor of a query's lighting (either way, log-uniform)."""
    lighting: float = 0.25
    """Brightness and contrast (+-) and colour cast (+- half) of a query's lighting."""
    image_format: str = "jpg"
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = sorted(set(self.photos) - set(PHOTOS))
        if unknown or not self.photos:
            raise ValueError(f"photos {unknown or '(none)'}: choose among {', '.join(PHOTOS)}")
        if not 0 < self.crop <= self.photo_height:
            raise ValueError(f"crop {self.crop} must be in 1..photo_height ({self.photo_height})")
        if self.step <= 0 or self.queries_per_photo < 1:
            raise ValueError(f"step must be > 0 and queries_per_photo >= 1, got {self.step}, {self.queries_per_photo}")
        if self.zoom < 1 or self.gamma < 1:
            raise ValueError(f"zoom and gamma are factors >= 1, got {self.zoom}, {self.gamma}")
        if self.image_format not in ("jpg", "png"):
            raise ValueError(f"image_format must be jpg or png, got {self.image_format!r}")


@dataclass(frozen=True)
class Photo:
    """A photo resized to the route's height; `other` is the second camera's view (stereo
    pair only) and `disparity` the left-to-right shift of each pixel (inf where unknown)."""

    rgb: np.ndarray
    other: np.ndarray | None = None
    disparity: np.ndarray | None = None


@functools.lru_cache(maxsize=None)
def read_photo(name: str, height: int) -> Photo:
    """The named scikit-image photo at `height` pixels high."""
    import skimage.data

    def resized(image: np.ndarray, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
        width = round(image.shape[1] * height / image.shape[0])
        return cv2.resize(image, (width, height), interpolation=interpolation)

    if name != STEREO:
        return Photo(resized(_skimage_image(name)))
    left, right, disparity = skimage.data.stereo_motorcycle()
    scale = height / left.shape[0]
    return Photo(resized(_rgb(left)), resized(_rgb(right)),
                 resized(disparity.astype(np.float32), cv2.INTER_NEAREST) * scale)


def path_ends(photo: np.ndarray, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """The route across a photo: from its top-left to its bottom-right crop centre."""
    height, width = photo.shape[:2]
    half = crop / 2
    return np.array([half, half]), np.array([width - half, height - half])


def database_centres(photo: np.ndarray, spec: RouteSpec) -> np.ndarray:
    """Crop centres every `step` along the path, the leftover split between both ends."""
    start, end = path_ends(photo, spec.crop)
    length = float(np.linalg.norm(end - start))
    count = int(length // spec.step) + 1
    along = (length - (count - 1) * spec.step) / 2 + spec.step * np.arange(count)
    direction = (end - start) / length if length else np.zeros(2)
    return np.round(start + along[:, None] * direction, 2)


def query_centre(photo: np.ndarray, spec: RouteSpec, rng: np.random.Generator) -> np.ndarray:
    """A point anywhere along the path, up to `lateral` across it."""
    start, end = path_ends(photo, spec.crop)
    length = float(np.linalg.norm(end - start))
    direction = (end - start) / length if length else np.array([1.0, 0.0])
    normal = np.array([-direction[1], direction[0]])
    centre = start + rng.uniform(0, length) * direction + rng.uniform(-spec.lateral, spec.lateral) * normal
    return np.round(centre, 2)


def square(centre: np.ndarray, side: float, angle: float = 0.0, jitter: np.ndarray | None = None) -> np.ndarray:
    """Corners (clockwise from top-left) of a square around `centre`, rotated by `angle`
    degrees, each moved by `jitter` (4 x 2, in sides)."""
    unit = np.array([[-0.5, -0.5], [0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])
    theta = math.radians(angle)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    moved = unit if jitter is None else unit + jitter
    return centre + side * moved @ rotation.T


def cut(image: np.ndarray, corners: np.ndarray, side: int) -> np.ndarray:
    """The quadrilateral `corners` of `image` warped to a side x side square (edges mirrored)."""
    target = np.array([[0, 0], [side, 0], [side, side], [0, side]], dtype=np.float32)
    warp = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    return cv2.warpPerspective(image, warp, (side, side), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)


def stereo_shift(photo: Photo, centre: np.ndarray, crop: int) -> float:
    """The median disparity over the left photo's crop at `centre`: where its content sits,
    to the left, in the right photo."""
    height, width = photo.rgb.shape[:2]
    x0, y0 = (max(0, int(v - crop / 2)) for v in centre)
    window = photo.disparity[y0 : min(height, y0 + crop), x0 : min(width, x0 + crop)]
    known = window[np.isfinite(window)]
    return float(np.median(known)) if known.size else 0.0


def relit(image: np.ndarray, spec: RouteSpec, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A gamma change, then brightness, contrast and a colour cast."""
    gamma = math.exp(rng.uniform(-math.log(spec.gamma), math.log(spec.gamma)))
    table = np.clip(np.round(255 * (np.arange(256) / 255) ** gamma), 0, 255).astype(np.uint8)
    lit, light = relight(cv2.LUT(image, table), rng, spec.lighting)
    return lit, {"gamma": round(gamma, 4), **light}


def query_view(photo: Photo, centre: np.ndarray, spec: RouteSpec,
               rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """The query at `centre`: the other camera's crop (stereo pair), else the crop rotated,
    zoomed and warped; then relit."""
    if photo.other is not None:
        shift = stereo_shift(photo, centre, spec.crop)
        image = cut(photo.other, square(centre - [shift, 0.0], spec.crop), spec.crop)
        view: dict[str, Any] = {"camera": "right", "disparity": round(shift, 3)}
    else:
        angle = float(rng.uniform(-spec.rotation, spec.rotation))
        zoom = math.exp(rng.uniform(-math.log(spec.zoom), math.log(spec.zoom)))
        jitter = rng.uniform(-spec.tilt, spec.tilt, size=(4, 2))
        image = cut(photo.rgb, square(centre, spec.crop / zoom, angle, jitter), spec.crop)
        view = {"angle": round(angle, 3), "zoom": round(zoom, 4), "tilt": np.round(jitter, 4).tolist()}
    lit, light = relit(image, spec, rng)
    return lit, {**view, "lighting": light}


def position(index: int, centre: np.ndarray) -> tuple[float, float]:
    """(east, north) in metres of a pixel centre of the `index`-th photo."""
    return (round(ORIGIN[0] + index * PHOTO_SPACING + float(centre[0]), 2),
            round(ORIGIN[1] - float(centre[1]), 2))


def file_name(east: float, north: float, label: str, image_format: str) -> str:
    """The VPR-datasets-downloader layout: 14 '@'-separated fields, east and north first, the
    pano id (field 7) naming the crop."""
    fields = [f"{east:.2f}", f"{north:.2f}", "", "", "", "", label, *[""] * 7]
    return "@" + "@".join(fields) + f"@.{image_format}"


def _write(folder: str, index: int, n: int, centre: np.ndarray, image: np.ndarray, spec: RouteSpec,
           tmp: Path, info: dict | None = None) -> dict[str, Any]:
    name = spec.photos[index]
    east, north = position(index, centre)
    key = f"{folder}/{file_name(east, north, f'{name}-{n:03d}', spec.image_format)}"
    save_image(image, tmp / key)
    return {"file": key, "photo": name, "x": float(centre[0]), "y": float(centre[1]),
            "east": east, "north": north, **(info or {})}


def route_params(spec: RouteSpec) -> dict[str, Any]:
    """The JSON form of everything that determines the output, compared on re-runs."""
    return json.loads(json.dumps({"generator": GENERATOR_VERSION, **asdict(spec)}))


def is_current(out: Path, params: dict[str, Any]) -> bool:
    marker = out / ROUTE_JSON
    return marker.exists() and read_json(marker).get("params") == params


def build_route(spec: RouteSpec, out: Path) -> Path:
    """Write the route set to `out` (database/, queries/, route.json) and return `out`
    (`write_set`: atomic, a no-op when `out/route.json` has the same parameters)."""
    params = route_params(spec)

    def build(tmp: Path) -> None:
        database, queries = [], []
        for index, name in enumerate(spec.photos):
            photo = read_photo(name, spec.photo_height)
            for n, centre in enumerate(database_centres(photo.rgb, spec)):
                image = cut(photo.rgb, square(centre, spec.crop), spec.crop)
                database.append(_write(DATABASE, index, n, centre, image, spec, tmp))
            for n in range(spec.queries_per_photo):
                rng = np.random.default_rng([spec.seed, index, n])
                centre = query_centre(photo.rgb, spec, rng)
                image, view = query_view(photo, centre, spec, rng)
                queries.append(_write(QUERIES, index, n, centre, image, spec, tmp, view))
        counts = {"database": len(database), "queries": len(queries), "photos": len(spec.photos)}
        write_json(tmp / ROUTE_JSON, {"params": params, "counts": counts, "database": database, "queries": queries})

    return write_set(out, "a route set", lambda folder: is_current(folder, params), ROUTE_JSON, build)
