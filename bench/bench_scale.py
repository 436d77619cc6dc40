"""Exact search over a gallery left on disk, against faiss holding it in memory; and IVF-PQ.

    python bench/bench_scale.py                              # 1,000,000 x 512 float16, 10,000 queries
    python bench/bench_scale.py --n 100000 --queries 2000    # a quick look

Writes a seeded gallery as the feature store does (shards of `--shard-items` vectors, float16)
in a temporary folder: a mixture of Gaussians on the sphere, cluster sizes following a power
law and each cluster its own spread; the queries are noisy copies of gallery members. Then:

- exact: `retrieval.search.exact.exact_search` over the memory-mapped shards (`Store.gather(...,
  mapped=True)`), `search.memory_budget` a quarter of the gallery's bytes, in a fresh process
  (so no memory freed by earlier steps is reused unseen). Its peak is the process's resident
  high-water mark (VmHWM, reset through /proc/self/clear_refs just before the search) above
  its resident size then: anonymous memory and every file page mapped at the time, so the
  pages of the shards being read count while they are mapped (they are unmapped after each
  block); the page cache the kernel keeps of the files is not the process's and is not counted.
- faiss: `IndexFlatIP` holding the same vectors as float32 in memory, same queries and k.
- IVF-PQ (`--factory`, `--nprobe`): built with `retrieval.search.index.build_row_index` (as the
  pipeline builds it); recall@10 is
  the mean share of each query's exact top 10 it returns in its own top 10.

Prints each figure, the per-vector costs the README's 100M projection uses, and, last,
`exact_vs_faiss=<x> peak_over_gallery=<x> ivfpq_recall10=<x>`.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout without `pip install -e .`

from retrieval.search.approximate.recall import recall_at_k  # noqa: E402
from retrieval.features.mapped import MappedRows  # noqa: E402
from retrieval.features.store import ShardRows, Store, shard_name, write_shard  # noqa: E402
from retrieval.sizes import format_size  # noqa: E402


RANK = 16
"""Directions along which the members of a cluster vary."""


def item_keys(n: int) -> list[str]:
    return [f"vector-{i:09d}" for i in range(n)]


def write_gallery(folder: Path, n: int, dim: int, shard_items: int, seed: int) -> None:
    """The clustered gallery as float16 shards in `folder`. Like image embeddings, it has a low
    intrinsic dimension: a cluster (an object, a place) varies along a few directions of its
    own (`RANK`), plus a little isotropic noise."""
    rng = np.random.default_rng(seed)
    n_clusters = max(8, n // 500)
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 1.1  # a few large clusters, a long tail of small ones
    cluster = rng.choice(n_clusters, n, p=weights / weights.sum()).astype(np.int32)
    centres = _unit(rng.standard_normal((n_clusters, dim), dtype=np.float32))
    bases = rng.standard_normal((n_clusters, RANK, dim), dtype=np.float32) / np.sqrt(dim * RANK)
    spread = rng.uniform(0.4, 1.0, n_clusters).astype(np.float32)
    keys = item_keys(n)
    for lo in range(0, n, shard_items):
        hi = min(n, lo + shard_items)
        mine = cluster[lo:hi]
        shape = rng.standard_normal((hi - lo, RANK), dtype=np.float32) * spread[mine, None]
        noise = rng.standard_normal((hi - lo, dim), dtype=np.float32) * (0.1 / np.sqrt(dim))
        vectors = _unit(centres[mine] + np.einsum("nr,nrd->nd", shape, bases[mine]) + noise).astype(np.float16)
        rows = ShardRows(keys[lo:hi], np.ones(hi - lo, bool), np.ones(hi - lo, np.int64), vectors, {}, 1.0)
        write_shard(folder / shard_name(keys[lo:hi]), rows)


def make_queries(folder: Path, n: int, n_queries: int, seed: int) -> np.ndarray:
    """Noisy copies of random gallery members (float32, unit length)."""
    rng = np.random.default_rng(seed + 1)
    members = gallery_rows(folder, n)[np.sort(rng.choice(n, n_queries, replace=False))].astype(np.float32)
    noise = rng.standard_normal(members.shape, dtype=np.float32) * (0.2 / np.sqrt(members.shape[1]))
    return _unit(members + noise)


def gallery_rows(folder: Path, n: int) -> MappedRows:
    return Store(folder).gather(item_keys(n), item_keys(n), mapped=True).vectors


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def exact_run(folder: str, n: int, queries: np.ndarray, k: int, budget: int) -> dict:
    """In a fresh process: exact search over the mapped shards under `budget` bytes."""
    import torch

    from retrieval.search.exact import exact_search

    gallery = Store(Path(folder)).gather(item_keys(n), item_keys(n), mapped=True)
    exact_search(queries[:64], gallery.vectors, gallery.row_image, n, k, memory_budget=budget)  # warm: threads, first maps
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = _status_kb("VmRSS")
    started = time.perf_counter()
    hits = exact_search(queries, gallery.vectors, gallery.row_image, n, k, memory_budget=budget)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "peak_bytes": (_status_kb("VmHWM") - before) << 10, "images": hits.images,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="gallery vectors")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--shard-items", type=int, default=1024, help="vectors per shard (extract.shard_size)")
    parser.add_argument("--factory", default="IVF1024,PQ64")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--rescore", type=int, default=400, help="IVF-PQ shortlist re-scored exactly from the shards (index.rescore)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="where the gallery is written (default: a temp folder)")
    args = parser.parse_args()

    import faiss

    from retrieval.search.approximate.shortlist import rescore
    from retrieval.search.index import build_row_index

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        write_gallery(folder, args.n, args.dim, args.shard_items, args.seed)
        queries = make_queries(folder, args.n, args.queries, args.seed)
        gallery_bytes = args.n * args.dim * 2
        on_disk = sum(path.stat().st_size for path in folder.glob("shard-*.npz"))
        print(f"gallery: {args.n} x {args.dim} float16 = {format_size(gallery_bytes)} in {len(list(folder.glob('shard-*.npz')))} "
              f"shards ({format_size(on_disk)} on disk), {args.queries} queries, k={args.k}; written in {time.perf_counter() - started:.0f}s")

        budget = gallery_bytes // 4
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            exact = pool.apply(exact_run, (str(folder), args.n, queries, args.k, budget))
        exact_qps = args.queries / exact["seconds"]
        peak_ratio = exact["peak_bytes"] / gallery_bytes
        print(f"exact, memory-mapped shards, search.memory_budget={format_size(budget)}: {exact['seconds']:.1f}s = "
              f"{exact_qps:.0f} queries/s ({exact['threads']} threads); peak resident added "
              f"{format_size(exact['peak_bytes'])} = {peak_ratio:.3f}x the gallery")

        vectors = np.asarray(gallery_rows(folder, args.n), dtype=np.float32)
        flat = faiss.IndexFlatIP(args.dim)
        flat.add(vectors)
        started = time.perf_counter()
        _, faiss_ids = flat.search(queries, args.k)
        faiss_seconds = time.perf_counter() - started
        faiss_qps = args.queries / faiss_seconds
        agree = float(np.mean(np.sort(faiss_ids, 1) == np.sort(exact["images"], 1)))
        print(f"faiss IndexFlatIP, float32 in memory ({format_size(vectors.nbytes)}): {faiss_seconds:.1f}s = {faiss_qps:.0f} "
              f"queries/s ({faiss.omp_get_max_threads()} threads); same top-{args.k} as exact: {agree:.4f}")
        del flat

        started = time.perf_counter()
        index = build_row_index(vectors, args.factory, {"nprobe": args.nprobe}, use_gpu=False)
        build_seconds = time.perf_counter() - started
        index_bytes = len(faiss.serialize_index(index))
        del vectors
        started = time.perf_counter()
        _, approx = index.search(queries, 10)
        ivf_seconds = time.perf_counter() - started
        truth = exact["images"][:, :10]
        raw_recall = recall_at_k(approx, truth, 10)
        print(f"{args.factory} nprobe={args.nprobe}: recall@10 {raw_recall:.4f}, {args.queries / ivf_seconds:.0f} queries/s, "
              f"built in {build_seconds:.0f}s (trained on {min(args.n, 100_000)}, {args.n} added), index {format_size(index_bytes)}")
        started = time.perf_counter()
        _, shortlist = index.search(queries, args.rescore)
        _, rescored = rescore(queries, shortlist, gallery_rows(folder, args.n))
        rescore_seconds = time.perf_counter() - started
        recall = recall_at_k(rescored, truth, 10)
        print(f"{args.factory} nprobe={args.nprobe}, its top {args.rescore} re-scored exactly from the memory-mapped shards: "
              f"recall@10 {recall:.4f}, {args.queries / rescore_seconds:.0f} queries/s")

        print(f"per vector: exact {1e9 * exact['seconds'] / (args.queries * args.n):.3f} ns per query, "
              f"{2 * args.dim} B on disk; {args.factory}: {index_bytes / args.n:.1f} B of index, "
              f"{1e6 * build_seconds / args.n:.1f} us to build, {1e9 * ivf_seconds / (args.queries * args.n):.4f} ns per query")
        print(f"exact_vs_faiss={exact_qps / faiss_qps:.3f} peak_over_gallery={peak_ratio:.3f} ivfpq_recall10={recall:.4f}")


if __name__ == "__main__":
    main()
