"""Rank gallery images for query vectors, over rows of the one form (`retrieval.features`):
an image scores as its best row (max), so whole-image retrieval (one row per image) and
region-level retrieval (many) are the same search.

Exact (index `Flat`, the default): queries x rows similarities are computed block by block
on the device (every GPU torch sees, else the CPU), each block's best images merged into a
running top k (`retrieval.blockwise`), so memory is bounded by the block sizes (or by
`search.memory_budget`) however many rows there are, over vectors in memory or left in
their shards (`retrieval.features.mapped`); ties go to the lower image index. Approximate (any
other FAISS factory string, on every GPU faiss sees): the index returns the top `k_rows` rows
per query; an image's score is its best row among them, and images none of whose rows came
back are missing from the row (padding). The search stage passes the gallery's saved index,
its knob tuned and its recall measured (`retrieval.approximate`); without one, one is built.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import faiss
import numpy as np
import torch

from retrieval.blockwise import BlockPlan, GalleryShape, blockwise_top_k, plan_blocks, search_devices, widest_image
from retrieval.features import Features
from retrieval.features.mapped import MappedRows
from retrieval.index import search, set_search_params, sort_ties, to_gpu, trained_index, wants_gpu

AGGREGATIONS = ("max",)
ROWS_PER_IMAGE = 32
"""Approximate search fetches this many rows per ranked image unless `k_regions` is set."""


@dataclass
class ImageHits:
    """Per query, best first: gallery image, its score, and the row that gave it."""

    scores: np.ndarray
    images: np.ndarray
    rows: np.ndarray
    """-1 where `images` is padding."""


def exact_search(
    queries: np.ndarray,
    vectors: np.ndarray | MappedRows,
    row_image: np.ndarray,
    n_images: int,
    k: int,
    device: torch.device = torch.device("cpu"),
    memory_budget: int | None = None,
    plan: BlockPlan | None = None,
    cosines: bool = False,
) -> ImageHits:
    """Exact max-aggregated image ranking over `vectors` (float16 allowed, or memory-mapped
    shards), in blocks of queries x rows that `memory_budget` bytes hold (`plan` sets them
    instead); on `cuda`, row blocks are spread over every visible GPU. `cosines`: queries and
    rows are unit vectors, so a score outside [-1, 1] means a corrupt row
    (`retrieval.blockwise.OutOfRangeScores`)."""
    k = min(k, n_images)
    devices = search_devices(device)
    if plan is None:
        widest = widest_image(row_image)
        gallery = GalleryShape(len(vectors), vectors.shape[1], vectors.dtype.itemsize, widest, widest <= 1, len(devices))
        plan = plan_blocks(memory_budget, len(queries), gallery, k)
    return ImageHits(*blockwise_top_k(queries, vectors, row_image, k, devices, plan, cosines))


def build_row_index(
    vectors: np.ndarray,
    factory: str,
    search_params: Mapping[str, float] | None = None,
    use_gpu: bool | None = None,
    add_block: int = 100_000,
    train_size: int = 100_000,
    seed: int = 0,
) -> faiss.Index:
    """A FAISS index over row vectors (float16 or memory-mapped allowed), trained on a seeded
    sample of all rows, then filled block by block, so one float32 block exists at a time."""
    index = trained_index(vectors, factory, train_size, seed)
    if wants_gpu(use_gpu):
        index = to_gpu(index)
    for start in range(0, len(vectors), add_block):
        index.add(np.ascontiguousarray(vectors[start : start + add_block], dtype=np.float32))
    set_search_params(index, search_params or {})
    return index


def rows_per_query(row_image: np.ndarray, k: int, k_regions: int | None, rescore_rows: int | None = None) -> int:
    """How many rows an approximate search fetches to rank `k` images: `k` when every image
    has one row, else `k_regions` or ROWS_PER_IMAGE per ranked image; at least `rescore_rows`
    when those are re-scored exactly (`index.rescore`)."""
    one_row_each = widest_image(row_image) <= 1
    return max(int(k_regions or (k if one_row_each else ROWS_PER_IMAGE * k)), int(rescore_rows or 0))


def approximate_search(
    index: faiss.Index,
    queries: np.ndarray,
    row_image: np.ndarray,
    k: int,
    k_rows: int,
    block_size: int = 4096,
    rescore_from: np.ndarray | MappedRows | None = None,
) -> ImageHits:
    """Top `k_rows` rows per query from `index`, grouped into at most `k` images; with
    `rescore_from` (the gallery's row vectors), those rows are first ordered by their exact
    similarity (`rescore`)."""
    queries = np.asarray(queries, dtype=np.float32)
    scores, ids = search(index, queries, min(k_rows, index.ntotal), block_size)
    if rescore_from is not None:
        scores, ids = rescore(queries, ids, rescore_from)
    return group_by_image(scores, ids, row_image, k)


def rescore(
    queries: np.ndarray, ids: np.ndarray, vectors: np.ndarray | MappedRows, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's shortlist of rows (`ids`, -1 padding) re-scored by its exact inner product
    with the row vectors and re-ordered (score, then lower row; padding last), `block` queries
    at a time: only the shortlisted rows are read, so compressed codes (PQ) can sit in memory
    and the full vectors on disk. A PQ index cannot order the members of a tight cluster; the
    exact re-scoring of a few hundred candidates can (`bench/bench_scale.py`)."""
    scores = np.full(ids.shape, -np.inf, dtype=np.float32)
    for start in range(0, len(ids), block):
        shortlist = ids[start : start + block]
        rows = np.asarray(vectors[np.clip(shortlist, 0, None).ravel()], dtype=np.float32).reshape(*shortlist.shape, -1)
        exact = np.einsum("qd,qkd->qk", queries[start : start + block], rows)
        scores[start : start + block] = np.where(shortlist >= 0, exact, -np.inf)
    return sort_ties(scores, ids)


def group_by_image(scores: np.ndarray, ids: np.ndarray, row_image: np.ndarray, k: int) -> ImageHits:
    """Per query, (row score, row id) best first -> each image once, at its best row."""
    out = (np.full((len(ids), k), -np.inf, np.float32), np.full((len(ids), k), -1), np.full((len(ids), k), -1))
    for row, (row_scores, row_ids) in enumerate(zip(scores, ids)):
        found = row_ids >= 0
        images = row_image[row_ids[found]]
        _, first = np.unique(images, return_index=True)
        first = np.sort(first)[:k]
        out[0][row, : len(first)] = row_scores[found][first]
        out[1][row, : len(first)] = images[first]
        out[2][row, : len(first)] = row_ids[found][first]
    return ImageHits(*out)


def rank_images(
    queries: np.ndarray,
    gallery: Features,
    k: int,
    factory: str,
    *,
    device: torch.device,
    search_params: Mapping[str, float] | None = None,
    use_gpu: bool | None = None,
    k_regions: int | None = None,
    block_size: int,
    index: faiss.Index | None = None,
    memory_budget: int | None = None,
    rescore_rows: int | None = None,
) -> ImageHits:
    """The top `k` gallery images of every query (rows of `queries`), exactly (`Flat`, in
    blocks that `memory_budget` bytes hold) or through a FAISS index of `factory`: `index`
    when given (a saved one, its search parameters set), else one built here with
    `search_params`. Queries, like the gallery's rows, are unit vectors (or zero): an exact
    score that is not a cosine raises `retrieval.blockwise.OutOfRangeScores`."""
    n_images = len(gallery.keys)
    if factory == "Flat":
        return exact_search(queries, gallery.vectors, gallery.row_image, n_images, k, device, memory_budget, cosines=True)
    if index is None:
        index = build_row_index(gallery.vectors, factory, search_params, use_gpu)
    k = min(k, n_images)
    k_rows = rows_per_query(gallery.row_image, k, k_regions, rescore_rows)
    return approximate_search(index, queries, gallery.row_image, k, k_rows, block_size, gallery.vectors if rescore_rows else None)
