"""Where the time goes, measured in one run: decoding overhead of extraction, search overhead, memory.

    python bench/bench_pipeline.py --data ~/eth80          # ETH-80, 512 images, 100k x 1280 gallery
    python bench/bench_pipeline.py --data ~/photos --limit 2000 --gallery 1000000 --device cuda

--data is a folder dataset (<data>/images/<instance>/*.png|jpg); --help says how to get ETH-80.

Extraction: `retrieval.features.extract.fill_store` with the `global` representation (DataLoader
workers decode and resize, the model embeds, shards are written to a feature store) against the
same model's forward pass on the same images decoded beforehand; their ratio is the loading
overhead. Search: the pipeline's exact search over rows (`retrieval.search.rank.rank_images`, one
row per image) and `retrieval.search.index.search` (what approximate indexes go through, on a Flat index)
against a bare faiss `IndexFlatIP.search` on the same synthetic vectors; the ratios are the cost
of tie ordering and blocking. Numbers from a machine that is busy with other work are not
comparable: the header prints the load average.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.eth80 import add_data_option  # noqa: E402
from retrieval.datasets import load_dataset  # noqa: E402
from retrieval.device import autocast, resolve_device  # noqa: E402
from retrieval.features import Features  # noqa: E402
from retrieval.features.extract import fill_store  # noqa: E402
from retrieval.features.keys import gallery_items  # noqa: E402
from retrieval.features.store import Store  # noqa: E402
from retrieval.models import Embedder, create_model  # noqa: E402
from retrieval.models.transform import normalise  # noqa: E402
from retrieval.representations import create_representation  # noqa: E402
from retrieval.search.index import build_row_index, search  # noqa: E402
from retrieval.search.rank import rank_images  # noqa: E402

MAX_PIXELS = int(OmegaConf.load(REPO / "conf" / "config.yaml").extract.max_pixels)
"""The decoding limit the pipeline runs with (`extract.max_pixels`)."""


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_option(parser, help="a folder dataset: <data>/images/<instance>/*.png|jpg, e.g. ETH-80 (see below)")
    parser.add_argument("--limit", type=int, default=512, help="images to embed")
    parser.add_argument("--family", default="effnet_lite", help="model family (retrieval.models)")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the pipeline run")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--gallery", type=int, default=100_000, help="synthetic gallery vectors")
    parser.add_argument("--queries", type=int, default=1_000, help="synthetic query vectors")
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--block-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and faiss threads (default: theirs); 1 on a machine shared with other jobs")
    return parser.parse_args()


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_only(model: Embedder, pixels: torch.Tensor, args: argparse.Namespace, device: torch.device) -> float:
    """Seconds to embed already decoded uint8 images, doing on the device what extraction does."""
    synchronise(device)
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(pixels), args.batch_size):
            batch = pixels[start : start + args.batch_size].to(device, non_blocking=True)
            with autocast(device, args.precision):
                vectors = model(normalise(batch, model.preprocess))
            torch.nn.functional.normalize(vectors.float(), dim=1).cpu()
    synchronise(device)
    return time.perf_counter() - started


def bench_extraction(args: argparse.Namespace, device: torch.device) -> list[tuple[str, int, float]]:
    dataset = load_dataset("folder", root=args.data)
    items = gallery_items(dataset.gallery[: args.limit], dataset.root)
    model = create_model(args.family, input_size=args.input_size).to(device).eval()
    representation = create_representation("global", max_pixels=MAX_PIXELS)
    decoded = representation.worker_dataset(items, model)
    warm = torch.stack([decoded[i]["pixels"] for i in range(min(args.batch_size, len(items)))])
    forward_only(model, warm, args, device)  # first-call kernel selection is not loading overhead

    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        fill_store(Store(Path(folder)), items, representation, model, device=device, precision=args.precision,
                   batch_size=args.batch_size, workers=args.workers, shard_size=1024, dtype="float32", desc="pipeline")
        pipeline = time.perf_counter() - started
    prepared = [decoded[i] for i in range(len(items))]
    if any(p["error"] for p in prepared):
        raise SystemExit(f"{sum(bool(p['error']) for p in prepared)} images of {args.data} cannot be read; "
                         f"the forward-only run needs every image (first: {next(p['error'] for p in prepared if p['error'])})")
    pixels = torch.stack([p["pixels"] for p in prepared])
    if device.type == "cuda":
        pixels = pixels.pin_memory()
    forward = forward_only(model, pixels, args, device)
    return [
        (f"extract: pipeline (workers={args.workers})", len(items), pipeline),
        ("extract: forward only, pre-decoded", len(items), forward),
    ]


def bench_search(args: argparse.Namespace, device: torch.device) -> list[tuple[str, int, float]]:
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((args.gallery, args.dim), dtype=np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    index = build_row_index(gallery, "Flat")
    raw = faiss.IndexFlatIP(args.dim)
    raw.add(gallery)
    raw.search(queries[:10], args.k)  # warm-up
    rows = Features(keys=[str(i) for i in range(args.gallery)], vectors=gallery,
                    row_image=np.arange(args.gallery, dtype=np.int64), valid=np.ones(args.gallery, bool))

    started = time.perf_counter()
    hits = rank_images(queries, rows, args.k, "Flat", device=device, block_size=args.block_size)
    rows_seconds = time.perf_counter() - started
    started = time.perf_counter()
    ours = search(index, queries, args.k, block_size=args.block_size)
    ours_seconds = time.perf_counter() - started
    started = time.perf_counter()
    _, bare = raw.search(queries, args.k)
    raw_seconds = time.perf_counter() - started
    agree_rows, agree = float(np.mean(hits.images == bare)), float(np.mean(ours[1] == bare))
    return [
        (f"search: retrieval.search.rank.rank_images (k={args.k}, same top-k: {agree_rows:.1%})", args.queries, rows_seconds),
        (f"search: retrieval.search.index.search (k={args.k}, same top-k: {agree:.1%})", args.queries, ours_seconds),
        ("search: faiss IndexFlatIP.search", args.queries, raw_seconds),
    ]


def table(rows: list[tuple[str, int, float]]) -> str:
    width = max(len(name) for name, _, _ in rows) + 2
    lines = [f"{'':{width}s}{'items':>8s}{'seconds':>10s}{'items/s':>10s}"]
    lines += [f"{name:{width}s}{n:8d}{s:10.2f}{n / s:10.1f}" for name, n, s in rows]
    return "\n".join(lines)


def main() -> None:
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, faiss threads {faiss.omp_get_max_threads()}, "
          f"cores {os.cpu_count()}, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(f"gallery {args.gallery} x {args.dim}, {args.queries} queries; images from {args.data}, "
          f"{args.family} at {args.input_size} px, batch {args.batch_size}\n")
    extraction = bench_extraction(args, device)
    searching = bench_search(args, device)
    print(table(extraction + searching))
    (_, n, pipeline), (_, _, forward) = extraction
    (_, _, rows), (_, _, ours), (_, _, raw) = searching
    print(f"\nloading overhead: pipeline takes {pipeline / forward:.2f}x the forward pass alone")
    print(f"search overhead:  retrieval.search.rank.rank_images takes {rows / raw:.2f}x bare faiss, "
          f"retrieval.search.index.search {ours / raw:.2f}x")
    to_mib = 1 / 1024  # ru_maxrss is in KiB on Linux
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mib
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mib
    print(f"peak memory: this process {self_peak:.0f} MiB, largest DataLoader worker {child_peak:.0f} MiB")
    if device.type == "cuda":
        print(f"peak CUDA memory allocated: {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
