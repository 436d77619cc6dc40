"""FAISS search against brute-force numpy, tie order, approximate indexes, and the GPU switch on CPU."""
from __future__ import annotations

from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from retrieval.search import index as index_module
from retrieval.search.index import build_row_index, gpu_count, load_index, save_index, search, to_gpu


def brute_force(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product in float64, equal scores by gallery index: the documented order."""
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    order = np.array([np.lexsort((np.arange(len(gallery)), -row))[:k] for row in scores])
    return np.take_along_axis(scores, order, 1), order


def integer_vectors(n: int, d: int, seed: int) -> np.ndarray:
    """Small integers: every inner product is exact in float32, so equal scores are truly equal."""
    return np.random.default_rng(seed).integers(-2, 3, size=(n, d)).astype(np.float32)


def clustered(n: int, d: int, centres: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = centres[rng.integers(0, len(centres), n)] + 0.15 * rng.standard_normal((n, d))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def test_flat_search_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    gallery = rng.standard_normal((500, 32)).astype(np.float32)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    scores, indices = search(build_row_index(gallery, "Flat"), queries, k=25)
    expected_scores, expected_indices = brute_force(queries, gallery, 25)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
    assert indices.dtype == np.int64 and scores.dtype == np.float32


def test_ties_are_ordered_by_gallery_index() -> None:
    gallery = integer_vectors(300, 6, seed=1)  # 5^6 values for 300 rows: many equal scores
    gallery[[250, 40, 7, 199]] = gallery[123]  # and exact duplicates, out of order
    queries = np.concatenate([integer_vectors(30, 6, seed=2), gallery[[123]]])
    scores, indices = search(build_row_index(gallery, "Flat"), queries, k=30)
    expected_scores, expected_indices = brute_force(queries, gallery, 30)
    assert (np.diff(expected_scores, axis=1) == 0).sum() > 100  # the case really is full of ties
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)
    places = [list(indices[-1]).index(i) for i in (7, 40, 123, 199, 250)]
    assert places == sorted(places) and places[-1] < 10  # the duplicates: near the top, by index


def test_many_identical_vectors_return_the_first_ones() -> None:
    gallery = np.ones((100, 8), dtype=np.float32)
    _, indices = search(build_row_index(gallery, "Flat"), np.ones((3, 8), dtype=np.float32), k=5)
    np.testing.assert_array_equal(indices, np.tile(np.arange(5), (3, 1)))


def test_k_larger_than_gallery_returns_the_whole_gallery() -> None:
    gallery = integer_vectors(7, 4, seed=3)
    queries = integer_vectors(5, 4, seed=4)
    scores, indices = search(build_row_index(gallery, "Flat"), queries, k=50)
    assert indices.shape == (5, 7)
    expected_scores, expected_indices = brute_force(queries, gallery, 7)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(scores, expected_scores)


def test_blocked_search_equals_unblocked() -> None:
    gallery = integer_vectors(400, 8, seed=5)
    queries = integer_vectors(103, 8, seed=6)
    index = build_row_index(gallery, "Flat")
    whole = search(index, queries, k=12, block_size=4096)
    for block in (1, 10, 64):
        blocked = search(index, queries, k=12, block_size=block)
        np.testing.assert_array_equal(blocked[0], whole[0])
        np.testing.assert_array_equal(blocked[1], whole[1])


@pytest.mark.parametrize("factory, params", [("IVF16,Flat", {"nprobe": 4}), ("HNSW32", {"efSearch": 32})])
def test_approximate_indexes_have_high_recall_on_clustered_data(factory: str, params: dict) -> None:
    d = 32
    centres = np.random.default_rng(7).standard_normal((16, d))
    gallery = clustered(3000, d, centres, seed=8)
    queries = clustered(100, d, centres, seed=9)
    k = 10
    _, exact = brute_force(queries, gallery, k)
    index = build_row_index(gallery, factory, params, train_size=2000)
    scores, found = search(index, queries, k=k)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found, exact)])
    assert recall >= 0.9, recall
    assert (np.diff(scores, axis=1) <= 0).all()


def test_saved_index_searches_the_same(tmp_path) -> None:
    gallery = integer_vectors(200, 8, seed=10)
    queries = integer_vectors(20, 8, seed=11)
    index = build_row_index(gallery, "HNSW16")
    save_index(index, tmp_path / "index.faiss")
    loaded = load_index(tmp_path / "index.faiss")
    np.testing.assert_array_equal(search(loaded, queries, 10)[1], search(index, queries, 10)[1])


def test_to_gpu_without_gpu_says_so() -> None:
    assert gpu_count() == 0  # this machine: CPU faiss
    with pytest.raises(RuntimeError, match="sees no GPU"):
        to_gpu(build_row_index(integer_vectors(10, 4, seed=12), "Flat"))
    with pytest.raises(RuntimeError, match="faiss-gpu"):
        build_row_index(integer_vectors(10, 4, seed=12), "Flat", use_gpu=True)


def test_auto_device_stays_on_cpu_here() -> None:
    gallery = integer_vectors(10, 4, seed=13)
    index = build_row_index(gallery, "Flat", use_gpu=None)
    assert "Gpu" not in type(index).__name__ and index.metric_type == faiss.METRIC_INNER_PRODUCT
    np.testing.assert_array_equal(search(index, gallery, 3)[1], brute_force(gallery, gallery, 3)[1])


def test_auto_device_fills_the_index_on_every_gpu_faiss_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPU twin of the GPU path: a faiss that reports two GPUs gets a sharded clone of the
    trained index while it is still empty, and the rows are added to the clone block by block,
    so the GPUs encode them and the host never holds a filled copy (what the pipeline needs
    for a gallery larger than memory)."""
    calls = []

    class Clone:
        """Stands for the GPU index: keeps what is added to it, block by block."""

        def __init__(self, index: faiss.Index) -> None:
            self.index, self.blocks = index, []

        def add(self, rows: np.ndarray) -> None:
            self.blocks.append(len(rows))
            self.index.add(rows)

    def clone(index: faiss.Index, co: SimpleNamespace) -> Clone:
        calls.append((index.ntotal, co.shard))
        return Clone(index)

    monkeypatch.setattr(index_module, "gpu_count", lambda: 2)
    monkeypatch.setattr(faiss, "GpuMultipleClonerOptions", SimpleNamespace, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", clone)
    gallery = integer_vectors(10, 4, seed=14)
    moved = build_row_index(gallery, "Flat", use_gpu=None, add_block=4)
    assert calls == [(0, True)] and moved.blocks == [4, 4, 2] and moved.index.ntotal == 10
    assert build_row_index(gallery, "Flat", use_gpu=False).ntotal == 10 and len(calls) == 1
