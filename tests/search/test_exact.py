"""Exact search over a gallery left on disk: memory-mapped shard vectors, blocks sized by a
memory budget, per-block top-k merged. Results must be those of a brute-force search, ties
included: vectors of small integers (times 1/4, exact in float16) make every score exact, so
ties are real and the reference can be plain numpy."""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ComposeFn
from retrieval import pipeline
from retrieval.config import ConfigError
from retrieval.errors import UserError
from retrieval.features.mapped import MappedRows
from retrieval.features.store import MissingVectors, ShardRows, Store, shard_name, write_shard
from retrieval.search.exact import BlockPlan, GalleryShape, block_bytes, blockwise_top_k, exact_search, plan_blocks
from retrieval.sizes import format_size, parse_size
from retrieval.ranking import Ranking
from retrieval.rerank.expansion import alpha_query_expansion
from retrieval.plan import RunPlan


def brute_force(queries: np.ndarray, vectors: np.ndarray, row_image: np.ndarray, n_images: int, k: int):
    """Per query: images by (best row's score desc, image asc), each at its lowest best row."""
    scores = queries.astype(np.float64) @ vectors.astype(np.float64).T
    k = min(k, n_images)
    out = np.full((len(queries), k), -np.inf), np.full((len(queries), k), -1), np.full((len(queries), k), -1)
    for q, row_scores in enumerate(scores):
        best = {}
        for row in np.lexsort((np.arange(len(row_scores)), -row_scores)).tolist():
            best.setdefault(int(row_image[row]), row)
        ranked = sorted(best, key=lambda image: (-row_scores[best[image]], image))[:k]
        out[0][q, : len(ranked)] = [row_scores[best[image]] for image in ranked]
        out[1][q, : len(ranked)] = ranked
        out[2][q, : len(ranked)] = [best[image] for image in ranked]
    return out


def tied_gallery(seed: int, n_images: int, rows_per_image: int, dim: int = 8, dtype=np.float16):
    """Integer-valued vectors with many exact ties: duplicated images, duplicated rows within
    images, and (with several rows per image) some images without rows (skipped)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, rows_per_image + 1, n_images) if rows_per_image > 1 else np.ones(n_images, np.int64)
    if rows_per_image > 1:
        counts[rng.choice(n_images, n_images // 10, replace=False)] = 0
    row_image = np.repeat(np.arange(n_images), counts)
    vectors = (rng.integers(-2, 3, (len(row_image), dim)) / 4).astype(dtype)
    copies = rng.choice(len(vectors), len(vectors) // 3, replace=False)
    vectors[copies] = vectors[rng.choice(len(vectors), len(copies))]
    queries = rng.integers(-2, 3, (23, dim)).astype(np.float32)
    queries[:3] = 0  # every image ties with every other
    return queries, vectors, row_image


@pytest.mark.parametrize("rows_per_image", [1, 5])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("plan", [BlockPlan(23, 1000), BlockPlan(7, 64), BlockPlan(4, 13), BlockPlan(1, 1)])
@pytest.mark.parametrize("k", [1, 10, 500])
def test_blockwise_search_is_the_brute_force_ranking(rows_per_image: int, dtype, plan: BlockPlan, k: int) -> None:
    queries, vectors, row_image = tied_gallery(rows_per_image, 300, rows_per_image, dtype=dtype)
    hits = exact_search(queries, vectors, row_image, n_images=300, k=k, plan=plan)
    scores, images, rows = brute_force(queries, vectors, row_image, 300, k)
    assert np.array_equal(hits.images, images) and np.array_equal(hits.rows, rows)
    np.testing.assert_array_equal(hits.scores, scores.astype(np.float32))
    assert hits.scores.dtype == np.float32


def test_images_in_descending_order_are_ranked_by_image_index() -> None:
    queries, vectors, row_image = tied_gallery(3, 60, 4)
    flipped = row_image.max() - row_image[::-1]  # image g's rows are contiguous, images run downward
    hits = exact_search(queries, vectors[::-1], flipped, 60, 8, plan=BlockPlan(5, 17))
    scores, images, rows = brute_force(queries, vectors[::-1], flipped, 60, 8)
    assert np.array_equal(hits.images, images) and np.array_equal(hits.rows, rows)


def test_two_devices_merge_as_one() -> None:
    """The multi-GPU path (row blocks round-robin over devices) with two CPU devices."""
    queries, vectors, row_image = tied_gallery(4, 200, 3)
    one = blockwise_top_k(queries, vectors, row_image, 12, [torch.device("cpu")], BlockPlan(6, 40))
    two = blockwise_top_k(queries, vectors, row_image, 12, [torch.device("cpu")] * 2, BlockPlan(6, 40))
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(one[1], brute_force(queries, vectors, row_image, 200, 12)[1])


# Budgets


def test_a_budget_sizes_blocks_within_it_and_a_small_one_names_the_minimum() -> None:
    gallery = GalleryShape(n_rows=1_000_000, dim=512, itemsize=2, widest_image=1, one_row_each=True, n_devices=1)
    for budget in ("24MB", "64MB", "256MB", "4GB"):
        plan = plan_blocks(parse_size(budget), 10_000, gallery, 10)
        assert block_bytes(plan, gallery, 10) <= parse_size(budget), budget
    assert plan_blocks(None, 10_000, gallery, 10) == plan_blocks(parse_size("4GB"), 10_000, gallery, 10)
    assert plan_blocks(parse_size("64MB"), 10_000, gallery, 10).queries >= 512  # both sides shrink
    with pytest.raises(UserError) as caught:
        plan_blocks(parse_size("1MB"), 10_000, gallery, 10)
    minimum = str(caught.value).rsplit("=", 1)[1]
    assert str(caught.value).startswith("search.memory_budget=1MB is below the ")
    plan_blocks(parse_size(minimum), 10_000, gallery, 10)  # the figure it names is enough
    regions = GalleryShape(n_rows=10_000, dim=512, itemsize=2, widest_image=5000, one_row_each=False, n_devices=1)
    with pytest.raises(UserError, match="5000 gallery rows"):  # an image's rows never straddle blocks
        plan_blocks(parse_size("40MB"), 100, regions, 10)
    plan_blocks(parse_size("40MB"), 100, dataclasses.replace(regions, widest_image=1), 10)


def test_sizes_read_and_print_in_binary_units() -> None:
    assert parse_size("4GB") == parse_size("4GiB") == 4 << 30
    assert parse_size("512mb") == 512 << 20 and parse_size("1.5K") == 1536 and parse_size("100") == 100
    assert format_size(3 << 20) == "3MB" and format_size(1536) == "1.5KB" and format_size(12) == "12B"
    with pytest.raises(ValueError, match="512MB or 4GB"):
        parse_size("four gigs")


# Memory-mapped shards


def write_store(folder: Path, vectors: np.ndarray, counts: np.ndarray, shard_items: int) -> list[str]:
    """A store of items `item-<i>` holding `counts[i]` rows each, `shard_items` items a shard."""
    keys = [f"item-{i:04d}" for i in range(len(counts))]
    starts = np.r_[0, np.cumsum(counts)]
    for lo in range(0, len(keys), shard_items):
        chunk = keys[lo : lo + shard_items]
        rows = vectors[starts[lo] : starts[lo + len(chunk)]]
        valid = counts[lo : lo + len(chunk)] > 0
        errors = {key: "unreadable image" for key, ok in zip(chunk, valid) if not ok}
        write_shard(folder / shard_name(chunk), ShardRows(chunk, valid, counts[lo : lo + len(chunk)], rows, errors, 1.0))
    return keys


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_mapped_gallery_reads_what_the_shards_hold(tmp_path: Path, dtype) -> None:
    queries, vectors, row_image = tied_gallery(5, 120, 4, dim=16, dtype=dtype)
    keys = write_store(tmp_path, vectors, np.bincount(row_image, minlength=120), shard_items=7)
    order = np.random.default_rng(0).permutation(120)  # a listing in another order than the shards
    loaded = Store(tmp_path).gather([keys[i] for i in order], [f"image-{i}" for i in order])
    mapped = Store(tmp_path).gather([keys[i] for i in order], [f"image-{i}" for i in order], mapped=True)
    assert isinstance(mapped.vectors, MappedRows) and mapped.vectors.dtype == dtype
    assert mapped.vectors.shape == loaded.vectors.shape and mapped.vectors.nbytes == loaded.vectors.nbytes
    np.testing.assert_array_equal(np.asarray(mapped.vectors), loaded.vectors)
    np.testing.assert_array_equal(mapped.vectors[17:95], loaded.vectors[17:95])
    picks = np.array([[3, len(loaded.vectors) - 2], [-1, 0]])
    np.testing.assert_array_equal(mapped.vectors[picks], loaded.vectors[picks])
    np.testing.assert_array_equal(mapped.vectors[5], loaded.vectors[5])
    assert np.array_equal(mapped.row_image, loaded.row_image) and np.array_equal(mapped.valid, loaded.valid)
    for plan in (BlockPlan(4, 30), BlockPlan(23, 10_000)):
        on_disk = exact_search(queries, mapped.vectors, mapped.row_image, 120, 9, plan=plan)
        in_memory = exact_search(queries, loaded.vectors, loaded.row_image, 120, 9, plan=plan)
        for a, b in zip((on_disk.scores, on_disk.images, on_disk.rows), (in_memory.scores, in_memory.images, in_memory.rows)):
            np.testing.assert_array_equal(a, b)
    assert np.array_equal(in_memory.images, brute_force(queries, loaded.vectors, loaded.row_image, 120, 9)[1])


def test_search_under_a_budget_never_loads_the_whole_gallery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queries, vectors, row_image = tied_gallery(6, 3000, 1, dim=32)
    keys = write_store(tmp_path, vectors, np.ones(3000, np.int64), shard_items=256)
    mapped = Store(tmp_path).gather(keys, keys, mapped=True)

    def whole_gallery(*args, **kwargs):
        raise AssertionError("the gallery was materialised")

    monkeypatch.setattr(MappedRows, "__array__", whole_gallery)
    read = []
    original = MappedRows.read_into
    monkeypatch.setattr(MappedRows, "read_into", lambda self, lo, hi, out: read.append(hi - lo) or original(self, lo, hi, out))
    shape = GalleryShape(3000, 32, 2, 1, True, 1)
    hits = exact_search(queries, mapped.vectors, mapped.row_image, 3000, 10, memory_budget=block_bytes(BlockPlan(23, 1024), shape, 10))
    assert len(read) > 1 and max(read) < 3000  # several blocks, none the gallery
    assert np.array_equal(hits.images, brute_force(queries, vectors, row_image, 3000, 10)[1])


def test_a_truncated_shard_is_set_aside_and_only_its_items_are_extracted_again(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((40, 8)).astype(np.float16)
    keys = write_store(tmp_path, vectors, np.ones(40, np.int64), shard_items=10)
    store = Store(tmp_path)
    assert store.missing(keys) == []  # indexed while whole
    damaged = tmp_path / shard_name(keys[10:20])
    damaged.write_bytes(damaged.read_bytes()[:-500])
    with pytest.raises(MissingVectors, match="run python extract.py again"):
        store.gather(keys, keys, mapped=True)
    assert not damaged.exists() and damaged.with_name(damaged.name + ".unreadable").exists()
    assert sorted(path.name for path in tmp_path.glob("shard-*.npz")) == sorted(
        shard_name(keys[lo : lo + 10]) for lo in (0, 20, 30))
    embedded = []

    def embed(chunk: list[str]) -> ShardRows:
        embedded.extend(chunk)
        rows = vectors[[keys.index(key) for key in chunk]]
        return ShardRows(chunk, np.ones(len(chunk), bool), np.ones(len(chunk), np.int64), rows, {}, 1.0)

    Store(tmp_path).build(keys, 10, embed)
    assert embedded == keys[10:20]
    np.testing.assert_array_equal(np.asarray(Store(tmp_path).gather(keys, keys, mapped=True).vectors), vectors)


def test_a_shard_cut_short_before_the_search_indexes_it_asks_for_extraction(tmp_path: Path) -> None:
    vectors = np.random.default_rng(8).standard_normal((20, 8)).astype(np.float32)
    keys = write_store(tmp_path, vectors, np.ones(20, np.int64), shard_items=10)
    damaged = tmp_path / shard_name(keys[:10])
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(MissingVectors, match="holds no vectors for 10 items .*run python extract.py"):
        Store(tmp_path).gather(keys, keys, mapped=True)


# The stages


def test_search_and_rerank_under_a_budget_rank_as_without(make_cfg: ComposeFn, tmp_path: Path) -> None:
    """The ranking (search, then DBA's search over re-written vectors, then alpha-QE) under a
    budget, with the gallery mapped, is the one without: built from scratch each time."""
    budget_cfg = make_cfg("rerank=[dba,alpha_qe]", "search.memory_budget=20MB")
    plain_cfg = make_cfg("rerank=[dba,alpha_qe]")
    on_disk = Ranking.load(pipeline.ranking(budget_cfg))
    shutil.rmtree(tmp_path / "cache" / "rankings")
    in_memory = Ranking.load(pipeline.ranking(plain_cfg))
    assert np.array_equal(on_disk.indices, in_memory.indices) and np.array_equal(on_disk.scores, in_memory.scores)
    assert isinstance(RunPlan.from_config(budget_cfg).stores["gallery"].load().vectors, MappedRows)


def test_a_budget_no_search_fits_is_refused_though_the_ranking_is_cached(make_cfg: ComposeFn) -> None:
    pipeline.ranking(make_cfg())
    with pytest.raises(ConfigError, match=r"^search.memory_budget=1KB is not valid: a search holds 16MB besides"):
        pipeline.ranking(make_cfg("search.memory_budget=1KB"))


def test_query_expansion_reads_a_mapped_gallery_row_by_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(9)
    vectors = rng.standard_normal((300, 16)).astype(np.float16)
    keys = write_store(tmp_path, vectors, np.ones(300, np.int64), shard_items=64)
    mapped = Store(tmp_path).gather(keys, keys, mapped=True).vectors
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    neighbours = rng.integers(-1, 300, (20, 7))
    expected = alpha_query_expansion(queries, vectors, neighbours, 5, 3.0)
    monkeypatch.setattr(MappedRows, "__array__", lambda *args, **kwargs: pytest.fail("the gallery was materialised"))
    np.testing.assert_allclose(alpha_query_expansion(queries, mapped, neighbours, 5, 3.0), expected, rtol=1e-6)
