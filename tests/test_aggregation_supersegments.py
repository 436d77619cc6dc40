"""Supersegments and SegVLAD against brute force: patch cover pixel by pixel, the Delaunay graph
by empty circumcircles, growth by a breadth-first walk, each supersegment's VLAD by the loop
over its patches, and the reference's weighted Borda count of image scores."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from aggregation_reference import bfs_within, descriptors_of, patches_of, vlad_loop
from retrieval.aggregation.segvlad import score_images, segvlad
from retrieval.aggregation.supersegments import (
    delaunay_graph,
    grow,
    masks_from_labels,
    patch_cover,
    supersegments,
    touching_graph,
)
from retrieval.aggregation.vlad import Vocabulary
from retrieval.errors import UserError


def voronoi_labels(height: int, width: int, seeds: int, rng: np.random.Generator) -> np.ndarray:
    """A label map of `seeds` irregular regions: each pixel takes its nearest seed's label."""
    points = rng.random((seeds, 2)) * (height, width)
    ys, xs = np.mgrid[:height, :width]
    return np.argmin((ys[..., None] - points[:, 0]) ** 2 + (xs[..., None] - points[:, 1]) ** 2, axis=-1)


def test_patch_cover_matches_pixels() -> None:
    """A segment covers every patch one of its pixels falls in (sizes that do not divide)."""
    masks = masks_from_labels(voronoi_labels(37, 51, 9, np.random.default_rng(0)))
    cover = patch_cover(torch.from_numpy(masks), (5, 7)).numpy()
    for mask, row in zip(masks, cover):
        assert set(np.nonzero(row)[0]) == patches_of(mask, (5, 7))


def test_masks_from_labels_ignore_negative_labels() -> None:
    labels = np.array([[3, 3, -1], [0, 3, -1]])
    masks = masks_from_labels(labels)
    np.testing.assert_array_equal(masks, [labels == 0, labels == 3])


def delaunay_edges_by_circumcircles(points: np.ndarray) -> set[tuple[int, int]]:
    """Edges of every triangle whose circumcircle holds no other point (general position)."""
    edges = set()
    for a, b, c in itertools.combinations(range(len(points)), 3):
        (ax, ay), (bx, by), (cx, cy) = points[a], points[b], points[c]
        d = 2 * (ax * (by - cy) + bx * (cy - ay) + cx * (ay - by))
        if abs(d) < 1e-12:
            continue
        ux = ((ax**2 + ay**2) * (by - cy) + (bx**2 + by**2) * (cy - ay) + (cx**2 + cy**2) * (ay - by)) / d
        uy = ((ax**2 + ay**2) * (cx - bx) + (bx**2 + by**2) * (ax - cx) + (cx**2 + cy**2) * (bx - ax)) / d
        radius = np.hypot(ax - ux, ay - uy)
        others = [i for i in range(len(points)) if i not in (a, b, c)]
        if all(np.hypot(*(points[i] - (ux, uy))) > radius + 1e-9 for i in others):
            edges |= {(a, b), (a, c), (b, c)}
    return edges


def test_delaunay_graph_matches_empty_circumcircles() -> None:
    points = np.random.default_rng(1).random((12, 2)) * 100
    adjacency = delaunay_graph(points)
    expected = np.eye(12, dtype=bool)
    for a, b in delaunay_edges_by_circumcircles(points):
        expected[a, b] = expected[b, a] = True
    np.testing.assert_array_equal(adjacency, expected)


def test_delaunay_graph_without_a_triangulation_is_a_chain() -> None:
    """Collinear centroids, or two, have no triangulation: neighbours along their line."""
    on_a_line = np.array([[4.0, 4.0], [0.0, 0.0], [2.0, 2.0], [1.0, 1.0], [3.0, 3.0]])
    adjacency = delaunay_graph(on_a_line)
    order = [1, 3, 2, 4, 0]
    expected = np.eye(5, dtype=bool)
    for a, b in zip(order, order[1:]):
        expected[a, b] = expected[b, a] = True
    np.testing.assert_array_equal(adjacency, expected)
    np.testing.assert_array_equal(delaunay_graph(np.array([[0.0, 0.0], [5.0, 1.0]])), np.ones((2, 2), bool))
    np.testing.assert_array_equal(delaunay_graph(np.array([[0.0, 0.0], [5.0, 1.0], [1.0, 4.0]])), np.ones((3, 3), bool))


def test_coinciding_centroids_share_neighbours() -> None:
    points = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [5.0, 4.0], [5.0, 4.0]])
    adjacency = delaunay_graph(points)
    assert adjacency[4, 5] and adjacency[5, 4]
    np.testing.assert_array_equal(adjacency[4] | adjacency[5], adjacency[4])
    assert adjacency[5].sum() > 2


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4])
def test_grow_matches_a_breadth_first_walk(order: int) -> None:
    rng = np.random.default_rng(order)
    adjacency = rng.random((15, 15)) < 0.12
    adjacency = adjacency | adjacency.T
    grown = grow(adjacency, order)
    for node in range(15):
        assert set(np.nonzero(grown[node])[0]) == bfs_within(adjacency, node, order)


def test_touching_graph_matches_patch_neighbourhoods() -> None:
    masks = masks_from_labels(voronoi_labels(30, 40, 8, np.random.default_rng(2)))
    cover = patch_cover(torch.from_numpy(masks), (6, 8))
    adjacency = touching_graph(cover, (6, 8))
    cells = [{divmod(int(p), 8) for p in np.nonzero(row)[0]} for row in cover.numpy()]
    for a, b in itertools.product(range(len(cells)), repeat=2):
        touching = any(abs(ya - yb) + abs(xa - xb) <= 1 for ya, xa in cells[a] for yb, xb in cells[b])
        assert adjacency[a, b] == touching, (a, b)


@pytest.mark.parametrize("graph", ["delaunay", "touching"])
def test_supersegments_skip_empty_masks_and_cover_their_members(graph: str) -> None:
    masks = masks_from_labels(voronoi_labels(42, 56, 10, np.random.default_rng(3)))
    masks = np.concatenate([masks[:4], np.zeros((1, 42, 56), bool), masks[4:]])  # segment 4 covers nothing
    grown = supersegments(masks, (6, 8), order=2, graph=graph)
    assert grown.skipped == 1 and list(grown.segments) == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]
    kept = masks[grown.segments]
    if graph == "delaunay":  # centroids as mean pixel positions, graph checked on its own above
        adjacency = delaunay_graph(np.array([[xs.mean(), ys.mean()] for ys, xs in (np.nonzero(m) for m in kept)]))
    else:
        adjacency = touching_graph(patch_cover(torch.from_numpy(kept), (6, 8)), (6, 8))
    for row, members in enumerate(grown.members.numpy()):
        assert set(np.nonzero(members)[0]) == bfs_within(adjacency, row, 2)
        patches = set().union(*(patches_of(kept[m], (6, 8)) for m in np.nonzero(members)[0]))
        assert set(np.nonzero(grown.cover[row].numpy())[0]) == patches


def test_segvlad_rows_are_the_vlad_of_their_supersegment() -> None:
    rng = np.random.default_rng(4)
    feature_map = torch.from_numpy(rng.normal(size=(6, 5, 7)).astype(np.float32))
    masks = masks_from_labels(voronoi_labels(35, 49, 7, rng))
    vocabulary = Vocabulary(centroids=rng.normal(size=(3, 6)).astype(np.float32) * 0.4, seed=0, niter=0, digest="test")
    encoded = segvlad(feature_map, masks, vocabulary, order=1)
    descriptors = descriptors_of(feature_map.numpy())
    for row, cover in enumerate(encoded.supersegments.cover.numpy()):
        np.testing.assert_allclose(encoded.vectors[row].numpy(), vlad_loop(descriptors[cover], vocabulary.centroids), atol=1e-5)


def test_segvlad_refuses_an_empty_feature_map() -> None:
    vocabulary = Vocabulary(centroids=np.ones((2, 4), np.float32), seed=0, niter=0, digest="test")
    with pytest.raises(UserError, match=r"feature map is empty \(0x3 cells\): its image is smaller than one patch"):
        segvlad(torch.zeros(4, 0, 3), np.ones((1, 10, 10), bool), vocabulary)


def borda_loop(similarities, neighbours, segment_images, top, low, high):
    """The reference's max_seg_topk_wt_borda_Im: per (query segment, rank) pair, the image of
    the retrieved segment gains the min-max normalised similarity; images by total, best first."""
    totals: dict[int, float] = {}
    for row in range(len(similarities)):
        for rank in range(min(top, similarities.shape[1])):
            if neighbours[row, rank] < 0:
                continue
            image = int(segment_images[neighbours[row, rank]])
            totals[image] = totals.get(image, 0.0) + (similarities[row, rank] - low) / (high - low)
    return sorted(totals, key=lambda image: (-totals[image], image)), totals


def test_image_scores_are_the_weighted_borda_count() -> None:
    rng = np.random.default_rng(5)
    segment_images = rng.integers(0, 9, 60)
    neighbours = np.array([rng.permutation(60)[:12] for _ in range(4)])
    neighbours[2, 10:] = -1  # fewer neighbours than asked for
    similarities = -np.sort(-rng.random((4, 12)), axis=1)
    scores = score_images(similarities, neighbours, segment_images, top=10, value_range=(0.1, 0.9))
    order, totals = borda_loop(similarities, neighbours, segment_images, 10, 0.1, 0.9)
    assert list(scores.images) == order
    np.testing.assert_allclose(scores.scores, [totals[i] for i in order])
    own = score_images(similarities, neighbours, segment_images, top=10)
    valid = similarities[:, :10][neighbours[:, :10] >= 0]
    assert list(own.images) == borda_loop(similarities, neighbours, segment_images, 10, valid.min(), valid.max())[0]
    for image, segment, query_segment in zip(scores.images, scores.best_segment, scores.best_query_segment):
        pairs = [(similarities[q, r], neighbours[q, r], q) for q in range(4) for r in range(10)
                 if neighbours[q, r] >= 0 and segment_images[neighbours[q, r]] == image]
        best = max(pairs)
        assert (segment, query_segment) == (best[1], best[2])
