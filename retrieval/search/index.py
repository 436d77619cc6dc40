"""FAISS indexes: the one builder (what the pipeline runs), top-K search, GPUs, saving.

Vectors are L2-normalised, so inner product is cosine similarity. A factory string
("IVF1024,PQ32", "HNSW32", ...) selects an approximate index for large galleries; evaluation
numbers should come from the exact one ("Flat", which the pipeline searches blockwise:
`retrieval.search.exact`). Equal scores are re-ordered by gallery
index so results never depend on the index type or the device.
"""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from retrieval.errors import UserError

try:
    import faiss
except ImportError as error:  # the two builds are extras; the message says which to pick
    raise ImportError(
        "FAISS is missing: pip install -e '.[cpu]' (or '.[gpu]' on a CUDA machine)"
    ) from error

log = logging.getLogger(__name__)


def gpu_count() -> int:
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


class TooFewTrainingVectors(UserError, ValueError):
    """A factory whose k-means has more centroids than there are vectors to train it on."""


def wants_gpu(use_gpu: bool | None) -> bool:
    """`index.gpu`: true, false, or None for "when faiss sees a GPU"."""
    return bool(use_gpu) if use_gpu is not None else gpu_count() > 0


def build_row_index(
    vectors: np.ndarray,
    factory: str,
    search_params: Mapping[str, float] | None = None,
    use_gpu: bool | None = None,
    add_block: int = 100_000,
    train_size: int = 100_000,
    seed: int = 0,
) -> faiss.Index:
    """Index `vectors` (n x d rows, float16 or memory-mapped allowed) for inner-product search:
    trained on a seeded sample of all rows, moved to the GPUs `use_gpu` allows while still
    empty (so the rows are encoded there, and the host never holds a filled float32 copy),
    then filled block by block, so one float32 block of `add_block` rows exists at a time.

    `search_params` are faiss ParameterSpace settings of the index type, the knobs that trade
    speed for recall: {"nprobe": 32} for IVF, {"efSearch": 128} for HNSW."""
    index = trained_index(vectors, factory, train_size, seed)
    if wants_gpu(use_gpu):
        index = to_gpu(index)
    for start in range(0, len(vectors), add_block):
        index.add(np.ascontiguousarray(vectors[start : start + add_block], dtype=np.float32))
    set_search_params(index, search_params or {})
    return index


def trained_index(vectors: np.ndarray, factory: str, train_size: int = 100_000, seed: int = 0) -> faiss.Index:
    """An empty index of `factory`, trained on a seeded sample of `train_size` of `vectors`
    (any array of rows, float16 or memory-mapped: only the sample is read, as float32), so
    the sample covers the whole gallery and not just its first files.

    Fewer training vectors than a k-means of the factory has centroids (IVF<lists>; PQ<m>x<bits>
    has 2**bits per sub-quantiser) is a TooFewTrainingVectors, raised before faiss fails; fewer
    than faiss's minimum per centroid is a warning. Both name a factory whose k-means get that
    minimum (so it trains without the warning), as an override that pastes into a shell, or
    index=flat alone when the vectors are too few for any."""
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        n_train = min(len(vectors), train_size)
        per_centroid = faiss.ClusteringParameters().min_points_per_centroid

        def short(spec: str, fits: int) -> list[tuple[str, int]]:
            """(part, centroids) of each k-means in `spec` with more than `fits` centroids."""
            parts = [(m[0], int(m[1])) for m in re.finditer(r"IVF(\d+)", spec)]
            parts += [(m[0], 2 ** int(m[2] or 8)) for m in re.finditer(r"PQ(\d+)(?:x(\d+))?", spec)]
            return [(part, centroids) for part, centroids in parts if centroids > fits]

        def smaller(fits: int) -> str | None:
            """`factory` with fewer IVF lists and PQ bits, so no k-means has over `fits` centroids
            (None if there is none: OPQ's own PQ cannot shrink)."""
            if fits < 2:
                return None
            bits = int(math.log2(fits))
            spec = re.sub(r"IVF(\d+)", lambda m: m[0] if int(m[1]) <= fits else f"IVF{2 ** bits}", factory)
            spec = re.sub(r"(?<!O)PQ(\d+)(?:x(\d+))?",
                          lambda m: m[0] if 2 ** int(m[2] or 8) <= fits else f"PQ{m[1]}x{bits}", spec)
            return None if short(spec, fits) else spec

        have = (
            f"the gallery has {n_train}" if n_train == len(vectors)
            else f"the training sample has {n_train} (train_size)"
        )
        fitting = smaller(n_train // per_centroid)  # trains without faiss's warnings
        if short(factory, n_train):
            part, centroids = short(factory, n_train)[0]
            advice = "use index=flat"
            if fitting:
                advice += f" or a smaller factory such as {factory_override(fitting)}"
            raise TooFewTrainingVectors(f"{part} needs at least {centroids} training vectors, {have}; {advice}")
        if short(factory, n_train // per_centroid):
            part, centroids = short(factory, n_train // per_centroid)[0]
            log.warning(
                "%s trains %d centroids on %d vectors, under faiss's %d per centroid, so recall suffers%s",
                part, centroids, n_train, per_centroid, f"; {factory_override(fitting)} fits" if fitting else "",
            )
        rows = np.arange(len(vectors))
        if len(vectors) > train_size:
            rows = np.sort(np.random.default_rng(seed).choice(len(vectors), train_size, replace=False))
        index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))
    return index


def factory_override(factory: str) -> str:
    """The command-line words that set index.factory to `factory`, quoted for both bash and
    Hydra (Hydra reads a bare comma as a sweep, and bash strips the inner quotes unprotected);
    an IVF factory adds an nprobe it accepts (the config refuses more than its lists, which the
    `ivfpq` preset's 32 is for a small IVF): every list, as a gallery this small costs nothing."""
    lists = re.search(r"IVF(\d+)", factory)
    probe = f" index.search_params.nprobe={lists[1]}" if lists and int(lists[1]) < 32 else ""
    return f"\"index.factory='{factory}'\"{probe}"


def set_search_params(index: faiss.Index, params: Mapping[str, float]) -> None:
    """Set faiss ParameterSpace knobs (nprobe, efSearch, ...) on a CPU or GPU index: faiss-gpu's
    GpuParameterSpace reaches GPU indexes (and their shards), and falls back to the CPU rules."""
    space = faiss.GpuParameterSpace() if hasattr(faiss, "GpuParameterSpace") else faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, float(value))


def to_gpu(index: faiss.Index) -> faiss.Index:
    """Move an index onto every GPU faiss sees (sharded when there are several)."""
    if gpu_count() == 0:
        raise RuntimeError("index.gpu=true but faiss sees no GPU (install faiss-gpu on a CUDA machine)")
    options = faiss.GpuMultipleClonerOptions()
    options.shard = gpu_count() > 1
    log.info("moving the index to %d GPU(s)", gpu_count())
    return faiss.index_cpu_to_all_gpus(index, co=options)


def save_index(index: faiss.Index, path: Path) -> None:
    from retrieval.artifacts import atomic_path

    if hasattr(faiss, "index_gpu_to_cpu") and not isinstance(index, faiss.IndexFlat):
        try:
            index = faiss.index_gpu_to_cpu(index)
        except (RuntimeError, AttributeError):
            pass
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def load_index(path: Path, use_gpu: bool | None = None) -> faiss.Index:
    index = faiss.read_index(str(path))
    return to_gpu(index) if wants_gpu(use_gpu) else index


def sort_ties(scores: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by score descending, then gallery index ascending; -1 padding last."""
    key_index = np.where(indices < 0, np.iinfo(np.int64).max, indices)
    key_score = np.where(indices < 0, np.inf, -scores.astype(np.float64))
    order = np.lexsort((key_index, key_score), axis=1)
    return np.take_along_axis(scores, order, 1), np.take_along_axis(indices, order, 1)


def search(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    block_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` (scores, indices) per query, searched in blocks so memory stays bounded.

    Asks the index for a few extra neighbours, and more while a tie straddles the k-th place,
    so ties are resolved by gallery index rather than by the index's internal order."""
    n = index.ntotal
    k = min(k, n)
    probe = min(n, k + 16)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    all_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    all_indices = np.full((len(queries), k), -1, dtype=np.int64)
    for start in range(0, len(queries), block_size):
        block = queries[start : start + block_size]
        scores, indices = top_k_in_tie_order(
            lambda rows, depth: index.search(block[rows], depth), np.arange(len(block)), k, probe, n
        )
        all_scores[start : start + len(block)] = scores
        all_indices[start : start + len(block)] = indices
    return all_scores, all_indices


RowSearch = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""(rows, depth) -> the (scores, ids) of the best `depth` candidates of those rows, in any
order within a tie; ids -1 for padding."""


def top_k_in_tie_order(search_rows: RowSearch, rows: np.ndarray, k: int, probe: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` of each of `rows`, ties broken by lower id, from a search that keeps an arbitrary
    part of a tie: rows whose k-th score is still tied at the last probed place are searched
    again with twice the depth, up to all `total` candidates."""
    scores, ids = sort_ties(*search_rows(rows, probe))
    open_tie = (ids[:, -1] >= 0) & (scores[:, -1] == scores[:, k - 1])
    if probe < total and open_tie.any():
        deeper = top_k_in_tie_order(search_rows, rows[open_tie], k, min(total, 2 * probe), total)
        scores[open_tie, :k], ids[open_tie, :k] = deeper
    return scores[:, :k], ids[:, :k]
