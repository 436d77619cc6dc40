"""The approximate index as an artifact of the gallery: `<cache>/indexes/<key>/index.faiss`.

Its key is what its content depends on (the gallery's store and listing, the factory, the
training sample's size and seed), never the depth or the search-time knobs, so a run that
changes only those reuses it. It is built once under a lock and written atomically (a killed
build leaves nothing half-written to reuse), and read back memory-mapped where faiss can, so
reruns neither rebuild nor copy the inverted lists into memory.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from retrieval import artifacts
from retrieval.search.approximate.knobs import inner_index
from retrieval.search.index import build_row_index, save_index

log = logging.getLogger(__name__)
INDEX = "index.faiss"


def index_folder(cache: Path, gallery: dict[str, Any], factory: str, train_size: int, seed: int) -> Path:
    """The folder of the index of `gallery` (its store's settings and listing digest)."""
    settings = {"stage": "index", "gallery": gallery, "factory": factory, "train_size": train_size, "seed": seed}
    return artifacts.artifact_dir(Path(cache), "indexes", settings)


def saved_index(folder: Path, vectors: np.ndarray, factory: str, train_size: int, seed: int, use_gpu: bool | None) -> faiss.Index:
    """The index of `vectors` saved in `folder`, built there first if missing (on the GPUs
    `use_gpu` allows); read back from the file either way, one path for a first run and a
    rerun, on the CPU: `measured.prepare` moves it."""

    def build(out: Path) -> None:
        started = time.perf_counter()
        index = build_row_index(vectors, factory, use_gpu=use_gpu, train_size=train_size, seed=seed)
        save_index(index, out / INDEX)
        artifacts.write_meta(out, factory=factory, n_rows=len(vectors), dim=int(vectors.shape[1]), train_size=train_size,
                             seed=seed, build_seconds=round(time.perf_counter() - started, 3),
                             index_bytes=(out / INDEX).stat().st_size)

    artifacts.build_once(folder, build, "index")
    return read_mapped(folder / INDEX)


def read_mapped(path: Path) -> faiss.Index:
    """A saved index with its inverted lists memory-mapped (read-only) where it has any; other
    index types (HNSW graphs, flat or PQ codes) faiss reads into memory, which is logged."""
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    if not isinstance(inner_index(index), faiss.IndexIVF):
        log.info("index: %s is a %s, read into memory (faiss memory-maps only IVF inverted lists)",
                 path, type(faiss.downcast_index(index)).__name__)
    return index

