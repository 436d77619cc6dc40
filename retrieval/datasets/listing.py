"""Which files of a folder are images: one suffix list and one listing for every reader.

Hidden entries (".DS_Store", "._photo.jpg" macOS resource forks, ".thumbnails/") are no one's
images, wherever they are. A reader that accepts fewer formats than `IMAGE_SUFFIXES` passes its
own tuple and says why beside it.
"""
from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""Files a user's folder of photos is read for (what `retrieval.images.open_image` decodes)."""


def is_hidden(path: Path, root: Path) -> bool:
    """Whether a part of `path` below `root` starts with "." (".DS_Store", "._photo.jpg" macOS
    resource forks, ".thumbnails/"): no dataset's images live there, as `glob` agrees."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def is_image_name(path: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> bool:
    """Whether the file name ends with one of `suffixes`, in any case."""
    return path.suffix.lower() in suffixes


def visible_entries(folder: Path) -> list[Path]:
    """Entries of `folder` (files, folders, anything), sorted by name, hidden ones left out:
    for readers that walk a layout level by level and judge each entry themselves."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def image_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES, recursive: bool = True) -> list[Path]:
    """The regular files under `folder` (at any depth, or with `recursive=False` only directly
    in it) with one of `suffixes` (any case), hidden ones left out, sorted by relative path:
    the same listing wherever a folder is read."""
    entries = folder.rglob("*") if recursive else folder.iterdir()
    found = [p for p in entries if is_image_name(p, suffixes) and not is_hidden(p, folder) and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())
