"""A feature store: the rows of many items, in shards built independently, found by item key.

A store is a folder `<cache>/features/<key>/` whose key hashes what determines the rows
(model, representation, storage dtype, decoding limits), never the file list: any listing
of any dataset finds its items here by their keys (`retrieval.features.keys`), and only the
items no shard holds are extracted. Beside the shards sits `config.yaml`, the settings.

A shard (`shard-<hash>.npz`, plain numpy, written atomically) holds a batch of items:

| array          | shape / dtype        | meaning                                                  |
|----------------|----------------------|----------------------------------------------------------|
| `items`        | (n_items,) str       | item keys                                                |
| `valid`        | (n_items,) bool      | False = the item was skipped (its reason is in `errors`) |
| `counts`       | (n_items,) int64     | rows of each item (0 for a skipped one), in item order   |
| `vectors`      | (n_rows, D)          | L2-normalised, float32 or float16                        |
| `boxes`        | (n_rows, 4) f32      | region representations: xyxy in original pixels          |
| `sources`      | (n_rows,) int8       | region representations: index into `source_names`       |
| `masks`        | () str               | region representations: JSON list, RLE JSON or "" per row |
| `errors`       | () str               | JSON {item key: reason}                                  |
| `seconds`      | () float64           | wall time spent embedding the shard                      |

A shard's name hashes its item keys, so two processes that need the same items agree on the
shard and one waits for the other (a file lock per shard), while processes that need
different shards build them in parallel. A shard that is missing or cannot be read is
named in the log and its items are extracted again; nothing else is redone. So is a shard
whose items are not the ones its name promises (a copy of another shard, or a link to one):
it is set aside as `<name>.misnamed`, since its name would otherwise stand for items it
lacks forever. Set-aside shards are kept for inspection: `*.unreadable` (a damaged file,
its CRC-32 included, which a memory-mapped read checks once before mapping), `*.misnamed`,
and `*.corrupt` (vectors the search found corrupt: `Store.set_aside_item`).

Building is split so that an engine (`retrieval.features.engines`) can run the shards
anywhere: `plan` names the shards to build, `build_shard` builds one under its lock (in any
process that sees the folder), and `build_with` runs a plan through an engine's runner.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from retrieval.artifacts import atomic_path
from retrieval.errors import UserError
from retrieval.features import Features
from retrieval.features.mapped import MappedRows, Piece, locate_member, verify_member

log = logging.getLogger(__name__)
SHARD_GLOB = "shard-*.npz"


@dataclass
class ShardRows:
    """What one shard holds for its items (the arrays of the table above)."""

    items: list[str]
    valid: np.ndarray
    counts: np.ndarray
    vectors: np.ndarray
    errors: dict[str, str]
    seconds: float
    boxes: np.ndarray | None = None
    sources: np.ndarray | None = None
    source_names: list[str] | None = None
    masks: list[str] | None = None


def shard_name(item_keys: Sequence[str]) -> str:
    return "shard-" + hashlib.sha256("\n".join(item_keys).encode()).hexdigest()[:20] + ".npz"


def write_shard(path: Path, rows: ShardRows) -> None:
    arrays: dict[str, Any] = dict(
        items=np.asarray(rows.items, dtype=str),
        valid=rows.valid.astype(bool),
        counts=rows.counts.astype(np.int64),
        vectors=rows.vectors,
        errors=np.array(json.dumps(rows.errors)),
        seconds=np.array(rows.seconds, dtype=np.float64),
    )
    if rows.boxes is not None:
        arrays.update(
            boxes=rows.boxes.astype(np.float32),
            sources=rows.sources.astype(np.int8),
            source_names=np.array(json.dumps(rows.source_names)),
            masks=np.array(json.dumps(rows.masks)),
        )
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


ShardRunner = Callable[[list[list[str]], bool], Iterable[int | None]]
"""An engine's way of building shards: (chunks of item keys, wait) -> per chunk, in order, what
`Store.build_shard` returned for it (run wherever the engine runs it)."""

UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
"""What numpy raises on a truncated, corrupt or foreign .npz."""


class MissingVectors(UserError, RuntimeError):
    """Items of a listing that no readable shard holds: extraction has to run (again)."""


class ShardSetAside(MissingVectors):
    """A shard found damaged while it was read, and set aside: extracting again rebuilds it."""

    def __init__(self, shard: Path, why: str):
        super().__init__(f"shard {shard} {why}; it was set aside: run python extract.py again to re-extract its items")
        self.shard = shard


class Store:
    """The shards of one store folder, indexed by item key."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._where: dict[str, tuple[str, int]] = {}
        """item key -> (shard file name, position of the item in the shard)."""
        self._indexed: set[str] = set()

    def _refresh(self) -> None:
        """Index shards written since the last look (by this process or another); forget
        indexed shards that have since been deleted, so their items are extracted again."""
        present = sorted(self.folder.glob(SHARD_GLOB))
        gone = self._indexed - {path.name for path in present}
        for name in sorted(gone):
            log.warning("shard %s is gone; its items will be extracted again", self.folder / name)
        if gone:
            self._indexed -= gone
            self._where = {key: place for key, place in self._where.items() if place[0] not in gone}
        for path in present:
            if path.name in self._indexed:
                continue
            try:
                with np.load(path, allow_pickle=False) as data:
                    items = data["items"].tolist()
            except UNREADABLE as error:
                self._discard(path, error)
                continue
            if shard_name(items) != path.name:
                link = f", a link to {os.readlink(path)}" if path.is_symlink() else ""
                self._set_aside(path, "misnamed", f"holds the items of {shard_name(items)}, not its own{link}")
                continue
            self._indexed.add(path.name)
            for position, key in enumerate(items):
                self._where.setdefault(key, (path.name, position))

    def _discard(self, path: Path, error: BaseException) -> None:
        """Set an unreadable shard aside so its items are rebuilt."""
        self._set_aside(path, "unreadable", f"cannot be read ({type(error).__name__}: {error})")

    def _set_aside(self, path: Path, suffix: str, why: str) -> Path:
        """Rename shard `path` to `<name>.<suffix>` (kept for inspection), saying `why`, and forget
        its items, so they are extracted again. Returns the new path."""
        aside = path.with_name(f"{path.name}.{suffix}")
        try:
            path.replace(aside)
        except FileNotFoundError:  # another process set it aside first
            log.info("shard %s %s; already set aside", path, why)
        else:
            log.warning("shard %s %s; its items will be extracted again (moved to %s)", path, why, aside.name)
        self._indexed.discard(path.name)
        self._where = {key: place for key, place in self._where.items() if place[0] != path.name}
        return aside

    def set_aside_item(self, key: str, why: str) -> Path:
        """Set aside as corrupt the shard holding item `key`, whose vectors proved wrong (`why`),
        so its items are extracted again. Returns where the shard went."""
        self._refresh()
        if key not in self._where:
            raise MissingVectors(f"{self.folder} holds no vectors for {key}; run python extract.py")
        return self._set_aside(self.folder / self._where[key][0], "corrupt", why)

    def missing(self, keys: Sequence[str]) -> list[str]:
        """Distinct keys (first-seen order) that no readable shard holds."""
        self._refresh()
        return [key for key in dict.fromkeys(keys) if key not in self._where]

    @contextmanager
    def claim(self, name: str, wait: bool) -> Iterator[bool]:
        """Hold shard `name`'s lock; yields False when not waiting and another process holds it."""
        lock = FileLock(str(self.folder / f".{name}.lock"))
        try:
            lock.acquire(timeout=-1 if wait else 0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def plan(self, keys: Sequence[str], shard_size: int) -> list[list[str]]:
        """The shards to build: the missing keys, in listing order, `shard_size` at a time (so
        every engine, and every process, names the same shards for the same items)."""
        pending = self.missing(keys)
        chunks = [pending[start : start + shard_size] for start in range(0, len(pending), shard_size)]
        if pending:
            log.info("%s: %d of %d items to extract, in %d shard(s)", self.folder.name, len(pending), len(set(keys)), len(chunks))
        return chunks

    def build_shard(self, chunk: list[str], embed: Callable[[list[str]], ShardRows], wait: bool) -> int | None:
        """Build the shard of `chunk` under its lock, unless it exists. Returns the items
        embedded (0: it was there), or None when not waiting and another process holds it."""
        name = shard_name(chunk)
        with self.claim(name, wait) as mine:
            if not mine:
                return None
            if (self.folder / name).exists():
                return 0
            log.info("%s: building %s (%d items)", self.folder.name, name, len(chunk))
            write_shard(self.folder / name, embed(chunk))
            return len(chunk)

    def build(self, keys: Sequence[str], shard_size: int, embed: Callable[[list[str]], ShardRows]) -> int:
        """Make every key present, each missing shard embedded in this process by
        `embed(keys) -> ShardRows`. Returns the number of items this call embedded."""
        return self.build_with(keys, shard_size, lambda chunks, wait: (self.build_shard(chunk, embed, wait) for chunk in chunks))

    def build_with(self, keys: Sequence[str], shard_size: int, run: ShardRunner) -> int:
        """Make every key present: the shards of `plan`, built by `run` (an engine), the free
        ones first; shards another process was building are waited for after those. Returns
        the number of items this call embedded."""
        chunks = self.plan(keys, shard_size)
        embedded = 0
        for wait in (False, True):
            outcomes = list(run(chunks, wait))
            embedded += sum(outcome or 0 for outcome in outcomes)
            chunks = [chunk for chunk, outcome in zip(chunks, outcomes) if outcome is None]
        still = self.missing(keys)
        if still:
            raise RuntimeError(f"{self.folder}: {len(still)} items still missing after extraction (first: {still[0]})")
        return embedded

    def gather(self, keys: Sequence[str], image_keys: list[str], mapped: bool = False) -> Features:
        """The rows of `keys` (one item per image of the listing, in order) as Features; with
        `mapped`, their vectors stay in the shards (`MappedRows`), everything else is loaded."""
        self._refresh()
        missing = [key for key in keys if key not in self._where]
        if missing:
            raise MissingVectors(f"{self.folder} holds no vectors for {len(missing)} items (first: {missing[0]}); run python extract.py")
        by_shard: dict[str, list[int]] = {}
        for image, key in enumerate(keys):
            by_shard.setdefault(self._where[key][0], []).append(image)
        parts: dict[int, dict[str, Any]] = {}
        errors: dict[int, str] = {}
        seconds, embedded = 0.0, 0
        names: list[str] = []
        for name, images in by_shard.items():
            try:
                data = _read(self.folder / name, mapped)
            except UNREADABLE as error:
                self._discard(self.folder / name, error)
                raise ShardSetAside(self.folder / name, f"cannot be read ({error})") from error
            seconds += data["seconds"]
            embedded += len(data["items"])
            names = names or data.get("source_names") or []
            starts = np.concatenate([[0], np.cumsum(data["counts"])])
            for image in images:
                position = self._where[keys[image]][1]
                if not data["valid"][position]:
                    errors[image] = data["errors"].get(keys[image], "skipped")
                lo, hi = starts[position], starts[position + 1]
                parts[image] = {name: data[name][lo:hi] for name in ("boxes", "sources", "masks") if data.get(name) is not None}
                vectors = data["vectors"]
                parts[image]["vectors"] = Piece(vectors, int(lo), int(hi)) if mapped else vectors[lo:hi]
        order = [parts[i] for i in range(len(keys))]
        counts = np.array([p["vectors"].hi - p["vectors"].lo if mapped else len(p["vectors"]) for p in order], dtype=np.int64)
        localises = any("boxes" in p for p in order)
        return Features(
            keys=list(image_keys),
            vectors=_joined([p["vectors"] for p in order], mapped),
            row_image=np.repeat(np.arange(len(keys), dtype=np.int64), counts),
            valid=np.array([i not in errors for i in range(len(keys))], dtype=bool),
            errors=errors,
            boxes=np.concatenate([p["boxes"] for p in order]).reshape(-1, 4) if localises else None,
            sources=np.concatenate([p["sources"] for p in order]) if localises else None,
            source_names=names,
            masks=[m for p in order for m in p["masks"]] if localises else None,
            images_per_s=round(embedded / seconds, 2) if seconds > 0 else None,
        )


def _joined(parts: list[Any], mapped: bool) -> np.ndarray | MappedRows:
    """Per image, its vectors (or, `mapped`, its `Piece` of a shard) -> all rows in order."""
    shapes = [piece.layout.shape if mapped else piece.shape for piece in parts]
    dim = next((shape[1] for shape in shapes if len(shape) == 2), 0)
    if mapped:
        dtype = next((piece.layout.dtype for piece in parts if piece.hi > piece.lo), np.dtype(np.float32))
        return MappedRows(parts, dim, dtype)
    return np.concatenate([part.reshape(-1, dim) for part in parts]) if parts else np.zeros((0, dim), np.float32)


def _read(path: Path, mapped: bool = False) -> dict[str, Any]:
    """A shard's arrays, JSON fields decoded; with `mapped`, `vectors` is where they lie
    (`MemberLayout`), not the array."""
    with np.load(path, allow_pickle=False) as data:
        out = {name: data[name] for name in data.files if not (mapped and name == "vectors")}
    if mapped:
        out["vectors"] = locate_member(path, "vectors")
        verify_member(path, "vectors")
    out["items"] = out["items"].tolist()
    out["errors"] = json.loads(str(out["errors"]))
    out["seconds"] = float(out["seconds"])
    if "masks" in out:
        out["masks"] = np.asarray(json.loads(str(out["masks"])), dtype=object)
        out["source_names"] = json.loads(str(out["source_names"]))
    return out
