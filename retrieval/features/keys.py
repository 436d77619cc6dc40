"""What identifies an item in a feature store, so that work is found again, and only then.

An image's key is its path relative to the dataset root (absolute when it lies outside),
its size in bytes and its modification time in nanoseconds. So:

- moving or renaming the dataset root keeps every vector (the relative paths and the
  files' times do not change with `mv`, `cp -a` or `rsync -a`);
- adding images to a gallery, or a distractor set to a benchmark, extracts only those;
- overwriting a file under the same name changes its size or time, so it is re-extracted.

The file is not hashed: reading a million images to hash them costs about as much as
embedding them. A copy that does not keep times (`cp -r`) is re-extracted once.

A query's key adds what its query mode cuts out: the mode, its options and the
annotations it reads (box values; a mask's own file key or content hash). A query whose
mode returns the whole image (`query=full`, or `box` on an image without a box) has its
image's key, so leave-one-out queries reuse the gallery's vectors.

A query's words (text and composed queries) are an item of their own, keyed by a hash of
the text alone: the same sentence is embedded once per text tower, whichever query, file or
dataset it comes from.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.queries import QueryFn, returns_whole_image
from retrieval.records import Instance, Record


@dataclass(frozen=True)
class Item:
    """One thing to embed: a gallery image, a query's cut-out of its image, or a query's words."""

    key: str
    path: Path
    instance: Instance | None = None
    """The query's object; None for gallery images (embedded whole)."""
    text: str = ""
    """A text item's words (its `path` is then the query's, for messages only)."""


def file_key(path: Path, root: Path) -> str:
    """`relative/path|size|mtime_ns` (`|missing` when the path cannot be stat'ed)."""
    path = Path(path)
    try:
        name = path.resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        name = str(path.resolve())
    try:
        stat = os.stat(path)
    except OSError:
        return f"{name}|missing"
    return f"{name}|{stat.st_size}|{stat.st_mtime_ns}"


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def mask_key(mask: Any, root: Path) -> str | None:
    """A mask as it is referenced: a file by its file key, an RLE or array by its content."""
    if mask is None:
        return None
    if isinstance(mask, (str, Path)):
        return file_key(Path(mask), root)
    if isinstance(mask, np.ndarray):
        packed = np.packbits(np.asarray(mask, dtype=bool))
        return f"{mask.shape}:{hashlib.sha256(packed.tobytes()).hexdigest()[:16]}"
    return _digest(mask)


def gallery_items(records: list[Record], root: Path) -> list[Item]:
    return [Item(file_key(r.path, root), r.path) for r in records]


def text_key(text: str) -> str:
    """`text|<sha256 of the UTF-8 text>`: the words exactly as given (the tokenizer, part of the
    store's key, decides what case and spacing mean)."""
    return "text|" + hashlib.sha256(text.encode()).hexdigest()[:32]


def text_items(records: list[Record]) -> list[Item]:
    """The words of each query, one item each, keyed by their hash."""
    return [Item(text_key(r.text), r.path, text=r.text) for r in records]


def query_items(records: list[Record], root: Path, mode_name: str, mode: QueryFn, options: dict[str, Any]) -> list[Item]:
    """Items of the queries cut out by `mode` (with `options`); whole-image cut-outs share the
    image's key."""
    items = []
    for record in records:
        instance = record.instances[0] if record.instances else None
        image = file_key(record.path, root)
        if returns_whole_image(mode, instance):
            items.append(Item(image, record.path, instance))
            continue
        cutout = {
            "mode": mode_name,
            "options": options,
            "box": None if instance is None or instance.box is None else [float(v) for v in instance.box],
            "mask": None if instance is None else mask_key(instance.mask, root),
        }
        items.append(Item(f"{image}#{_digest(cutout)}", record.path, instance))
    return items
