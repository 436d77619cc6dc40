"""Distractors (`dataset.distractors`): images appended to any dataset's gallery that hold no
instance, so they can only make a ranking harder (Revisited Oxford/Paris +1M, or any folder of
unrelated photos beside your own set).

A source is a folder (its images at any depth, sorted by path, hidden ones left out), a text
file listing image paths (one a line, relative to the list's folder, or absolute), or one
image; the option takes one source or a list of them. The images follow the dataset's own
gallery, so its gallery indices, truth, junk and every protocol's per-gallery arrays keep their
meaning, and no distractor is ever a positive. A distractor that is an image of the dataset, or
one listed twice, is dropped and counted: an image is in the gallery once.

Records are keyed as the feature stores key items (relative to the dataset root, absolute
outside it), so one distractor set's vectors are found again for every dataset that uses it,
and a dataset with and without distractors shares its own images' vectors.

The R1M release (`python -m retrieval.datasets prepare revisitop1m`) is read as published: a
folder holding `revisitop1m.txt` is listed through it (in its order, without walking a million
files), and that list's entries are relative to `jpg/` beside it, `.jpg` implied.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from retrieval.datasets.listing import IMAGE_SUFFIXES, image_files, is_image_name
from retrieval.errors import UserError
from retrieval.images import not_regular
from retrieval.records import Dataset, Record

log = logging.getLogger(__name__)

OPTION = "dataset.distractors"
R1M_LIST = "revisitop1m.txt"
N_DISTRACTORS = "n_distractors"
"""`Dataset.extra` key: how many distractors follow the dataset's own gallery."""
N_DROPPED = "n_distractors_dropped"
"""`Dataset.extra` key: distractors left out as images of the dataset or as repeats."""

Sources = str | os.PathLike | Sequence[str | os.PathLike]


class DistractorError(UserError, ValueError):
    """A distractor source that names no images."""


def _located(source: str | os.PathLike, root: Path | None) -> Path:
    """The source's path: as given (relative to the working directory), else under `root`."""
    path = Path(source).expanduser()
    if not path.is_absolute() and not path.exists() and root is not None and (root / path).exists():
        path = root / path
    if not path.exists():
        where = f"the working directory or dataset.root={root}" if root is not None else "the working directory"
        raise DistractorError(
            f"{OPTION}={source}: no such folder or list; give a folder of images, a text file of image "
            f"paths (one a line) or a list of them (a relative path is looked up in {where}); "
            f"R1M: python -m retrieval.datasets prepare revisitop1m --root {root or '<folder>'}"
        )
    return path.resolve()


def _list_base(list_file: Path) -> Path:
    """The folder a list's relative entries are under: its own, or `jpg/` beside R1M's list."""
    return list_file.parent / "jpg" if list_file.name == R1M_LIST else list_file.parent


def _list_entries(list_file: Path, source: str | os.PathLike) -> list[Path]:
    """A list's entries as paths (R1M's with `.jpg` implied, as released)."""
    try:
        lines = list_file.read_text().splitlines()
    except UnicodeDecodeError:
        raise DistractorError(f"{OPTION}={source}: {list_file.name} is not a text list of image paths") from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise DistractorError(f"{OPTION}={source}: {list_file.name} lists no image")
    if list_file.name == R1M_LIST:
        names = [name if os.path.splitext(name)[1] else name + ".jpg" for name in names]
    base = str(_list_base(list_file))
    return [Path(os.path.normpath(os.path.join(base, name))) for name in names]


def _source_images(source: str | os.PathLike, root: Path | None) -> tuple[list[Path], list[tuple[str, str]]]:
    """(images, skipped (path, reason)) of one source; an error when it yields no image."""
    path = _located(source, root)
    if path.is_dir() and (path / R1M_LIST).is_file():
        path = path / R1M_LIST
    if path.is_dir():
        images = image_files(path)
        if not images:
            raise DistractorError(f"{OPTION}={source}: no image under {path} (files ending {', '.join(IMAGE_SUFFIXES)})")
        return images, []
    problem = not_regular(path)
    if problem:  # a FIFO named like a list would block its reader
        raise DistractorError(f"{OPTION}={source}: {path} {problem}; give a folder, an image list or an image")
    if is_image_name(path):
        return [path], []
    listed = _list_entries(path, source)
    problems = [not_regular(image) for image in listed]
    images = [image for image, problem in zip(listed, problems) if problem is None]
    if not images:
        raise DistractorError(
            f"{OPTION}={source}: none of the {len(listed)} paths {path.name} lists is an image file "
            f"(first: {listed[0]}); its relative entries are read under {_list_base(path)}"
        )
    skipped = [(str(image), f"listed in {path} as a distractor: {problem}") for image, problem in zip(listed, problems) if problem]
    return images, skipped


def _key(path: str, root: str) -> str:
    """An image's record key: its path relative to the dataset root, absolute outside it."""
    inside = path.startswith(os.path.join(root, ""))
    return (path[len(os.path.join(root, "")):] if inside else path).replace(os.sep, "/")


def _real_paths(paths: list[str]) -> list[str]:
    """`os.path.realpath` of each path, each folder resolved once: a million files sit in a few
    thousand folders, and resolving each of them component by component costs a minute."""
    folders: dict[str, str] = {}
    real = []
    for path in paths:
        folder, name = os.path.split(path)
        if folder not in folders:
            folders[folder] = os.path.realpath(folder)
        real.append(os.path.realpath(path) if os.path.islink(path) else os.path.join(folders[folder], name))
    return real


class Listing(NamedTuple):
    """The distractor images of the option's sources, in order, and the listed files skipped."""

    images: list[Path]
    skipped: list[tuple[str, str]]
    """(path, reason) of each listed file that is missing or not a regular file."""


def list_distractors(distractors: Sources, root: str | os.PathLike | None = None) -> Listing:
    """The images of one source or a list of them, read before the dataset (a wrong option
    fails before any work); relative sources are looked up in the working directory, then
    under `root` (the configured `dataset.root`)."""
    sources = [distractors] if isinstance(distractors, (str, os.PathLike)) else list(distractors)
    root = Path(root).expanduser() if root is not None else None
    images: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for source in sources:
        found, missing = _source_images(source, root)
        images += found
        skipped += missing
    return Listing(images, skipped)


def with_distractors(dataset: Dataset, listing: Listing) -> Dataset:
    """`dataset` with the listed distractors after its gallery, its truth unchanged; the listed
    files skipped join its skipped inputs."""
    images, skipped = listing
    dataset_root = os.path.realpath(dataset.root)
    own_paths = set(_real_paths([os.path.abspath(record.path) for record in dataset.gallery + dataset.queries]))
    own_keys = set(dataset.gallery_keys)
    added: list[Record] = []
    seen: set[str] = set()
    in_dataset = 0
    for image, real in zip(images, _real_paths(list(map(str, images)))):
        key = _key(str(image), dataset_root)
        if key in own_keys or real in own_paths:
            in_dataset += 1
        elif real not in seen:
            seen.add(real)
            added.append(Record(path=image, key=key))
    dropped = len(images) - len(added)
    log.info(
        "%s: %d distractors after its %d gallery images; %d dropped (%d images of the dataset, %d repeats)",
        dataset.name, len(added), len(dataset.gallery), dropped, in_dataset, dropped - in_dataset,
    )
    if skipped:
        log.warning("%s: %d listed distractors skipped, e.g. %s: %s", dataset.name, len(skipped), *skipped[0])
    return dataclasses.replace(
        dataset,
        gallery=dataset.gallery + added,
        skipped=dataset.skipped + skipped,
        extra={**dataset.extra, N_DISTRACTORS: len(added), N_DROPPED: dropped},
    )


def distractor_count(dataset: Dataset) -> int:
    """How many of the gallery's images are distractors (its last ones)."""
    return int(dataset.extra.get(N_DISTRACTORS, 0))


def labelled(dataset: Dataset) -> str:
    """The dataset's name for results: with `+<count>` of distractors ("roxford5k+1M"), so a
    leaderboard never ranks runs with and without them together."""
    count = distractor_count(dataset)
    if not count:
        return dataset.name
    size, unit = next(((size, unit) for size, unit in ((1_000_000, "M"), (1_000, "k")) if count >= size), (1, ""))
    return f"{dataset.name}+{f'{count / size:.1f}'.rstrip('0').rstrip('.')}{unit}"
