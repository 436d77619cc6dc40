"""Dataset adapters, one per on-disk format, resolved by name.

Each adapter is a function `load(**settings) -> Dataset` registered with `@register("name")`;
its docstring's first line describes it in error messages and `python -m retrieval.datasets list`.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval.records import Dataset
from retrieval.registry import Registry

LOADERS: Registry[Callable[..., Dataset]] = Registry(
    "dataset format", __name__, ("folder", "anns", "compose", "revisitop", "vpr", "gl3d", "patterncom")
)
register = LOADERS.register
available = LOADERS.available

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""Files a user's folder of photos is read for (what `retrieval.images.open_image` decodes)."""


def is_hidden(path: Path, root: Path) -> bool:
    """Whether a part of `path` below `root` starts with "." (".DS_Store", "._photo.jpg" macOS
    resource forks, ".thumbnails/"): no dataset's images live there, as `glob` agrees."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def image_files(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """The regular files under `folder`, at any depth, with one of `suffixes` (any case), hidden
    ones left out, sorted by relative path: the same listing wherever the folder is read."""
    found = [p for p in folder.rglob("*") if p.suffix.lower() in suffixes and not is_hidden(p, folder) and p.is_file()]
    return sorted(found, key=lambda p: p.relative_to(folder).as_posix())


def load_dataset(format: str, **settings: Any) -> Dataset:
    """Load a dataset with the adapter registered as `format`."""
    return LOADERS.get(format)(**settings)
