"""The approximate index as an artifact of the gallery: `<cache>/indexes/<key>/index.faiss`.

Its key is what its content depends on (the gallery's store and listing, the factory, the
training sample's size and seed), never the depth or the search-time knobs, so a run that
changes only those reuses it. It is built once under a lock and written atomically (a killed
build leaves nothing half-written to reuse), and read back memory-mapped where faiss can, so
reruns neither rebuild nor copy the inverted lists into memory.

Its meta.json records the file's size, modification time and digest. A read checks the size,
and the digest whenever the file was modified since it was written (so an untouched index
costs a rerun one stat, not a pass over its bytes): a file that is gone, truncated or
written over, or that is not the gallery's (faiss cannot read it, or it holds other rows or
another dimension), is set aside as `index.faiss.damaged` and rebuilt, with a warning, as an
unreadable shard is.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from filelock import FileLock

from retrieval import artifacts
from retrieval.search.approximate.knobs import inner_index
from retrieval.search.index import build_row_index, save_index

log = logging.getLogger(__name__)
INDEX = "index.faiss"
DAMAGED = INDEX + ".damaged"


class DamagedIndex(Exception):
    """A saved index that cannot serve the gallery it was built for; the message says why."""


def index_folder(cache: Path, gallery: dict[str, Any], factory: str, train_size: int, seed: int) -> Path:
    """The folder of the index of `gallery` (its store's settings and listing digest)."""
    settings = {"stage": "index", "gallery": gallery, "factory": factory, "train_size": train_size, "seed": seed}
    return artifacts.artifact_dir(Path(cache), "indexes", settings)


def saved_index(folder: Path, vectors: np.ndarray, factory: str, train_size: int, seed: int, use_gpu: bool | None) -> faiss.Index:
    """The index of `vectors` saved in `folder`, built there first if missing or damaged (on
    the GPUs `use_gpu` allows); read back from the file either way, one path for a first run
    and a rerun, on the CPU: `measured.prepare` moves it."""
    n_rows, dim = len(vectors), int(vectors.shape[1])

    def build(out: Path) -> None:
        started = time.perf_counter()
        index = build_row_index(vectors, factory, use_gpu=use_gpu, train_size=train_size, seed=seed)
        save_index(index, out / INDEX)
        written = (out / INDEX).stat()
        artifacts.write_meta(out, factory=factory, n_rows=n_rows, dim=dim, train_size=train_size,
                             seed=seed, build_seconds=round(time.perf_counter() - started, 3),
                             index_bytes=written.st_size, index_mtime_ns=written.st_mtime_ns,
                             sha256=artifacts.file_digest(out / INDEX))

    folder = Path(folder)
    artifacts.build_once(folder, build, "index")
    try:
        return read_checked(folder, n_rows, dim)
    except DamagedIndex:
        return _rebuilt(folder, build, n_rows, dim)


def _rebuilt(folder: Path, build: Callable[[Path], None], n_rows: int, dim: int) -> faiss.Index:
    """The index of `folder` rebuilt, its damaged file set aside (for inspection), unless
    another run rebuilt it meanwhile: one run rebuilds it, the others wait, then read it."""
    with FileLock(str(folder / artifacts.LOCK)):
        try:
            return read_checked(folder, n_rows, dim)
        except DamagedIndex as damage:
            kept = ""
            if (folder / INDEX).exists():
                (folder / INDEX).replace(folder / DAMAGED)
                kept = f" (the damaged file is kept as {DAMAGED})"
            (folder / artifacts.META).unlink(missing_ok=True)
            log.warning("index: %s %s; rebuilding it%s", folder / INDEX, damage, kept)
            build(folder)
    return read_checked(folder, n_rows, dim)


def read_checked(folder: Path, n_rows: int, dim: int) -> faiss.Index:
    """The index saved in `folder` (`read_mapped`), after checking that it is the file its
    meta.json describes (its size; its digest, where recorded, once it was modified since)
    and that it holds `n_rows` vectors of `dim` dimensions; a DamagedIndex saying what is
    wrong otherwise. The file is checked before faiss reads it, since faiss may crash on a
    damaged file rather than raise."""
    path = Path(folder) / INDEX
    try:
        meta = artifacts.read_meta(folder)
    except FileNotFoundError:
        raise DamagedIndex("has no meta.json (a rebuild was cut short)") from None
    if not path.is_file():
        raise DamagedIndex("is missing")
    found = path.stat()
    if found.st_size != meta["index_bytes"]:
        raise DamagedIndex(f"has {found.st_size} bytes where {meta['index_bytes']} were written")
    modified = found.st_mtime_ns != meta.get("index_mtime_ns")
    if modified and "sha256" in meta and artifacts.file_digest(path) != meta["sha256"]:
        raise DamagedIndex("was modified and does not match the digest written with it")
    try:
        index = read_mapped(path)
    except RuntimeError as error:
        raise DamagedIndex(f"cannot be read by faiss ({str(error).strip().splitlines()[-1]})") from None
    if index.ntotal != n_rows or index.d != dim:
        raise DamagedIndex(f"holds {index.ntotal} vectors of {index.d} dimensions, the gallery {n_rows} of {dim}")
    return index


def read_mapped(path: Path) -> faiss.Index:
    """A saved index with its inverted lists memory-mapped (read-only) where it has any; other
    index types (HNSW graphs, flat or PQ codes) faiss reads into memory, which is logged."""
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    if not isinstance(inner_index(index), faiss.IndexIVF):
        log.info("index: %s is a %s, read into memory (faiss memory-maps only IVF inverted lists)",
                 path, type(faiss.downcast_index(index)).__name__)
    return index

