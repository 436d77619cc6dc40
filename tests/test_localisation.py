"""Localisation metrics against pixel counting and loop-based definitions."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from retrieval.localisation import (
    IOU_THRESHOLDS,
    PIXEL_RETRIEVAL_IGNORED,
    best_box_iou,
    best_mask_iou,
    box_iou,
    localised_ap,
    localised_ap_range,
    mask_iou,
    mean_iou,
    per_query_localisation,
    pixel_retrieval_ap,
    pixel_retrieval_iou,
    pixel_retrieval_map,
    positive_ious,
)
from retrieval.protocols import score
from retrieval.protocols.localisation import add_localisation, split_options
from retrieval.ranking import Ranking
from retrieval.records import Dataset, Instance, QueryTruth, Record


def raster(box, size=24):
    """Pixels covered by an xyxy box with exclusive right/bottom edges."""
    x1, y1, x2, y2 = box
    return {(x, y) for x in range(size) for y in range(size) if x1 <= x < x2 and y1 <= y < y2}


def pixel_iou(a, b):
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def test_box_iou_matches_pixel_counting():
    rng = np.random.default_rng(0)
    corners = rng.integers(0, 24, size=(30, 2, 2))
    boxes = np.concatenate([corners.min(1), corners.max(1)], axis=1)  # x1 y1 x2 y2, some empty
    got = box_iou(boxes[:12], boxes[12:])
    for i in range(12):
        for j in range(18):
            assert got[i, j] == pytest.approx(pixel_iou(raster(boxes[i]), raster(boxes[12 + j])))


def test_box_iou_edge_cases():
    assert box_iou([0, 0, 10, 10], [10, 0, 20, 10])[0, 0] == 0.0  # touching, exclusive edges
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0])[0, 0] == 0.0
    assert box_iou([np.nan] * 4, [0, 0, 5, 5])[0, 0] == 0.0
    assert box_iou([0, 0, 10, 10], [0, 0, 5, 10])[0, 0] == pytest.approx(0.5)


def pixel_set(mask):
    return {tuple(p) for p in np.argwhere(mask)}


def test_mask_iou_and_best_match():
    rng = np.random.default_rng(1)
    a, b, c = (rng.random((9, 7)) > 0.5 for _ in range(3))
    assert mask_iou(a, b) == pytest.approx(pixel_iou(pixel_set(a), pixel_set(b)))
    assert mask_iou(np.zeros((9, 7)), b) == 0.0
    assert mask_iou(np.zeros((9, 7)), np.zeros((9, 7))) == 0.0
    assert best_mask_iou(a, [b, a, c]) == 1.0
    assert best_mask_iou(a, []) == 0.0
    # the prediction sits on the second of two instances of the query's object
    assert best_box_iou([10, 10, 20, 20], [[0, 0, 5, 5], [10, 10, 20, 30]]) == pytest.approx(0.5)
    assert best_box_iou([0, 0, 5, 5], np.empty((0, 4))) == 0.0


# Localised AP: brute force from the definition.


def bf_localised_ap(ranked, positives, ious, t, junk=()):
    found, total, rank, seen = 0, 0.0, 0, set()
    for item, iou in zip(ranked, ious):
        if item < 0 or item in junk or item in seen:
            continue
        seen.add(item)
        rank += 1
        iou = 0.0 if math.isnan(iou) else iou
        if item in positives and (t <= 0 or iou > t):
            found += 1
            total += found / rank
    return total / len(positives) if positives else math.nan


def bf_mean_iou(ranked, positives, ious):
    best = {}
    for item, iou in zip(ranked, ious):
        if item in positives and item not in best:
            best[item] = 0.0 if math.isnan(iou) else iou
    return sum(best.get(p, 0.0) for p in positives) / len(positives)


def random_query(rng, n_gallery=15, k=10):
    ranked = rng.permutation(n_gallery)[:k]
    ranked[rng.random(k) < 0.1] = -1
    positives = set(rng.choice(n_gallery, int(rng.integers(1, 5)), replace=False).tolist())
    ious = np.round(rng.random(k), 2)  # includes values exactly on thresholds
    ious[rng.random(k) < 0.15] = np.nan
    junk = {int(g) for g in rng.choice(n_gallery, 1) if g not in positives}
    return ranked, positives, ious, junk


def test_localised_ap_matches_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(80):
        ranked, positives, ious, junk = random_query(rng)
        pos, jk = sorted(positives), sorted(junk)
        for t in (0.0, 0.5, 0.7, 0.95):
            expected = bf_localised_ap(ranked, positives, ious, t, junk)
            assert localised_ap(ranked, pos, ious, t, jk) == pytest.approx(expected)
        thresholds = [0.5 + 0.05 * i for i in range(10)]
        expected_range = np.mean(
            [bf_localised_ap(ranked, positives, ious, t, junk) for t in thresholds]
        )
        assert localised_ap_range(ranked, pos, ious, junk=jk) == pytest.approx(expected_range)
        assert mean_iou(ranked, pos, ious) == pytest.approx(bf_mean_iou(ranked, positives, ious))


def test_localised_hand_case():
    ranked, ious = [3, 1, 2], [0.9, 0.4, 0.6]
    # at t=0.5 the positive at rank 2 fails and stays there as a negative
    assert localised_ap(ranked, [1, 2], ious, 0.5) == pytest.approx((1 / 3) / 2)
    assert localised_ap(ranked, [1, 2], ious, 0.0) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert localised_ap(ranked, [1, 2], ious, 0.6) == 0.0  # strict: 0.6 is not > 0.6
    # trapezoid: the one hit sits at 0-based place 2, P_left = 0 / 2, P_right = 1 / 3
    assert localised_ap(ranked, [1, 2], ious, 0.5, kind="trapezoid") == pytest.approx(
        ((0 + 1 / 3) / 2) / 2
    )
    assert mean_iou(ranked, [1, 2, 7], ious) == pytest.approx(1.0 / 3)
    assert positive_ious(ranked, [2, 7], ious) == pytest.approx([0.6, np.nan], nan_ok=True)
    assert list(IOU_THRESHOLDS) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    with pytest.raises(ValueError, match="kind"):
        localised_ap(ranked, [1], ious, 0.5, kind="other")


def test_per_query_localisation_table():
    rng = np.random.default_rng(3)
    cases = [random_query(rng) for _ in range(6)]
    indices = np.stack([c[0] for c in cases])
    ious = np.stack([c[2] for c in cases])
    truths = [QueryTruth(np.array(sorted(c[1])), np.array(sorted(c[3]))) for c in cases]
    table = per_query_localisation(indices, ious, truths)
    for q, (ranked, positives, row_ious, junk) in enumerate(cases):
        assert table["ap@iou50"][q] == pytest.approx(
            bf_localised_ap(ranked, positives, row_ious, 0.5, junk)
        )
        assert table["ap@iou0"][q] == pytest.approx(
            bf_localised_ap(ranked, positives, row_ious, 0, junk)
        )
        assert table["miou"][q] == pytest.approx(bf_mean_iou(ranked, positives, row_ious))


# Pixel-retrieval compatibility.


def bf_pixel_map(indices, ious, truths, ignored):
    """Written from docs/formats.md section 8: filter positives, trapezoid, drop, keep ignored."""
    per_threshold = []
    for step in range(50, 100, 5):
        t = step / 100
        total, denominator = 0.0, 0
        for q, truth in enumerate(truths):
            if q in ignored:
                denominator += 1
                continue
            iou_of = {}
            for item, iou in zip(indices[q], ious[q]):
                if item >= 0 and item not in iou_of:
                    iou_of[item] = 0.0 if math.isnan(iou) else iou
            passing = {p for p in truth.positives.tolist() if iou_of.get(p, 0.0) > t}
            if not passing:
                continue
            denominator += 1
            items = [i for i in indices[q] if i >= 0 and i not in set(truth.junk.tolist())]
            area, found = 0.0, 0
            for rank, item in enumerate(items):
                if item in passing:
                    left = 1.0 if rank == 0 else found / rank
                    found += 1
                    area += (left + found / (rank + 1)) / 2 / len(passing)
            total += area
        per_threshold.append(total / denominator if denominator else 0.0)
    return sum(per_threshold) / len(per_threshold)


def test_pixel_retrieval_worked_check():
    indices = np.tile(np.arange(4), (70, 1))
    ious = np.full((70, 4), 0.9)
    truths = [QueryTruth(np.array([0])) for _ in range(70)]
    got = pixel_retrieval_map(indices, ious, truths, ignored=PIXEL_RETRIEVAL_IGNORED["roxford5k"])
    assert got == pytest.approx(0.777143, abs=5e-7)


def test_pixel_retrieval_map_matches_brute_force():
    rng = np.random.default_rng(4)
    cases = [random_query(rng) for _ in range(20)]
    indices = np.stack([c[0] for c in cases])
    ious = np.stack([c[2] for c in cases])
    truths = [QueryTruth(np.array(sorted(c[1])), np.array(sorted(c[3]))) for c in cases]
    for ignored in ((), (3, 7)):
        expected = bf_pixel_map(indices, ious, truths, set(ignored))
        assert pixel_retrieval_map(indices, ious, truths, ignored) == pytest.approx(expected)


def test_pixel_retrieval_apnormalises_by_passing_positives():
    ranked, ious = [5, 1, 2, 3], [0.0, 0.8, 0.3, 0.9]
    # only 1 and 3 pass 0.5; 2 is a plain negative; trapezoid over 2 passing positives
    expected = ((0 + 1 / 2) / 2 + (1 / 3 + 2 / 4) / 2) / 2
    assert pixel_retrieval_ap(ranked, [1, 2, 3], ious, 0.5) == pytest.approx(expected)
    assert math.isnan(pixel_retrieval_ap(ranked, [2], ious, 0.5))


def test_pixel_retrieval_iou_skips_unpredicted_easy_positives():
    ranked, ious = [1, 2, 3], [0.6, np.nan, 0.2]
    # positives 1, 2 (no prediction), 4 (not returned); 2 is easy -> skipped, 4 hard -> 0
    skipping = pixel_retrieval_iou(ranked, [1, 2, 4], ious, skip_if_unpredicted=[2])
    assert skipping == pytest.approx(0.6 / 2)
    assert pixel_retrieval_iou(ranked, [1, 2, 4], ious) == pytest.approx(0.6 / 3)


# Localisation scoring under each protocol's LocalisationSpec.


def localising_case(protocol):
    """Two queries; gallery 0 and 2 hold query 0's object, 1 query 1's; every box exact."""
    box = (0.0, 0.0, 10.0, 10.0)
    queries = [Record(Path("q0.jpg"), "q0", (Instance("a"),)), Record(Path("q1.jpg"), "q1", (Instance("b"),))]
    holds = ["a", "b", "a", None]
    gallery = [Record(Path(f"g{i}.jpg"), f"g{i}", (Instance(o, box),) if o else ()) for i, o in enumerate(holds)]
    truths = [QueryTruth(np.array([0, 2])), QueryTruth(np.array([1]))]
    dataset = Dataset("toy", Path("."), queries, gallery, {"all": truths}, protocol=protocol)
    indices = np.array([[3, 0, 1, 2], [0, 1, 2, 3]])
    ranking = Ranking(
        indices=indices,
        scores=-np.arange(indices.size, dtype=np.float32).reshape(indices.shape),
        query_ids=np.array(dataset.query_keys),
        gallery_ids=np.array(dataset.gallery_keys),
        boxes=np.tile(np.array(box, dtype=np.float32), (*indices.shape, 1)),
    )
    return ranking, dataset


def test_localised_ap_is_the_protocols_own():
    maps = {}
    for protocol in ("instance", "revisitop"):
        ranking, dataset = localising_case(protocol)
        summary = add_localisation(score(ranking, dataset), ranking, dataset).summary["all"]
        assert summary["box_mAP@0"] == summary["mAP"]
        assert summary["box_mAP@50:95"] == pytest.approx(summary["mAP"])  # every box is exact
        assert summary["box_mIoU"] == 1.0
        maps[protocol] = summary["mAP"]
    assert maps["instance"] != maps["revisitop"]  # standard vs trapezoid AP


def test_localisation_options_belong_to_their_protocol():
    options = {"ks": [1, 5], "pixel_reference": True}
    assert split_options("revisitop", options) == ({"ks": [1, 5]}, {"pixel_reference": True})
    assert split_options("instance", options) == (options, {})
    ranking, dataset = localising_case("instance")
    result = score(ranking, dataset)
    assert add_localisation(result, ranking, dataset, pixel_reference=False).summary["all"]["box_mIoU"] == 1.0
    with pytest.raises(ValueError, match="'instance' has no localisation option 'pixel_reference'"):
        add_localisation(result, ranking, dataset, pixel_reference=True)
