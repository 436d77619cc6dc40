"""Re-rank maths against deliberately naive numpy versions of the published definitions.

Each reference loops over queries and neighbours in float64 and shares no code with
retrieval.rerank, so the vectorised, blocked implementations are checked against the formulas
themselves: AQE (Chum et al. 2007), alpha-QE and alpha-DBA (Radenovic, Tolias, Chum 2019), DBA
(Arandjelovic & Zisserman 2012), and exact top-k with ties broken by lower row id.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from retrieval.rerank.expansion import alpha_query_expansion, average_query_expansion, database_side_augmentation
from retrieval.rerank.neighbours import top_k_rows

DEVICES = [
    torch.device("cpu"),
    pytest.param(
        torch.device("cuda"), marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def gallery() -> np.ndarray:
    """37 unit rows in 6-d (so neighbours overlap), with exact duplicates (tied scores) and zero
    rows (skipped entries)."""
    rows = unit_rows(np.random.default_rng(0), 37, 6)
    rows[[5, 20]] = rows[3]
    rows[30] = rows[11]
    rows[[8, 25]] = 0
    return rows


@pytest.fixture
def queries() -> np.ndarray:
    rows = unit_rows(np.random.default_rng(1), 9, 6)
    rows[4] = 0
    return rows


@pytest.fixture
def neighbours() -> np.ndarray:
    """Gallery ids with -1 padding in the middle and at the end, one row all padding."""
    ids = np.random.default_rng(2).integers(-1, 37, size=(9, 12))
    ids[:, 9:] = -1
    ids[[0, 1, 2], [0, 1, 3]] = -1
    ids[6] = -1
    return ids


def naive_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.full((len(queries), k), -np.inf)
    ids = np.full((len(queries), k), -1, dtype=np.int64)
    for i, query in enumerate(queries):
        similarities = vectors.astype(np.float64) @ query.astype(np.float64)
        order = np.argsort(-similarities, kind="stable")[:k]  # stable: equal scores by lower id
        scores[i, : len(order)] = similarities[order]
        ids[i, : len(order)] = order
    return scores, ids


def naive_alpha_qe(queries: np.ndarray, gallery: np.ndarray, neighbours: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """q' = normalise(q + sum_{i<k} max(q.g_i, 0)^alpha g_i) over the first k ids that are not -1."""
    out = np.zeros((len(queries), gallery.shape[1]))
    for i in range(len(queries)):
        query = queries[i].astype(np.float64)
        if not query.any():
            continue
        total = query.copy()
        used = 0
        for gallery_id in neighbours[i]:
            if used == k:
                break
            if gallery_id == -1:
                continue
            g = gallery[gallery_id].astype(np.float64)
            total += max(float(query @ g), 0.0) ** alpha * g
            used += 1
        out[i] = total / np.linalg.norm(total)
    return out


def naive_aqe(queries: np.ndarray, gallery: np.ndarray, neighbours: np.ndarray, k: int) -> np.ndarray:
    """q' = normalise(q + the first k listed gallery rows), -1 skipped."""
    out = np.zeros((len(queries), gallery.shape[1]))
    for i in range(len(queries)):
        query = queries[i].astype(np.float64)
        if not query.any():
            continue
        listed = [gallery_id for gallery_id in neighbours[i] if gallery_id != -1][:k]
        total = query + sum((gallery[gallery_id].astype(np.float64) for gallery_id in listed), np.zeros_like(query))
        out[i] = total / np.linalg.norm(total)
    return out


def naive_nearest_others(gallery: np.ndarray, row: int, count: int) -> list[int]:
    similarities = gallery.astype(np.float64) @ gallery[row].astype(np.float64)
    others = [j for j in range(len(gallery)) if j != row]
    return sorted(others, key=lambda j: (-similarities[j], j))[:count]


def naive_alpha_dba(gallery: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """g' = normalise(sum over g and its k-1 nearest other rows of max(g.g_i, 0)^alpha g_i)."""
    out = np.zeros(gallery.shape)
    for i in range(len(gallery)):
        g = gallery[i].astype(np.float64)
        if not g.any():
            continue
        total = np.zeros_like(g)
        for j in [i] + naive_nearest_others(gallery, i, k - 1):
            neighbour = gallery[j].astype(np.float64)
            total += max(float(g @ neighbour), 0.0) ** alpha * neighbour
        out[i] = total / np.linalg.norm(total)
    return out


def naive_dba(gallery: np.ndarray, k: int) -> np.ndarray:
    """Arandjelovic & Zisserman: the (normalised) average of g and its k-1 nearest rows."""
    out = np.zeros(gallery.shape)
    for i in range(len(gallery)):
        if not gallery[i].any():
            continue
        members = [i] + naive_nearest_others(gallery, i, k - 1)
        mean = gallery[members].astype(np.float64).mean(axis=0)
        out[i] = mean / np.linalg.norm(mean)
    return out


def assert_unit_or_zero_float32(rows: np.ndarray) -> None:
    assert rows.dtype == np.float32
    norms = np.linalg.norm(rows, axis=1)
    np.testing.assert_allclose(norms[norms > 0], 1, atol=1e-5)


# ---------------------------------------------------------------- top_k_rows


@pytest.mark.parametrize("block_size", [1, 3, 7, 16, 4096])
@pytest.mark.parametrize("k", [1, 5, 23, 40])
def test_top_k_rows_matches_brute_force_with_ties(block_size: int, k: int) -> None:
    """Small integer vectors make many exact ties (integer dot products are exact in float32)."""
    rng = np.random.default_rng(3)
    queries = rng.integers(-2, 3, size=(11, 4)).astype(np.float32)
    vectors = rng.integers(-2, 3, size=(23, 4)).astype(np.float32)
    vectors[[4, 9, 17]] = vectors[2]
    scores, ids = top_k_rows(queries, vectors, k, block_size=block_size)
    expected_scores, expected_ids = naive_top_k(queries, vectors, k)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert scores.shape == ids.shape == (11, k)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores.astype(np.float32))


@pytest.mark.parametrize("block_size", [2, 5, 64])
def test_top_k_rows_ties_go_to_lower_ids_across_blocks(block_size: int) -> None:
    vectors = np.ones((13, 3), dtype=np.float32)
    scores, ids = top_k_rows(np.ones((2, 3), dtype=np.float32), vectors, 6, block_size=block_size)
    np.testing.assert_array_equal(ids, np.tile(np.arange(6), (2, 1)))
    np.testing.assert_array_equal(scores, np.full((2, 6), 3, dtype=np.float32))


@pytest.mark.parametrize("block_size", [4, 9])
def test_top_k_rows_float16_unit_rows(block_size: int) -> None:
    """Float16 input is widened: scores equal float64 dot products of the float16 values, and each
    returned id carries the score brute force gives it (robust to near-ties)."""
    rng = np.random.default_rng(4)
    queries = unit_rows(rng, 7, 16).astype(np.float16)
    vectors = unit_rows(rng, 30, 16).astype(np.float16)
    scores, ids = top_k_rows(queries, vectors, 10, block_size=block_size)
    expected_scores, _ = naive_top_k(queries, vectors, 10)
    np.testing.assert_allclose(scores, expected_scores, rtol=0, atol=1e-5)
    recomputed = np.einsum("qd,qkd->qk", queries.astype(np.float64), vectors.astype(np.float64)[ids])
    np.testing.assert_allclose(scores, recomputed, rtol=0, atol=1e-5)
    assert all(len(set(row)) == len(row) for row in ids.tolist())


def test_top_k_rows_pads_when_k_exceeds_rows() -> None:
    vectors = np.eye(3, dtype=np.float32)
    scores, ids = top_k_rows(vectors[[1]], vectors, 5, block_size=2)
    np.testing.assert_array_equal(ids, [[1, 0, 2, -1, -1]])
    np.testing.assert_array_equal(scores, [[1, 0, 0, -np.inf, -np.inf]])
    empty_scores, empty_ids = top_k_rows(vectors, np.zeros((0, 3), np.float32), 2)
    np.testing.assert_array_equal(empty_ids, np.full((3, 2), -1))
    assert np.isneginf(empty_scores).all()
    assert top_k_rows(vectors, vectors, 0)[1].shape == (3, 0)


@pytest.mark.parametrize("device", DEVICES)
def test_top_k_rows_on_device(device: torch.device) -> None:
    """The CUDA twin: the same blocked code with an explicit device gives the brute-force answer."""
    rng = np.random.default_rng(5)
    queries = rng.integers(-2, 3, size=(9, 5)).astype(np.float32)
    vectors = rng.integers(-2, 3, size=(29, 5)).astype(np.float32)
    scores, ids = top_k_rows(queries, vectors, 12, block_size=4, device=device)
    expected_scores, expected_ids = naive_top_k(queries, vectors, 12)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores.astype(np.float32))


# ---------------------------------------------------------------- query expansion


@pytest.mark.parametrize("k", [0, 1, 4, 9, 50])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_average_query_expansion(queries, gallery, neighbours, k: int, dtype: type) -> None:
    queries, gallery = queries.astype(dtype), gallery.astype(dtype)
    expanded = average_query_expansion(queries, gallery, neighbours, k)
    assert_unit_or_zero_float32(expanded)
    np.testing.assert_allclose(expanded, naive_aqe(queries, gallery, neighbours, k), rtol=0, atol=1e-5)
    assert not expanded[4].any()  # the zero query stays zero


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0, 0.5])
@pytest.mark.parametrize("k", [1, 4, 50])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_alpha_query_expansion(queries, gallery, neighbours, k: int, alpha: float, dtype: type) -> None:
    queries, gallery = queries.astype(dtype), gallery.astype(dtype)
    expanded = alpha_query_expansion(queries, gallery, neighbours, k, alpha)
    assert_unit_or_zero_float32(expanded)
    np.testing.assert_allclose(expanded, naive_alpha_qe(queries, gallery, neighbours, k, alpha), rtol=0, atol=1e-5)
    assert not expanded[4].any()


@pytest.mark.parametrize("k", [1, 4, 50])
def test_alpha_query_expansion_with_alpha_zero_is_aqe(queries, gallery, neighbours, k: int) -> None:
    """0^0 = 1: every neighbour weighs 1, including those with a negative score."""
    expanded = alpha_query_expansion(queries, gallery, neighbours, k, alpha=0.0)
    np.testing.assert_allclose(expanded, naive_aqe(queries, gallery, neighbours, k), rtol=0, atol=1e-5)


def test_query_expansion_rejects_bad_arguments(queries, gallery, neighbours) -> None:
    with pytest.raises(ValueError):
        alpha_query_expansion(queries, gallery, neighbours, 3, alpha=-1.0)
    with pytest.raises(ValueError):
        average_query_expansion(queries, gallery, neighbours[:3], 3)
    with pytest.raises(ValueError):
        average_query_expansion(queries, gallery, neighbours, -1)


# ---------------------------------------------------------------- database-side augmentation


@pytest.mark.parametrize("alpha", [0.0, 1.0, 3.0])
@pytest.mark.parametrize("k", [1, 2, 5, 37, 60])
@pytest.mark.parametrize("block_size", [3, 8, 4096])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_alpha_database_side_augmentation(gallery, k: int, alpha: float, block_size: int, dtype: type) -> None:
    gallery = gallery.astype(dtype)
    augmented = database_side_augmentation(gallery, k, alpha, block_size=block_size)
    assert_unit_or_zero_float32(augmented)
    np.testing.assert_allclose(augmented, naive_alpha_dba(gallery, k, alpha), rtol=0, atol=1e-5)
    assert not augmented[[8, 25]].any()  # zero rows stay zero


@pytest.mark.parametrize("k", [1, 3, 10, 60])
def test_database_side_augmentation_with_alpha_zero_is_dba(gallery, k: int) -> None:
    augmented = database_side_augmentation(gallery, k, alpha=0.0, block_size=5)
    np.testing.assert_allclose(augmented, naive_dba(gallery, k), rtol=0, atol=1e-5)


def test_database_side_augmentation_k_one_keeps_rows(gallery) -> None:
    """k counts the row itself, so k = 1 adds no neighbour."""
    np.testing.assert_allclose(database_side_augmentation(gallery, 1, alpha=3.0), gallery, rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        database_side_augmentation(gallery, 0, alpha=1.0)


def test_database_side_augmentation_puts_the_row_itself_first() -> None:
    """Rows that are not unit length exaggerate what float rounding can do to near-duplicates:
    another row may score above g.g. g is still one of its k rows, plus its k-1 nearest others."""
    gallery = np.array([[1, 0], [2, 1], [1.5, -1], [0, 1]], dtype=np.float32)
    augmented = database_side_augmentation(gallery, 2, alpha=0.0, block_size=3)
    np.testing.assert_allclose(augmented[0], np.array([3, 1]) / np.sqrt(10), rtol=0, atol=1e-6)
    np.testing.assert_allclose(augmented, naive_alpha_dba(gallery, 2, 0.0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_database_side_augmentation_on_device(gallery, device: torch.device) -> None:
    """The CUDA twin of the DBA test: the neighbour search runs on `device`."""
    augmented = database_side_augmentation(gallery, 6, alpha=3.0, block_size=7, device=device)
    np.testing.assert_allclose(augmented, naive_alpha_dba(gallery, 6, 3.0), rtol=0, atol=1e-5)
