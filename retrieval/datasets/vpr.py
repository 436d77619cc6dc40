"""Visual place recognition folders: a database and a query folder, positives by position.

Three ways to find positives (docs/formats.md section 4):
- `utm`: file names `@easting@northing@...@.jpg` (the VPR-datasets-downloader layout that
  VPR-methods-evaluation and AnyLoc read); positives within `radius_m` (25) in 2-D.
- `vpr_bench`: `ref/<int>.jpg`, `query/<int>.jpg` and `ground_truth_new.npy` (VPR-Bench).
- `camera`: Baidu Mall `.camera` files; camera centre on the second-to-last line, 3-D radius 10 m.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import numpy as np

from retrieval.config.rules import Rule
from retrieval.datasets import register
from retrieval.datasets.listing import image_files
from retrieval.datasets.safe_pickle import REDOWNLOAD, load_npy
from retrieval.errors import unreadable
from retrieval.records import Dataset, Instance, QueryTruth, Record

VPR_SUFFIXES = (".jpg", ".jpeg", ".png")
"""What a VPR database or query folder holds: its JPEG (and PNG) files, as the references read
them (VPR-methods-evaluation globs `**/*.jpg`); another image file beside them is not part of
the benchmark."""
DEFAULT_RADIUS_M = {"utm": 25.0, "camera": 10.0}
POSITIVES = ("utm", "vpr_bench", "camera")
"""dataset.positives: where the ground truth comes from (see the module docstring)."""
BLOCK_ELEMENTS = 4_000_000
"""Query-by-database distances computed at once; bounds the radius search's memory."""


def _missing(path: Path, what: str, layout: str) -> FileNotFoundError:
    return FileNotFoundError(f"{what} not found: {path}\nExpected layout:\n{layout}")


def _natural_sorted(paths: list[Path]) -> list[Path]:
    """Sorted with digit runs compared as numbers, as AnyLoc orders Baidu Mall files."""

    def key(path: Path) -> list:
        return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", path.name)]

    return sorted(paths, key=key)


def list_images(folder: Path) -> list[Path]:
    """Images under `folder`, sorted by relative path (as VPR-methods-evaluation globs them).

    A `<folder>_images_paths.txt` beside the folder, when present, gives the list instead
    (same convention as VPR-methods-evaluation, to skip a slow walk of a huge folder).
    """
    listing = folder.parent / f"{folder.name}_images_paths.txt"
    if listing.is_file():
        return [folder / line for line in listing.read_text().splitlines() if line.strip()]
    return image_files(folder, VPR_SUFFIXES)


def utm_of(path: Path) -> tuple[float, float]:
    """(easting, northing) from fields 1 and 2 of the file name split on '@'.

    The references split the whole path, so an '@' in a parent folder shifts their fields;
    splitting the file name alone does not.
    """
    fields = path.name.split("@")
    try:
        return float(fields[1]), float(fields[2])
    except (IndexError, ValueError):
        raise ValueError(
            f"{path.name}: expected a file name like @<utm_east>@<utm_north>@...@.jpg"
        ) from None


def camera_centre(path: Path) -> np.ndarray:
    """Camera centre (x, y, z) of a Baidu Mall `.camera` file: its second-to-last line."""
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: too few lines for a .camera file")
    centre = np.array(lines[-2].split(), dtype=np.float64)
    if centre.shape != (3,):
        raise ValueError(f"{path}: second-to-last line {lines[-2]!r} is not 'x y z'")
    return centre


def within_radius(queries: np.ndarray, database: np.ndarray, radius: float) -> list[np.ndarray]:
    """Database indices within `radius` (boundary included) of each query, in blocks."""
    block = max(1, BLOCK_ELEMENTS // max(1, len(database)))
    limit = radius * radius
    found: list[np.ndarray] = []
    for start in range(0, len(queries), block):
        chunk = queries[start : start + block]
        squared = ((chunk[:, None, :] - database[None, :, :]) ** 2).sum(axis=2)
        found.extend(np.flatnonzero(row <= limit).astype(np.int64) for row in squared)
    return found


def _records(paths: list[Path], root: Path, queries: bool) -> list[Record]:
    return [
        Record(
            path=path,
            key=os.path.relpath(path, root),
            instances=(Instance(id=f"q{i}"),) if queries else (),
        )
        for i, path in enumerate(paths)
    ]


def _require_images(folder: Path, paths: list[Path], layout: str) -> None:
    if not folder.is_dir():
        raise _missing(folder, "Image folder", layout)
    if not paths:
        raise FileNotFoundError(f"No images in {folder}\nExpected layout:\n{layout}")


def _utm_positives(root: Path, queries: str, database: str, radius: float):
    layout = (
        f"  {root}/{database}/**/@<utm_east>@<utm_north>@...@.jpg\n"
        f"  {root}/{queries}/**/@<utm_east>@<utm_north>@...@.jpg"
    )
    db_paths, q_paths = list_images(root / database), list_images(root / queries)
    _require_images(root / database, db_paths, layout)
    _require_images(root / queries, q_paths, layout)
    db_xy = np.array([utm_of(p) for p in db_paths], dtype=np.float64)
    q_xy = np.array([utm_of(p) for p in q_paths], dtype=np.float64)
    return q_paths, db_paths, within_radius(q_xy, db_xy, radius), {}


def _numbered(folder: Path, layout: str) -> list[tuple[int, Path]]:
    """(number, path) of `<int>.<ext>` images, in numeric order (10 after 9, not after 1)."""
    if not folder.is_dir():
        raise _missing(folder, "Image folder", layout)
    numbered = []
    for path in image_files(folder, VPR_SUFFIXES, recursive=False):
        if not path.stem.isdigit():
            raise ValueError(f"{path}: VPR-Bench image names must be integers")
        numbered.append((int(path.stem), path))
    if not numbered:
        raise FileNotFoundError(f"No images in {folder}\nExpected layout:\n{layout}")
    return sorted(numbered)


def _vpr_bench_positives(root: Path, queries: str, database: str, ground_truth: str):
    layout = (
        f"  {root}/{database}/<int>.jpg\n  {root}/{queries}/<int>.jpg\n"
        f"  {root}/{ground_truth}   (object array [n_query, 2]; column 1 = reference numbers)"
    )
    refs, qs = _numbered(root / database, layout), _numbered(root / queries, layout)
    gt_file = root / ground_truth
    if not gt_file.is_file():
        raise _missing(gt_file, "Ground truth", layout)
    table = load_npy(gt_file)  # an object array: its pickled rows are read without running code
    what = "VPR-Bench ground truth"
    if table.ndim != 2 or table.shape[1] < 2:
        raise unreadable(gt_file, what, f"expected an [n_query, 2] table, got shape {table.shape}", REDOWNLOAD)
    position = {number: index for index, (number, _) in enumerate(refs)}
    positives, ignored = [], 0
    for number, path in qs:
        if number >= len(table):
            raise ValueError(f"{path}: no row {number} in {gt_file} ({len(table)} rows)")
        try:
            listed = [int(v) for v in np.asarray(table[number][1]).reshape(-1)]
        except (TypeError, ValueError) as error:
            reason = f"row {number} does not list reference numbers ({error})"
            raise unreadable(gt_file, what, reason, REDOWNLOAD) from error
        kept = sorted({position[v] for v in listed if v in position})
        ignored += sum(v not in position for v in listed)
        positives.append(np.asarray(kept, dtype=np.int64))
    extra = {"ignored_ground_truth_indices": ignored}
    return [p for _, p in qs], [p for _, p in refs], positives, extra


def _camera_files(images: list[Path], cameras: Path, layout: str) -> np.ndarray:
    centres = []
    for image in images:
        camera = cameras / f"{image.stem}.camera"
        if not camera.is_file():
            raise _missing(camera, "Camera file", layout)
        centres.append(camera_centre(camera))
    return np.stack(centres)


def _camera_positives(root: Path, queries: str, database: str, cameras: dict[str, str], radius):
    layout = (
        f"  {root}/{database}/<name>.jpg   {root}/{cameras['database']}/<name>.camera\n"
        f"  {root}/{queries}/<name>.jpg   {root}/{cameras['queries']}/<name>.camera"
    )
    db_paths = _natural_sorted(list_images(root / database))
    q_paths = _natural_sorted(list_images(root / queries))
    _require_images(root / database, db_paths, layout)
    _require_images(root / queries, q_paths, layout)
    db_xyz = _camera_files(db_paths, root / cameras["database"], layout)
    q_xyz = _camera_files(q_paths, root / cameras["queries"], layout)
    return q_paths, db_paths, within_radius(q_xyz, db_xyz, radius), {}


@register("vpr")
def load(
    root: str | os.PathLike,
    queries: Annotated[str, Rule(path=True)] = "queries",
    database: Annotated[str, Rule(path=True)] = "database",
    positives: Annotated[str, Rule(choices=lambda: POSITIVES)] = "utm",
    radius_m: Annotated[float | None, Rule(above=0)] = None,
    ground_truth: Annotated[str, Rule(path=True)] = "ground_truth_new.npy",
    query_cameras: Annotated[str, Rule(path=True)] = "query_gt",
    database_cameras: Annotated[str, Rule(path=True)] = "training_gt",
    name: str | None = None,
) -> Dataset:
    """Place recognition folders (UTM names, VPR-Bench ground_truth_new.npy, or .camera poses)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"VPR dataset root {root} not found. See `python -m retrieval.datasets prepare "
            f"pitts30k|17places|baidu_mall` for where to get the sets and how to lay them out."
        )
    if positives == "utm":
        radius = DEFAULT_RADIUS_M["utm"] if radius_m is None else float(radius_m)
        found = _utm_positives(root, queries, database, radius)
    elif positives == "vpr_bench":
        radius = None
        found = _vpr_bench_positives(root, queries, database, ground_truth)
    elif positives == "camera":
        radius = DEFAULT_RADIUS_M["camera"] if radius_m is None else float(radius_m)
        cameras = {"queries": query_cameras, "database": database_cameras}
        found = _camera_positives(root, queries, database, cameras, radius)
    else:
        raise ValueError(f"positives={positives!r}; valid: utm, vpr_bench, camera")
    q_paths, db_paths, per_query, extra = found
    truth = [QueryTruth(positives=np.asarray(p, dtype=np.int64)) for p in per_query]
    return Dataset(
        name=name or root.name,
        root=root,
        queries=_records(q_paths, root, queries=True),
        gallery=_records(db_paths, root, queries=False),
        truth={"all": truth},
        protocol="vpr",
        extra={
            "positives": positives,
            "radius_m": radius,
            "queries_without_positives": sum(len(t.positives) == 0 for t in truth),
            **extra,
        },
    )
