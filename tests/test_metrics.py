"""Metric functions against the worked checks of docs/formats.md section 2 and brute-force definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from retrieval.metrics import (
    ap_at_k,
    average_precision,
    drop_junk,
    hit_at_k,
    precision_at_k,
    recall_at_k,
    revisitop_mp_at_k,
    score_rankings,
    trapezoid_ap,
)
from retrieval.records import QueryTruth

# Brute-force references: written straight from the definitions with plain Python loops.


def scored(ranked, junk, unique=True):
    out, seen = [], set()
    for item in ranked:
        if item < 0 or item in set(junk) or (unique and item in seen):
            continue
        seen.add(item)
        out.append(int(item))
    return out


def bf_ap(ranked, positives, junk=(), found_only=False):
    items = scored(ranked, junk)
    found, total = 0, 0.0
    for rank, item in enumerate(items, start=1):
        if item in set(positives):
            found += 1
            total += found / rank
    normaliser = found if found_only else len(set(positives))
    if normaliser == 0:
        return 0.0 if found_only else math.nan
    return total / normaliser


def bf_ap_at_k(ranked, positives, k, junk=()):
    if not positives:
        return math.nan
    items = scored(ranked, junk)[:k]
    found, total = 0, 0.0
    for rank, item in enumerate(items, start=1):
        if item in set(positives):
            found += 1
            total += found / rank
    return total / min(len(set(positives)), k)


def bf_count_top(ranked, positives, k, junk=()):
    return sum(1 for item in scored(ranked, junk)[:k] if item in set(positives))


def bf_trapezoid(ranked, positives, junk=(), unique=True):
    """Area under the precision-recall curve by trapezoids, walking every rank."""
    n = len(set(positives))
    if n == 0:
        return math.nan
    area, recall_before, precision_before, found = 0.0, 0.0, 1.0, 0
    for rank, item in enumerate(scored(ranked, junk, unique), start=1):
        if item in set(positives):
            found += 1
        recall, precision = found / n, found / rank
        area += (recall - recall_before) * (precision_before + precision) / 2
        recall_before, precision_before = recall, precision
    return area


def bf_mp(ranked, positives, k, junk=()):
    places = [i for i, item in enumerate(scored(ranked, junk), 1) if item in set(positives)]
    if not places:
        return 0.0
    kq = min(max(places), k)
    return len([p for p in places if p <= kq]) / kq


def close(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12)


# docs/formats.md worked checks (section 2) and hand-computed cases.

VECTOR = [4, 0, 9, 5, 3, 8, 1, 7, 2, 6]


def test_revisitop_trapezoid_vector():
    assert trapezoid_ap(VECTOR, [0, 3, 7], [5]) == pytest.approx(0.3492063492, abs=1e-10)
    assert trapezoid_ap(VECTOR[:6], [0, 3, 7], [5]) == pytest.approx(2 / 9, abs=1e-12)


def test_revisitop_mp_vector():
    ranked = [9, 0, 8, 3, 1, 2, 7]  # positives at 1-based positions 2, 4, 7
    values = [revisitop_mp_at_k(ranked, [0, 3, 7], k) for k in (1, 5, 10)]
    assert values == pytest.approx([0.0, 0.4, 3 / 7], abs=1e-12)


def test_drop_junk_removes_padding_junk_and_repeats():
    assert drop_junk([3, -1, 5, 3, 2, -1], junk=[5]).tolist() == [3, 2]
    assert drop_junk([3, 3, -1], unique=False).tolist() == [3, 3]


def test_hand_computed_average_precision():
    # positives at ranks 2 and 3: (1/2 + 2/3) / 2
    assert average_precision([1, 0, 2], [0, 2]) == pytest.approx(7 / 12)
    # positive 5 never returned: standard halves, "found" does not
    assert average_precision([0, 1], [0, 5]) == pytest.approx(0.5)
    assert average_precision([0, 1], [0, 5], normaliser="found") == pytest.approx(1.0)
    assert average_precision([1, 2], [0], normaliser="found") == 0.0
    assert math.isnan(average_precision([1, 2], []))
    with pytest.raises(ValueError, match="normaliser"):
        average_precision([0], [0], normaliser="other")


def test_junk_is_as_if_never_returned():
    assert average_precision([7, 0], [0], junk=[7]) == 1.0
    assert precision_at_k([7, 0], [0], 1, n_gallery=10, junk=[7]) == 1.0


def test_hand_computed_cutoff_metrics():
    ranked, positives = [4, 0, 1, 2], [0, 2, 9]
    assert ap_at_k(ranked, positives, 2) == pytest.approx(0.5 / 2)
    assert ap_at_k(ranked, positives, 4) == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert precision_at_k(ranked, positives, 4, n_gallery=10) == pytest.approx(0.5)
    assert recall_at_k(ranked, positives, 4) == pytest.approx(2 / 3)
    assert hit_at_k(ranked, positives, 1) == 0.0
    assert hit_at_k(ranked, positives, 2) == 1.0


def test_precision_when_k_exceeds_gallery():
    # gallery of 3 items, all returned, 2 positives: P@10 = 2 / 3, not 2 / 10
    assert precision_at_k([0, 1, 2], [0, 2], 10, n_gallery=3) == pytest.approx(2 / 3)
    # one gallery item is junk: a perfect ranking can fill only 2 places
    assert precision_at_k([0, 1, 2], [0, 2], 10, n_gallery=3, junk=[1]) == 1.0


def test_repeated_items_count_once():
    assert average_precision([0, 0, 1], [0, 1]) == 1.0
    assert recall_at_k([0, 0], [0, 1], 2) == 0.5
    assert trapezoid_ap([0, 0, 0], [0, 1], unique=False) > trapezoid_ap([0, 0, 0], [0, 1])


# Seeded random rankings against the brute force.


def random_case(rng, n_gallery):
    """A ranking (maybe truncated, padded with -1), positives (maybe none) and junk."""
    order = rng.permutation(n_gallery)
    npos = int(rng.integers(0, 6))
    positives = sorted(rng.choice(n_gallery, npos, replace=False).tolist())
    rest = [g for g in range(n_gallery) if g not in positives]
    junk = sorted(rng.choice(rest, int(rng.integers(0, 3)), replace=False).tolist())
    length = int(rng.integers(0, n_gallery + 1))
    ranked = np.full(n_gallery + 3, -1, dtype=np.int64)
    ranked[:length] = order[:length]
    return ranked, positives, junk


@pytest.mark.parametrize("seed", range(5))
def test_per_query_functions_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_gallery = 25
    for _ in range(60):
        ranked, positives, junk = random_case(rng, n_gallery)
        assert close(average_precision(ranked, positives, junk), bf_ap(ranked, positives, junk))
        assert close(
            average_precision(ranked, positives, junk, normaliser="found"),
            bf_ap(ranked, positives, junk, found_only=True),
        )
        assert close(trapezoid_ap(ranked, positives, junk), bf_trapezoid(ranked, positives, junk))
        for k in (1, 3, 10, 40):
            args = (ranked, positives, k, junk)
            top = bf_count_top(*args)
            cap = min(k, n_gallery - len(junk))
            assert close(ap_at_k(*args), bf_ap_at_k(*args))
            assert close(precision_at_k(ranked, positives, k, n_gallery, junk), top / cap)
            expected_recall = top / len(positives) if positives else math.nan
            assert close(recall_at_k(ranked, positives, k, junk), expected_recall)
            assert hit_at_k(ranked, positives, k, junk) == float(top > 0)
            assert close(revisitop_mp_at_k(*args), bf_mp(*args))


def test_trapezoid_matches_brute_force_with_repeats():
    rng = np.random.default_rng(11)
    for _ in range(50):
        ranked = rng.integers(-1, 12, size=15)
        positives = sorted(set(rng.integers(0, 12, size=4).tolist()))
        for unique in (True, False):
            assert close(
                trapezoid_ap(ranked, positives, [], unique),
                bf_trapezoid(ranked, positives, [], unique),
            )


def random_table(seed, n_query=30, n_gallery=20, k=12):
    rng = np.random.default_rng(seed)
    indices, truths = [], []
    for _ in range(n_query):
        ranked, positives, junk = random_case(rng, n_gallery)
        indices.append(ranked[:k])
        truths.append(QueryTruth(np.array(positives, dtype=np.int64), np.array(junk)))
    assert any(len(t.positives) == 0 for t in truths)
    return np.stack(indices), truths


@pytest.mark.parametrize("seed", range(3))
def test_score_rankings_standard(seed):
    indices, truths = random_table(seed)
    ks = (1, 5, 50)  # 50 exceeds both the list length and the gallery
    summary, per_query = score_rankings(indices, truths, n_gallery=20, ks=ks)
    scored_rows = [q for q, t in enumerate(truths) if len(t.positives)]
    assert summary["n_queries"] == len(truths)
    assert summary["n_queries_without_positives"] == len(truths) - len(scored_rows)

    def mean(values):
        return sum(values) / len(values)

    def args(q):
        return indices[q], truths[q].positives.tolist(), truths[q].junk.tolist()

    assert summary["mAP"] == pytest.approx(mean([bf_ap(*args(q)) for q in scored_rows]))
    for k in ks:
        ranked_pos_junk = [args(q) for q in scored_rows]
        assert summary[f"mAP@{k}"] == pytest.approx(
            mean([bf_ap_at_k(r, p, k, j) for r, p, j in ranked_pos_junk])
        )
        assert summary[f"P@{k}"] == pytest.approx(
            mean([bf_count_top(r, p, k, j) / min(k, 20 - len(j)) for r, p, j in ranked_pos_junk])
        )
        assert summary[f"recall@{k}"] == pytest.approx(
            mean([bf_count_top(r, p, k, j) / len(p) for r, p, j in ranked_pos_junk])
        )
        assert summary[f"hit@{k}"] == pytest.approx(
            mean([float(bf_count_top(r, p, k, j) > 0) for r, p, j in ranked_pos_junk])
        )
    empty = per_query["npos"] == 0
    assert per_query.loc[empty].drop(columns="npos").isna().all().all()
    assert list(per_query.columns[:2]) == ["npos", "ap"]


def test_score_rankings_rejects_bad_input():
    truths = [QueryTruth(np.array([0]))]
    with pytest.raises(ValueError, match="one row per truth"):
        score_rankings(np.zeros((2, 2), dtype=np.int64), truths, 3)


# The default metrics on the inputs reference modes exist for: repeated ids, overlapping lists
# (the reference modes themselves are tested with their protocols).


def random_reference_case(rng, n_gallery=12):
    """A ranking with repeated ids (and maybe trailing -1 padding), an `ok` list with repeats,
    and junk that may overlap the positives, as a gnd file with overlapping lists gives."""
    length = int(rng.integers(1, n_gallery + 6))
    ranked = rng.integers(0, n_gallery, size=length)
    ok = rng.integers(0, n_gallery, size=int(rng.integers(0, 6))).tolist()
    junk = rng.integers(0, n_gallery, size=int(rng.integers(0, 4))).tolist()
    padded = np.concatenate([ranked, np.full(int(rng.integers(0, 3)), -1)])
    return ranked, padded, ok, junk


def test_revisitop_default_unchanged_on_repeats():
    rng = np.random.default_rng(22)
    for _ in range(200):
        _, padded, ok, junk = random_reference_case(rng)
        positives = sorted(set(ok) - set(junk))
        assert close(trapezoid_ap(padded, positives, junk), bf_trapezoid(padded, positives, junk))
        for k in (1, 5, 10):
            if positives:
                assert close(revisitop_mp_at_k(padded, positives, k, junk), bf_mp(padded, positives, k, junk))


def fyn_case(rng, n_gallery, n_query=9, n_labels=4):
    """Gallery labels, query labels (one with no gallery item) and full-length rankings (one
    entry per gallery item, as SoIR retrieves the whole gallery) with repeated ids."""
    gallery_labels = rng.integers(0, n_labels, size=n_gallery)
    query_labels = np.append(rng.integers(0, n_labels, size=n_query - 1), n_labels)  # last: none
    indices = np.stack([rng.integers(0, n_gallery, size=n_gallery) for _ in range(n_query)])
    truths = [
        QueryTruth(np.flatnonzero(gallery_labels == label).astype(np.int64)) for label in query_labels
    ]
    retrieved = [gallery_labels[row] for row in indices]
    return indices, truths, retrieved, query_labels


@pytest.mark.parametrize("seed", range(2))
def test_score_rankings_standard_unchanged_on_repeats(seed):
    rng = np.random.default_rng(100 + seed)
    n_gallery, ks = 4, (1, 3, 5)
    indices, truths, _, _ = fyn_case(rng, n_gallery)
    summary, per_query = score_rankings(indices, truths, n_gallery=n_gallery, ks=ks)
    rows = [q for q, t in enumerate(truths) if len(t.positives)]
    for q in range(len(truths)):
        ranked, positives = indices[q], truths[q].positives.tolist()
        if q not in rows:
            assert per_query.loc[q].drop("npos").isna().all()
            continue
        assert close(per_query.loc[q, "ap"], bf_ap(ranked, positives))
        for k in ks:
            assert close(per_query.loc[q, f"P@{k}"], bf_count_top(ranked, positives, k) / min(k, n_gallery))
            assert per_query.loc[q, f"hit@{k}"] == float(bf_count_top(ranked, positives, k) > 0)
