"""Approximate indexes against exact search: build once, reuse, tune to a target recall.

    python bench/bench_approximate.py                     # 100k x 128 clustered, 1000 queries
    python bench/bench_approximate.py --rows 1000000 --factories IVF4096,Flat OPQ32,IVF4096,PQ32

For each factory, on synthetic clustered unit vectors (seeded; queries drawn near the same
centres): the first build of the saved index (`retrieval.search.approximate.saved.saved_index`), a
rerun's load of it (memory-mapped: what a run that changes only k or nprobe pays), the tuning
of its knob to `--target` recall@K (`retrieval.search.approximate.measured.prepare`: tuned on one
query sample, measured on another), and its search of every query against the exact search
(`retrieval.search.exact.exact_search`), with the recall@K of all queries. Timings are wall-clock on
whatever machine this runs on: the header prints the load average.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retrieval.features import Features  # noqa: E402
from retrieval.search.approximate.measured import Options, Run, prepare  # noqa: E402
from retrieval.search.approximate.recall import recall_at_k  # noqa: E402
from retrieval.search.approximate.saved import saved_index  # noqa: E402
from retrieval.search.approximate.shortlist import approximate_search  # noqa: E402
from retrieval.search.exact import exact_search  # noqa: E402


def clustered(n: int, centres: np.ndarray, rng: np.random.Generator, spread: float) -> np.ndarray:
    points = centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, centres.shape[1]))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--spread", type=float, default=0.25, help="noise around a centre (larger: harder)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--tune-queries", type=int, default=200)
    parser.add_argument("--factories", nargs="+", default=["IVF1024,Flat", "HNSW32"])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.clusters, args.dim))
    vectors = clustered(args.rows, centres, rng, args.spread)
    queries = clustered(args.queries, centres, rng, args.spread)
    gallery = Features([str(i) for i in range(args.rows)], vectors, np.arange(args.rows), np.ones(args.rows, bool))
    device = torch.device("cpu")
    print(f"{args.rows} x {args.dim} gallery, {args.queries} queries, k={args.k}, target recall@{min(args.k, 100)} "
          f"{args.target}; {args.threads} threads, load average {os.getloadavg()[0]:.1f}")

    exact, exact_s = timed(lambda: exact_search(queries, vectors, gallery.row_image, args.rows, args.k, device))
    print(f"{'Flat (exact)':>22s}  search {args.queries / exact_s:8.0f} q/s")
    options = Options(target_recall=args.target, tune_queries=args.tune_queries)
    run = Run(queries, np.ones(args.queries, bool), gallery, args.k, args.k)
    for factory in args.factories:
        with tempfile.TemporaryDirectory() as cache:
            folder = Path(cache)
            _, build_s = timed(lambda: saved_index(folder, vectors, factory, options.train_size, 0, False))
            index, load_s = timed(lambda: saved_index(folder, vectors, factory, options.train_size, 0, False))
            (index, report), tune_s = timed(lambda: prepare(index, folder, factory, run, {}, options, False, device))
            found, search_s = timed(lambda: approximate_search(index, queries, gallery.row_image, args.k, args.k))
            recall = recall_at_k(found.images, exact.images, min(args.k, 100))
            knobs = " ".join(f"{name}={value:g}" for name, value in report["params"].items())
            print(f"{factory:>22s}  build {build_s:7.1f} s  rerun load {1000 * load_s:6.1f} ms  tune {tune_s:6.1f} s "
                  f"({knobs})  search {args.queries / search_s:8.0f} q/s  recall@{report['k']} held-out "
                  f"{report['recall_at_k']:.3f}, all queries {recall:.3f}  index {report['index_bytes'] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
