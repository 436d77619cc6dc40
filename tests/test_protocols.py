"""Protocols on small hand-built datasets, checked against brute-force means."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from retrieval.metrics import score_rankings
from retrieval.protocols import ID_COLUMNS, available, get_protocol, score
from retrieval.ranking import Ranking
from retrieval.records import Dataset, QueryTruth, Record
from tests import test_metrics
from tests.fixtures_protocols import compute_map, gl3d_map, revisitop_gnd_t, soir_calculate_map, soir_recall


def make_dataset(truth, n_gallery, groups=None, protocol="instance", same_set=False):
    n_query = len(next(iter(truth.values())))
    groups = groups or [""] * n_query
    queries = [Record(Path(f"q{i}.jpg"), f"q{i}", group=g) for i, g in enumerate(groups)]
    gallery = [Record(Path(f"g{i}.jpg"), f"g{i}") for i in range(n_gallery)]
    if same_set:
        gallery = queries
    return Dataset("toy", Path("."), queries, gallery, truth, protocol=protocol)


def make_ranking(indices, dataset):
    indices = np.asarray(indices, dtype=np.int64)
    return Ranking(
        indices=indices,
        scores=-np.arange(indices.size, dtype=np.float32).reshape(indices.shape),
        query_ids=np.array(dataset.query_keys),
        gallery_ids=np.array(dataset.gallery_keys),
    )


def truth(positives, junk=()):
    return QueryTruth(np.array(positives, dtype=np.int64), np.array(junk, dtype=np.int64))


def bf_ap(ranked, positives, junk=()):
    found, total, rank = 0, 0.0, 0
    for item in ranked:
        if item < 0 or item in junk:
            continue
        rank += 1
        if item in positives:
            found += 1
            total += found / rank
    return total / len(positives)


def bf_hit(ranked, positives, n):
    return float(any(item in positives for item in [i for i in ranked if i >= 0][:n]))


def bf_trapezoid(ranked, positives, junk=(), dedupe=True):
    items, seen = [], set()
    for item in ranked:
        if item < 0 or item in junk or (dedupe and item in seen):
            continue
        seen.add(item)
        items.append(item)
    area, recall_before, precision_before, found = 0.0, 0.0, 1.0, 0
    for rank, item in enumerate(items, 1):
        found += item in positives
        recall, precision = found / len(positives), found / rank
        area += (recall - recall_before) * (precision_before + precision) / 2
        recall_before, precision_before = recall, precision
    return area


# Registry.


def test_registry_lists_and_rejects():
    assert {"instance", "revisitop", "vpr", "gl3d"} <= set(available())  # others may join
    with pytest.raises(ValueError, match=", ".join(sorted(available()))):
        get_protocol("nope")


def test_alignment_is_checked():
    dataset = make_dataset({"all": [truth([0])]}, n_gallery=3)
    ranking = make_ranking([[0, 1, 2]], dataset)
    ranking.query_ids = np.array(["other"])
    with pytest.raises(ValueError, match="queries"):
        get_protocol("instance")(ranking, dataset)
    ranking = make_ranking([[0, 1, 7]], dataset)
    with pytest.raises(ValueError, match="past the end"):
        get_protocol("instance")(ranking, dataset)


# instance


def instance_case(seed=0, n_query=24, n_gallery=15, k=8):
    rng = np.random.default_rng(seed)
    truths, indices = [], []
    for q in range(n_query):
        npos = 0 if q % 7 == 3 else int(rng.integers(1, 5))
        truths.append(truth(sorted(rng.choice(n_gallery, npos, replace=False).tolist())))
        row = rng.permutation(n_gallery)[:k]
        if q % 5 == 0:
            row[k // 2:] = -1  # a short list, padded
        indices.append(row)
    groups = ["OWID" if q % 3 else "RoboTools" for q in range(n_query)]
    return make_dataset({"all": truths}, n_gallery, groups), np.array(indices)


def test_instance_protocol_summary_per_group():
    dataset, indices = instance_case()
    result = get_protocol("instance")(make_ranking(indices, dataset), dataset, ks=(1, 5, 20))
    assert set(result.summary) == {"all", "all/OWID", "all/RoboTools"}
    assert list(result.per_query.columns[: len(ID_COLUMNS)]) == list(ID_COLUMNS)
    assert len(result.per_query) == len(dataset.queries)
    truths = dataset.truth["all"]
    for label, members in [
        ("all", range(len(truths))),
        ("all/OWID", [q for q in range(len(truths)) if q % 3]),
        ("all/RoboTools", [q for q in range(len(truths)) if q % 3 == 0]),
    ]:
        with_pos = [q for q in members if len(truths[q].positives)]
        positives = [set(truths[q].positives.tolist()) for q in with_pos]
        aps = [bf_ap(indices[q], p) for q, p in zip(with_pos, positives)]
        hits = [bf_hit(indices[q], p, 5) for q, p in zip(with_pos, positives)]
        assert result.summary[label]["mAP"] == pytest.approx(np.mean(aps))
        assert result.summary[label]["hit@5"] == pytest.approx(np.mean(hits))
        assert result.counts[label] == {
            "n_queries": len(members),
            "n_queries_without_positives": len(members) - len(with_pos),
        }
    assert {"mAP@20", "P@1", "recall@5", "hit@20"} <= set(result.summary["all"])


def test_instance_fyn_mode_and_validation():
    dataset, indices = instance_case(seed=1)
    ranking = make_ranking(indices, dataset)
    result = get_protocol("instance")(ranking, dataset, ap="fyn")
    truths = dataset.truth["all"]
    expected = []
    for q, t in enumerate(truths):
        found = [i for i in indices[q] if i in set(t.positives.tolist())]
        expected.append(bf_ap(indices[q], set(found)) if found else 0.0)
    assert result.summary["all"]["mAP"] == pytest.approx(np.mean(expected))
    with pytest.raises(ValueError, match=r"^dataset.protocol_options.ap=found is not valid: choose standard or fyn$"):
        get_protocol("instance")(ranking, dataset, ap="found")


def test_score_uses_dataset_protocol():
    """`score` is the protocol the dataset names: the same ranks score one way as `instance` (AP
    over each query's positives) and another as `revisitop` (trapezoidal AP, junk skipped)."""
    ranked, positives, junk = [[4, 0, 9, 5, 3, 8, 1, 7, 2, 6]], [0, 3, 7], [5]
    instance = make_dataset({"all": [truth(positives)]}, n_gallery=10)
    result = score(make_ranking(ranked, instance), instance)
    assert result.summary["all"]["mAP"] == pytest.approx(bf_ap(ranked[0], set(positives)))
    revisitop = make_dataset({setup: [truth(positives, junk)] for setup in ("easy", "medium", "hard")}, 10, protocol="revisitop")
    result = score(make_ranking(ranked, revisitop), revisitop)
    assert set(result.summary) == {"easy", "medium", "hard"}
    assert result.summary["medium"]["mAP"] == pytest.approx(bf_trapezoid(ranked[0], set(positives), set(junk)))
    assert bf_trapezoid(ranked[0], set(positives), set(junk)) != pytest.approx(bf_ap(ranked[0], set(positives)))


# revisitop


def test_revisitop_setups_and_vector():
    ranked = [4, 0, 9, 5, 3, 8, 1, 7, 2, 6]
    easy, hard, junk = [0, 3], [7], [5]
    setups = {
        "easy": [truth(easy, sorted(junk + hard)), truth([], [1])],
        "medium": [truth(sorted(easy + hard), junk), truth([2, 6], [1])],
        "hard": [truth(hard, sorted(junk + easy)), truth([], [1])],
    }
    dataset = make_dataset(setups, n_gallery=10, protocol="revisitop")
    second = [1, 2, 3, 6, 0, 4, 5, 7, 8, 9]
    result = get_protocol("revisitop")(make_ranking([ranked, second], dataset), dataset)
    medium = result.per_query[result.per_query["setup"] == "medium"]
    assert medium["ap"].iloc[0] == pytest.approx(0.3492063492)
    second_ap = bf_trapezoid(second, {2, 6}, {1})
    assert result.summary["medium"]["mAP"] == pytest.approx((0.3492063492063492 + second_ap) / 2)
    for setup in ("easy", "hard"):
        t = setups[setup][0]
        pos, jk = set(t.positives.tolist()), set(t.junk.tolist())
        assert result.summary[setup]["mAP"] == pytest.approx(bf_trapezoid(ranked, pos, jk))
        assert result.counts[setup]["n_queries_without_positives"] == 1
    # junk-free medium positions of the first query: 2, 4, 7 (1-based)
    assert medium[["mP@1", "mP@5", "mP@10"]].iloc[0].tolist() == pytest.approx([0, 0.4, 3 / 7])
    assert set(result.summary["medium"]) == {"mAP", "mP@1", "mP@5", "mP@10"}


# vpr


def test_vpr_denominators():
    setups = {"all": [truth([3]), truth([]), truth([0, 1]), truth([9])]}
    dataset = make_dataset(setups, n_gallery=10, protocol="vpr")
    indices = [[3, 1, -1], [0, 1, 2], [5, 6, 1], [2, 4, 5]]
    ranking = make_ranking(indices, dataset)
    default = get_protocol("vpr")(ranking, dataset, ns=(1, 3))
    assert default.summary["all"] == pytest.approx({"hit@1": 1 / 4, "hit@3": 2 / 4})
    revisit = get_protocol("vpr")(ranking, dataset, ns=(1, 3), denominator="with_positives")
    assert revisit.summary["all"] == pytest.approx({"hit@1": 1 / 3, "hit@3": 2 / 3})
    assert default.counts["all"]["n_queries_without_positives"] == 1
    with pytest.raises(ValueError, match="denominator"):
        get_protocol("vpr")(ranking, dataset, denominator="some")


# gl3d


def test_gl3d_cuts_raw_ranking_drops_self_and_dedupes():
    n = 8
    positives = {0: [1, 2], 1: [0], 2: [], 3: [2, 4, 5]}
    truths = [truth(positives[q], [q]) if q in positives else truth([], [q]) for q in range(n)]
    dataset = make_dataset({"all": truths}, n_gallery=n, protocol="gl3d", same_set=True)
    indices = np.array([
        [0, 1, 1, 5, 2, 6, 7, 3],  # self first, neighbour 1 twice, 2 at raw place 5
        [2, 1, 0, 3, 4, 5, 6, 7],
        [2, 0, 1, 3, 4, 5, 6, 7],
        [4, 3, 2, 5, 5, 0, 1, 6],
        *[np.roll(np.arange(n), -q) for q in range(4, n)],
    ])
    ranking = make_ranking(indices, dataset)
    depth = 5
    clean = get_protocol("gl3d")(ranking, dataset, depth=depth)
    reference = get_protocol("gl3d")(ranking, dataset, depth=depth, ap="reference")
    for q, pos in positives.items():
        if not pos:
            continue
        top = indices[q][:depth]
        rows_clean = clean.per_query.set_index("query")[f"ap@{depth}"]
        rows_ref = reference.per_query.set_index("query")[f"ap@{depth}"]
        assert rows_clean[q] == pytest.approx(bf_trapezoid(top, set(pos), {q}))
        assert rows_ref[q] == pytest.approx(bf_trapezoid(top, set(pos), {q}, dedupe=False))
    # query 0, clean: junk-free top = [1, 5, 2] -> neighbours at 0 and 2 of 2
    assert clean.per_query.set_index("query")[f"ap@{depth}"][0] == pytest.approx(
        (1 + 1) / 2 / 2 + (1 / 2 + 2 / 3) / 2 / 2
    )
    assert reference.per_query.set_index("query")[f"ap@{depth}"][0] > 1  # duplicate counted twice
    scored_queries = [q for q in range(n) if positives.get(q)]
    assert clean.counts["all"] == {"n_queries": n, "n_queries_without_positives": n - 3}
    assert clean.summary["all"][f"mAP@{depth}"] == pytest.approx(
        clean.per_query[f"ap@{depth}"].iloc[scored_queries].mean()
    )
    with pytest.raises(ValueError, match=r"^dataset.protocol_options.ap=fyn is not valid: choose standard or reference$"):
        get_protocol("gl3d")(ranking, dataset, ap="fyn")


# Reference modes: the reference's own computation on inputs only it defines.


def test_revisitop_reference_counts_repeats_as_compute_map():
    gnd = [
        {"easy": [0, 3], "hard": [7], "junk": [5]},
        {"easy": [2, 2], "hard": [2, 6], "junk": [1]},  # repeats: ok lists 2 three times in Medium
        {"easy": [], "hard": [4], "junk": []},
    ]
    ranks = np.array([
        [4, 0, 0, 9, 5, 3, 8, 1, 7, 2],  # 0 twice
        [1, 2, 3, 2, 6, 0, 4, 5, 7, 6],  # 2 and 6 twice
        [4, 4, 4, 1, 2, 3, 5, 6, 7, 8],
    ])
    setups, listed = {}, {}
    for setup in ("easy", "medium", "hard"):
        gnd_t = revisitop_gnd_t(gnd, setup)
        setups[setup] = [truth(sorted(set(g["ok"].tolist())), sorted(set(g["junk"].tolist()))) for g in gnd_t]
        listed[setup] = {q: len(g["ok"]) for q, g in enumerate(gnd_t) if len(g["ok"]) != len(set(g["ok"].tolist()))}
    dataset = make_dataset(setups, n_gallery=10, protocol="revisitop")
    dataset.extra["listed_positives"] = listed
    ranking = make_ranking(ranks, dataset)
    reference = get_protocol("revisitop")(ranking, dataset, ap="reference")
    default = get_protocol("revisitop")(ranking, dataset)
    for setup in ("easy", "medium", "hard"):
        gnd_t = revisitop_gnd_t(gnd, setup)
        expected_map, expected_mp = compute_map(ranks.T, gnd_t, (1, 5, 10))
        summary = reference.summary[setup]
        assert summary["mAP"] == pytest.approx(expected_map, abs=1e-12)
        assert [summary[f"mP@{k}"] for k in (1, 5, 10)] == pytest.approx(expected_mp.tolist(), abs=1e-12)
        assert reference.counts[setup] == default.counts[setup]
        # the default on the same ranking: each item once, N = distinct positives
        rows = default.per_query[default.per_query["setup"] == setup]["ap"].tolist()
        for q, t in enumerate(setups[setup]):
            pos, jk = set(t.positives.tolist()), set(t.junk.tolist())
            assert close(rows[q], bf_trapezoid(ranks[q], pos, jk) if pos else float("nan"))
    assert reference.summary["medium"]["mAP"] != pytest.approx(default.summary["medium"]["mAP"])
    with pytest.raises(ValueError, match=r"^dataset.protocol_options.ap=fyn is not valid: choose standard or reference$"):
        get_protocol("revisitop")(ranking, dataset, ap="fyn")


def close(a, b):
    return (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-12)


def test_gl3d_reference_counts_duplicated_ground_truth_lines():
    n = 6
    lines = ["0 1", "0 1", "0 2", "0 0", "1 0", "3 4", "3 4", "3 4", "3 5"]
    positives = [sorted({int(l.split()[1]) for l in lines if l.split()[0] == str(q) and l.split()[1] != str(q)})
                 for q in range(n)]
    truths = [truth(positives[q], [q]) for q in range(n)]
    dataset = make_dataset({"all": truths}, n_gallery=n, protocol="gl3d", same_set=True)
    dataset.extra["listed_positives"] = {"all": {"0": 3, "3": 4}}  # as written to metrics.json
    indices = np.array([
        [0, 1, 1, 5, 2, 3],
        [1, 0, 2, 3, 4, 5],
        [2, 0, 1, 3, 4, 5],
        [4, 3, 4, 5, 0, 1],
        [4, 0, 1, 2, 3, 5],
        [5, 0, 1, 2, 3, 4],
    ])
    depth = 5
    ranking = make_ranking(indices, dataset)
    reference = get_protocol("gl3d")(ranking, dataset, depth=depth, ap="reference")
    default = get_protocol("gl3d")(ranking, dataset, depth=depth)
    results = [f"{q} {j}" for q in range(n) for j in indices[q][:depth]]
    assert reference.summary["all"][f"mAP@{depth}"] == pytest.approx(gl3d_map(n, lines, results), abs=1e-12)
    ref_rows = reference.per_query.set_index("query")[f"ap@{depth}"]
    assert ref_rows[0] == pytest.approx(((1 + 1) / 2 + (1 + 1) / 2 + (2 / 3 + 3 / 4) / 2) / 3)
    # the default on the same input: duplicates dropped, N = distinct neighbours
    rows = default.per_query.set_index("query")[f"ap@{depth}"]
    for q in range(n):
        expected = bf_trapezoid(indices[q][:depth], set(positives[q]), {q}) if positives[q] else np.nan
        assert close(rows[q], expected)
    assert reference.counts == default.counts


def test_instance_fyn_skips_precision_when_gallery_is_smaller_than_k():
    # gallery of 4; queries in two groups; query 3 has no positives; rankings repeat ids
    setups = {"all": [truth([0, 2]), truth([1]), truth([3]), truth([])]}
    dataset = make_dataset(setups, n_gallery=4, groups=["A", "A", "B", "B"])
    indices = np.array([[0, 0, 2, 1], [3, 1, 1, 0], [3, 2, 1, 0], [0, 1, 2, 3]])
    gallery_labels = np.array([10, 11, 10, 12])  # instance 10 in items 0 and 2, ...
    query_labels = [10, 11, 12, 13]
    ranking = make_ranking(indices, dataset)
    fyn = get_protocol("instance")(ranking, dataset, ks=(1, 3, 5), ap="fyn")
    members = {"all": [0, 1, 2, 3], "all/A": [0, 1], "all/B": [2, 3]}
    for label, queries in members.items():
        retrieved = [gallery_labels[indices[q]] for q in queries]
        labels = [query_labels[q] for q in queries]
        for k in (1, 3, 5):
            expected_map, expected_pk = soir_calculate_map(retrieved, labels, k)
            assert fyn.summary[label]["mAP"] == pytest.approx(expected_map, abs=1e-12)
            assert fyn.summary[label][f"P@{k}"] == pytest.approx(expected_pk, abs=1e-12)
            assert fyn.summary[label][f"hit@{k}"] == pytest.approx(soir_recall(retrieved, labels, k))
    assert fyn.summary["all"]["P@5"] == 0.0 and fyn.per_query["P@5"].isna().all()
    # the default on the same input: each item once, P@5 over the 4 gallery items, query 3 out
    default = get_protocol("instance")(ranking, dataset, ks=(1, 3, 5))
    expected = []
    for q in range(3):
        kept = list(dict.fromkeys(indices[q].tolist()))
        pos = set(setups["all"][q].positives.tolist())
        expected.append(sum(item in pos for item in kept[:5]) / 4)
    assert default.summary["all"]["P@5"] == pytest.approx(np.mean(expected))
    assert default.summary["all"]["mAP"] == pytest.approx(np.mean([
        bf_ap(list(dict.fromkeys(indices[q].tolist())), set(setups["all"][q].positives.tolist()))
        for q in range(3)
    ]))
    assert np.isnan(default.per_query["P@5"].iloc[3])


# The fyn mode per query, against transcriptions of SoIR's calculate_map and get_recalls.


def fyn_scores(indices, truths, n_gallery, ks):
    """The instance protocol's fyn mode on one setup, as `metrics.score_rankings` returns the
    standard one: the summary with the query counts, and the per-query table."""
    dataset = make_dataset({"all": truths}, n_gallery)
    result = get_protocol("instance")(make_ranking(indices, dataset), dataset, ks=ks, ap="fyn")
    per_query = result.per_query.drop(columns=[column for column in ID_COLUMNS if column != "npos"])
    return {**result.summary["all"], **result.counts["all"]}, per_query


def test_instance_fyn_keeps_empty_queries_at_zero():
    indices, truths = test_metrics.random_table(4)
    summary, per_query = fyn_scores(indices, truths, n_gallery=20, ks=(5,))
    expected = [
        test_metrics.bf_ap(indices[q], t.positives.tolist(), t.junk.tolist(), found_only=True)
        for q, t in enumerate(truths)
    ]
    assert summary["mAP"] == pytest.approx(sum(expected) / len(expected))
    assert not per_query.isna().any().any()
    assert (per_query.loc[per_query["npos"] == 0, "hit@5"] == 0).all()


@pytest.mark.parametrize("n_gallery", [3, 4, 12])
def test_instance_fyn_matches_soir_with_repeats_and_small_gallery(n_gallery):
    rng = np.random.default_rng(n_gallery)
    ks = (1, 3, 5, 10)
    for _ in range(20):
        indices, truths, retrieved, query_labels = test_metrics.fyn_case(rng, n_gallery)
        summary, per_query = fyn_scores(indices, truths, n_gallery=n_gallery, ks=ks)
        for k in ks:
            expected_map, expected_pk = soir_calculate_map(retrieved, query_labels, k)
            assert summary["mAP"] == pytest.approx(expected_map, abs=1e-12)
            assert summary[f"P@{k}"] == pytest.approx(expected_pk, abs=1e-12)
            assert summary[f"hit@{k}"] == pytest.approx(soir_recall(retrieved, query_labels, k), abs=1e-12)
            skipped = per_query[f"P@{k}"].isna()
            assert skipped.all() if k > n_gallery else not skipped.any()
        assert summary["n_queries_without_positives"] >= 1


def test_instance_fyn_precision_rule_by_hand_and_default_unchanged():
    # gallery of 3, one query with positives {0, 2}, one without; ranking of query 0 repeats 0
    truths = [QueryTruth(np.array([0, 2])), QueryTruth(np.array([], dtype=np.int64))]
    indices = np.array([[0, 0, 1], [1, 2, 0]])
    summary, per_query = fyn_scores(indices, truths, n_gallery=3, ks=(2, 5))
    assert per_query["P@2"].tolist() == [1.0, 0.0]  # 0 counted twice; the empty query scores 0
    assert per_query["P@5"].isna().all()  # the gallery holds fewer than 5 items: skipped
    assert summary["P@5"] == 0.0  # SoIR's mean over no query
    assert summary["mAP"] == pytest.approx(((1 + 1) / 2 + 0) / 2)
    # the default on the same input: 0 once (ranking [0, 1]), P@5 divided by the gallery size,
    # positive 2 never returned is a miss, the empty query left out
    summary, per_query = score_rankings(indices, truths, n_gallery=3, ks=(2, 5))
    assert per_query["P@2"].iloc[0] == pytest.approx(1 / 2)
    assert per_query["P@5"].iloc[0] == pytest.approx(1 / 3)
    assert math.isnan(per_query["P@5"].iloc[1])
    assert summary["P@5"] == pytest.approx(1 / 3)
    assert summary["mAP"] == pytest.approx(1 / 2)
