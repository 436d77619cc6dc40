"""Revisited Oxford and Paris (revisitop): `<root>/<name>/gnd_<name>.pkl` plus `jpg/`.

The ground truth is resolved here into the three published setups (docs/formats.md section 2), so
the scoring protocol only ever sees positives and junk:

| setup  | positives   | junk        |
|--------|-------------|-------------|
| easy   | easy        | junk + hard |
| medium | easy + hard | junk        |
| hard   | hard        | junk + easy |

An index listed twice (within a list, or in both lists of a setup's positives) is one
positive; `extra["listed_positives"]` keeps, for the queries where that happens, the length
of the setup's concatenated positive lists, which revisitop's `compute_map` divides by.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.datasets import register
from retrieval.datasets.pixel_labels import pixel_instances
from retrieval.datasets.safe_pickle import REDOWNLOAD, load_pickle
from retrieval.errors import unreadable
from retrieval.images import require_files
from retrieval.protocols import LISTED_POSITIVES
from retrieval.records import Dataset, Instance, QueryTruth, Record

SETUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def layout_help(root: Path, name: str) -> str:
    """The expected files and the command that fetches them, for error messages."""
    return (
        f"Expected layout:\n"
        f"  {root}/{name}/gnd_{name}.pkl\n"
        f"  {root}/{name}/jpg/<image>.jpg\n"
        f"Download it with:\n"
        f"  python -m retrieval.datasets prepare {name} --root {root}"
    )


def read_ground_truth(path: Path) -> dict[str, Any]:
    """A gnd_*.pkl, unpickled without running code (`safe_pickle`), with its keys checked."""
    data = load_pickle(path)
    what = "revisitop ground truth (gnd_*.pkl)"
    if not isinstance(data, dict):
        raise unreadable(path, what, f"it holds a {type(data).__name__}, not a dict", REDOWNLOAD)
    missing = {"imlist", "qimlist", "gnd"} - set(data)
    if missing:
        raise unreadable(path, what, f"it lacks {', '.join(sorted(missing))}", REDOWNLOAD)
    if len(data["gnd"]) != len(data["qimlist"]):
        raise unreadable(path, what, f"{len(data['gnd'])} gnd entries for {len(data['qimlist'])} queries", REDOWNLOAD)
    return data


def _indices(entry: dict[str, Any], keys: tuple[str, ...], n_gallery: int, query: int) -> np.ndarray:
    values = [np.asarray(entry.get(key, []), dtype=np.int64).reshape(-1) for key in keys]
    merged = np.unique(np.concatenate(values)) if values else np.empty(0, dtype=np.int64)
    if merged.size and (merged.min() < 0 or merged.max() >= n_gallery):
        raise ValueError(f"query {query}: index outside imlist (size {n_gallery}) in {keys}")
    return merged


def resolve_truth(gnd: list[dict[str, Any]], n_gallery: int) -> dict[str, list[QueryTruth]]:
    """Positives and junk of every query in each setup (table in the module docstring)."""
    return {
        setup: [
            QueryTruth(
                positives=_indices(entry, positive_keys, n_gallery, q),
                junk=_indices(entry, junk_keys, n_gallery, q),
            )
            for q, entry in enumerate(gnd)
        ]
        for setup, (positive_keys, junk_keys) in SETUPS.items()
    }


def listed_positives(gnd: list[dict[str, Any]], truth: dict[str, list[QueryTruth]]) -> dict[str, dict[int, int]]:
    """Setup -> {query: length of its `ok` list as revisitop builds it (the concatenated lists,
    repeats included)}, for the queries where a repeat makes it differ from the distinct count:
    the normaliser of `compute_map`, which the protocol's `ap=reference` uses."""
    found: dict[str, dict[int, int]] = {}
    for setup, (positive_keys, _) in SETUPS.items():
        for q, entry in enumerate(gnd):
            listed = sum(np.asarray(entry.get(key, []), dtype=np.int64).size for key in positive_keys)
            if listed != truth[setup][q].positives.size:
                found.setdefault(setup, {})[q] = int(listed)
    return found


def _query_record(folder: Path, image: Path, index: int, bbx: Any, crop: bool) -> Record:
    box = tuple(float(v) for v in np.asarray(bbx, dtype=np.float64).reshape(4)) if crop else None
    return Record(
        path=image,
        key=os.path.relpath(image, folder),
        instances=(Instance(id=f"q{index}", box=box),),
    )


def _gallery_record(folder: Path, image: Path, instances: list[Instance] | None = None) -> Record:
    return Record(path=image, key=os.path.relpath(image, folder), instances=tuple(instances or ()))


@register("revisitop")
def load(
    root: str | os.PathLike,
    name: str = "roxford5k",
    crop_queries: bool = True,
    pixel_labels: str | os.PathLike | None = None,
) -> Dataset:
    """Revisited Oxford/Paris (gnd_<name>.pkl + jpg/): Easy, Medium and Hard setups with junk.

    With `pixel_labels` (the PROxford/PRParis release folder) the landmark's mask in each
    positive, so region-level rankings get localisation metrics. R1M: `dataset.distractors`
    (`retrieval.datasets.distractors`), as for every dataset."""
    root = Path(root).expanduser()
    folder = root / name
    gnd_file = folder / f"gnd_{name}.pkl"
    if not gnd_file.is_file():
        raise FileNotFoundError(f"{gnd_file} not found.\n" + layout_help(root, name))
    data = read_ground_truth(gnd_file)
    images = folder / "jpg"
    gallery_paths = [images / f"{stem}.jpg" for stem in data["imlist"]]
    query_paths = [images / f"{stem}.jpg" for stem in data["qimlist"]]
    require_files(gallery_paths + query_paths, f"{name} images", layout_help(root, name))
    queries = [
        _query_record(folder, path, q, entry["bbx"], crop_queries)
        for q, (path, entry) in enumerate(zip(query_paths, data["gnd"]))
    ]
    outlined = (
        pixel_instances(Path(pixel_labels).expanduser(), name, gallery_paths)
        if pixel_labels is not None
        else {}
    )
    gallery = [_gallery_record(folder, path, outlined.get(g)) for g, path in enumerate(gallery_paths)]
    truth = resolve_truth(data["gnd"], len(gallery_paths))
    listed = listed_positives(data["gnd"], truth)
    return Dataset(
        name=name,
        root=folder,
        queries=queries,
        gallery=gallery,
        truth=truth,
        protocol="revisitop",
        extra={
            "crop_queries": bool(crop_queries),
            "crop_rounding": "pillow",
            "n_database": len(gallery_paths),
            "n_pixel_labels": sum(len(found) for found in outlined.values()),
            **({LISTED_POSITIVES: listed} if listed else {}),
        },
    )
