"""Revisited Oxford/Paris adapter: setups, query boxes, errors (distractors: test_distractors.py)."""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval import metrics
from retrieval.datasets import load_dataset
from retrieval.localisation import PIXEL_RETRIEVAL_IGNORED, pixel_retrieval_map
from retrieval.masks import decode
from retrieval.protocols.revisitop import revisitop_reference
from tests.fixtures_protocols import (
    ROXFORD_GND,
    compute_map,
    compute_map_query,
    make_pixel_labels,
    make_revisitop,
    revisitop_gnd_t,
    run_evaluate,
    write_ranking,
)
from tests.test_metrics import bf_mp, bf_trapezoid, random_reference_case


def expected_truth(setup: str, entry: dict) -> tuple[set[int], set[int]]:
    """docs/formats.md section 2 table, written out longhand."""
    easy, hard, junk = set(entry["easy"]), set(entry["hard"]), set(entry["junk"])
    if setup == "easy":
        return easy, junk | hard
    if setup == "medium":
        return easy | hard, junk
    return hard, junk | easy


@pytest.fixture()
def oxford(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, make_revisitop(tmp_path, "roxford5k")


def test_setups_follow_the_table(oxford):
    root, gnd = oxford
    dataset = load_dataset("revisitop", root=root, name="roxford5k")
    assert dataset.protocol == "revisitop"
    assert set(dataset.truth) == {"easy", "medium", "hard"}
    for setup, truths in dataset.truth.items():
        assert len(truths) == len(ROXFORD_GND)
        for truth, entry in zip(truths, ROXFORD_GND):
            positives, junk = expected_truth(setup, entry)
            assert truth.positives.tolist() == sorted(positives)
            assert truth.junk.tolist() == sorted(junk)
            assert truth.positives.dtype == np.int64 and truth.junk.dtype == np.int64
    # query 1 has no easy images and query 2 no hard ones: empty positives are kept, not dropped
    assert dataset.truth["easy"][1].positives.size == 0
    assert dataset.truth["hard"][2].positives.size == 0


def test_records_and_keys(oxford):
    root, gnd = oxford
    dataset = load_dataset("revisitop", root=root, name="roxford5k")
    assert dataset.root == root / "roxford5k"
    assert dataset.gallery_keys == [f"jpg/{stem}.jpg" for stem in gnd["imlist"]]
    assert dataset.query_keys == [f"jpg/{stem}.jpg" for stem in gnd["qimlist"]]
    assert all(record.instances == () for record in dataset.gallery)
    assert [record.instance_ids for record in dataset.queries] == [("q0",), ("q1",), ("q2",)]
    assert all(record.path.is_file() for record in dataset.queries + dataset.gallery)


def test_query_boxes_stay_fractional_with_pillow_rounding_note(oxford):
    root, _ = oxford
    dataset = load_dataset("revisitop", root=root, name="roxford5k")
    boxes = [record.instances[0].box for record in dataset.queries]
    assert boxes == [tuple(float(v) for v in entry["bbx"]) for entry in ROXFORD_GND]
    assert dataset.extra["crop_rounding"] == "pillow"
    assert dataset.extra["crop_queries"] is True
    # What "pillow" means: each coordinate rounded half-to-even, right/bottom exclusive.
    image = Image.open(dataset.queries[0].path)
    crop = image.crop(boxes[0])  # (3.5, 2.5, 30.5, 20.49) -> (4, 2, 30, 20)
    assert crop.size == (30 - 4, 20 - 2)
    assert np.array_equal(np.asarray(crop), np.asarray(image)[2:20, 4:30])


def test_uncropped_queries_have_no_box(oxford):
    root, _ = oxford
    dataset = load_dataset("revisitop", root=root, name="roxford5k", crop_queries=False)
    assert all(record.instances[0].box is None for record in dataset.queries)
    assert dataset.extra["crop_queries"] is False


def test_missing_files_explain_layout_and_prepare(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        load_dataset("revisitop", root=tmp_path, name="roxford5k")
    message = str(error.value)
    assert "gnd_roxford5k.pkl" in message and "jpg/" in message
    assert f"python -m retrieval.datasets prepare roxford5k --root {tmp_path}" in message

    gnd = make_revisitop(tmp_path, "roxford5k")
    (tmp_path / "roxford5k" / "jpg" / f"{gnd['imlist'][3]}.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=gnd["imlist"][3]):
        load_dataset("revisitop", root=tmp_path, name="roxford5k")


def test_ground_truth_pickle_cannot_run_code(tmp_path):
    make_revisitop(tmp_path, "roxford5k")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", "wb") as handle:
        pickle.dump({"imlist": [], "qimlist": [], "gnd": [Evil()]}, handle)
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_dataset("revisitop", root=tmp_path, name="roxford5k")


def test_out_of_range_index_is_an_error(tmp_path):
    gnd = make_revisitop(tmp_path, "roxford5k")
    gnd["gnd"][0]["easy"] = [len(gnd["imlist"])]
    with open(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", "wb") as handle:
        pickle.dump(gnd, handle)
    with pytest.raises(ValueError, match="outside imlist"):
        load_dataset("revisitop", root=tmp_path, name="roxford5k")


def trapezoid_ap(ranked: list[int], positives: set[int], junk: set[int]) -> float:
    """docs/formats.md section 2, longhand: junk dropped, N = all positives."""
    kept = [g for g in ranked if g not in junk]
    ranks = [r for r, g in enumerate(kept) if g in positives]
    total = 0.0
    for j, r in enumerate(ranks):
        left = 1.0 if r == 0 else j / r
        total += (left + (j + 1) / (r + 1)) / 2
    return total / len(positives)


def mp_at_k(ranked: list[int], positives: set[int], junk: set[int], k: int) -> float:
    kept = [g for g in ranked if g not in junk]
    places = [p + 1 for p, g in enumerate(kept) if g in positives]
    if not places:
        return 0.0
    kq = min(max(places), k)
    return sum(p <= kq for p in places) / kq


def test_longhand_metrics_match_the_published_test_vector():
    ranked = [4, 0, 9, 5, 3, 8, 1, 7, 2, 6]
    assert trapezoid_ap(ranked, {0, 3, 7}, {5}) == pytest.approx(0.3492063492)
    assert trapezoid_ap(ranked[:6], {0, 3, 7}, {5}) == pytest.approx(0.2222, abs=1e-4)
    shifted = [9, 0, 8, 3, 6, 5, 7]  # positives at 1-based positions 2, 4, 7
    assert [mp_at_k(shifted, {0, 3, 7}, set(), k) for k in (1, 5, 10)] == pytest.approx(
        [0.0, 0.4, 3 / 7]
    )


def test_end_to_end_metrics_match_the_saved_ranking(tmp_path):
    gnd = make_revisitop(tmp_path / "data", "roxford5k")
    run = run_evaluate(tmp_path, "roxford5k", f"dataset.root='{tmp_path / 'data'}'")
    metrics = json.loads((run / "metrics.json").read_text())
    with np.load(run / "ranking.npz") as ranking:
        indices, query_ids, gallery_ids = ranking["indices"], ranking["query_ids"], ranking["gallery_ids"]
    assert gallery_ids.tolist() == [f"jpg/{stem}.jpg" for stem in gnd["imlist"]]
    assert query_ids.tolist() == [f"jpg/{stem}.jpg" for stem in gnd["qimlist"]]
    assert all(sorted(row) == list(range(len(gnd["imlist"]))) for row in indices.tolist())
    for setup in ("easy", "medium", "hard"):
        aps, mps = [], {k: [] for k in (1, 5, 10)}
        for ranked, entry in zip(indices.tolist(), ROXFORD_GND):
            positives, junk = expected_truth(setup, entry)
            if positives:
                aps.append(trapezoid_ap(ranked, positives, junk))
                for k in mps:
                    mps[k].append(mp_at_k(ranked, positives, junk, k))
        summary = metrics["summary"][setup]
        assert summary["mAP"] == pytest.approx(np.mean(aps), abs=1e-12)
        for k, values in mps.items():
            assert summary[f"mP@{k}"] == pytest.approx(np.mean(values), abs=1e-12)
        assert metrics["counts"][setup]["n_queries_without_positives"] == 3 - len(aps)


def test_pixel_labels_outline_the_landmark_in_each_labelled_positive(oxford):
    root, gnd = oxford
    boxes = make_pixel_labels(root / "pr", gnd)
    dataset = load_dataset("revisitop", root=root, name="roxford5k", pixel_labels=root / "pr")
    found = {f"{inst.id[1:]}_{g}": inst for g, record in enumerate(dataset.gallery) for inst in record.instances}
    assert set(found) == set(boxes) and dataset.extra["n_pixel_labels"] == len(boxes)
    for pair, (x1, y1, x2, y2) in boxes.items():
        mask = decode(found[pair].mask)
        assert mask.shape == (36, 48)
        ys, xs = np.nonzero(mask)
        assert abs(xs.min() - x1) <= 1 and abs(xs.max() + 1 - x2) <= 1 and abs(ys.min() - y1) <= 1
        assert abs(ys.max() + 1 - y2) <= 1, "the union of both rectangles"
        assert not mask[y1 + 6, x1 + 15], "the second rectangle is only 4 pixels high"


def test_pixel_labels_refuse_pickled_code_and_name_the_release(oxford, tmp_path):
    root, _ = oxford
    with pytest.raises(FileNotFoundError, match="PROxford/PRParis"):
        load_dataset("revisitop", root=root, name="roxford5k", pixel_labels=tmp_path / "nothing")
    (tmp_path / "evil").mkdir()
    np.save(tmp_path / "evil" / "oxford_pair2labelpath.npy", np.array([Path("x")], dtype=object), allow_pickle=True)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_dataset("revisitop", root=root, name="roxford5k", pixel_labels=tmp_path / "evil")


def test_region_ranking_on_pixel_labels_gets_localisation_metrics(tmp_path):
    gnd = make_revisitop(tmp_path / "data", "roxford5k")
    make_pixel_labels(tmp_path / "data" / "pr", gnd)
    run = run_evaluate(tmp_path, "roxford5k", f"dataset.root='{tmp_path / 'data'}'",
                       f"dataset.pixel_labels='{tmp_path / 'data' / 'pr'}'", "regions=grid",
                       "regions.proposals.grid.scales=[0.5]", "model.input_size=32")
    metrics = json.loads((run / "metrics.json").read_text())
    for setup in ("easy", "medium", "hard"):
        summary = metrics["summary"][setup]
        for kind in ("box", "mask"):
            assert {f"{kind}_mAP@50", f"{kind}_mAP@50:95", f"{kind}_mIoU"} <= set(summary)
            assert summary[f"{kind}_mAP@0"] == pytest.approx(summary["mAP"])
            assert summary[f"{kind}_mAP@50"] <= summary["mAP"] + 1e-12


def test_pixel_reference_option_adds_the_reference_numbers(tmp_path):
    gnd = make_revisitop(tmp_path / "data", "roxford5k")
    union_boxes = make_pixel_labels(tmp_path / "data" / "pr", gnd)
    run = run_evaluate(tmp_path, "roxford5k", f"dataset.root='{tmp_path / 'data'}'",
                       f"dataset.pixel_labels='{tmp_path / 'data' / 'pr'}'", "regions=grid",
                       "regions.proposals.grid.scales=[0.5]", "model.input_size=32",
                       "dataset.protocol_options.pixel_reference=true")
    metrics = json.loads((run / "metrics.json").read_text())
    ranking = np.load(run / "ranking.npz")
    indices, boxes = ranking["indices"], ranking["boxes"]

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    ious = np.full(indices.shape, np.nan)
    for q in range(len(indices)):
        for j, g in enumerate(indices[q].tolist()):
            if f"{q}_{g}" in union_boxes:
                ious[q, j] = iou(boxes[q, j], union_boxes[f"{q}_{g}"])
    dataset = load_dataset("revisitop", root=tmp_path / "data", name="roxford5k")
    for setup in ("medium", "hard"):
        expected = pixel_retrieval_map(indices, ious, dataset.truth[setup], PIXEL_RETRIEVAL_IGNORED["roxford5k"])
        assert metrics["summary"][setup]["reference_box_mAP@50:95"] == pytest.approx(expected)
        assert 0 <= metrics["summary"][setup]["reference_box_mIoU"] <= 1
    assert "reference_box_mAP@50:95" not in metrics["summary"]["easy"]


def test_repeated_gnd_indices_are_listed_for_the_reference_mode(tmp_path):
    gnd = make_revisitop(tmp_path, "roxford5k")
    gnd["gnd"][0]["easy"] = [0, 2, 2]  # a repeat within a list
    gnd["gnd"][1]["easy"] = [4]  # also in hard [3, 4]: Medium's ok = [4, 3, 4]
    with open(tmp_path / "roxford5k" / "gnd_roxford5k.pkl", "wb") as handle:
        pickle.dump(gnd, handle)
    dataset = load_dataset("revisitop", root=tmp_path, name="roxford5k")
    assert dataset.truth["easy"][0].positives.tolist() == [0, 2]
    assert dataset.truth["medium"][1].positives.tolist() == [3, 4]
    assert dataset.extra["listed_positives"] == {"easy": {0: 3}, "medium": {0: 4, 1: 3}}
    assert "listed_positives" not in load_dataset("revisitop", root=make_clean(tmp_path), name="roxford5k").extra


def make_clean(tmp_path: Path) -> Path:
    make_revisitop(tmp_path / "clean", "roxford5k")
    return tmp_path / "clean"


def test_reference_mode_scores_a_users_ranking_with_repeats_as_compute_map(tmp_path):
    gnd = make_revisitop(tmp_path / "data", "roxford5k")
    gnd["gnd"][1]["easy"] = [4]  # overlapping lists: 4 is easy and hard (Easy: positive and junk)
    with open(tmp_path / "data" / "roxford5k" / "gnd_roxford5k.pkl", "wb") as handle:
        pickle.dump(gnd, handle)
    ranks = np.array([
        [2, 1, 2, 0, 7, 5, 5, 9, 3, 4],  # 2 twice, junk 5 twice
        [4, 3, 3, 8, 0, 1, 2, 5, 6, 7],
        [9, 6, 0, 6, 4, 4, 1, 2, 3, 5],
    ])
    dataset = load_dataset("revisitop", root=tmp_path / "data", name="roxford5k")
    path = write_ranking(tmp_path / "mine.npz", dataset.query_keys, dataset.gallery_keys, ranks)
    settings = (f"dataset.root='{tmp_path / 'data'}'", f"eval.ranking='{path}'")
    reference = json.loads((run_evaluate(tmp_path / "ref", "roxford5k", *settings,
                                         "dataset.protocol_options.ap=reference") / "metrics.json").read_text())
    default = json.loads((run_evaluate(tmp_path / "std", "roxford5k", *settings) / "metrics.json").read_text())
    for setup in ("easy", "medium", "hard"):
        expected_map, expected_mp = compute_map(ranks.T, revisitop_gnd_t(gnd["gnd"], setup), [1, 5, 10])
        summary = reference["summary"][setup]
        assert summary["mAP"] == pytest.approx(expected_map, abs=1e-12)
        assert [summary[f"mP@{k}"] for k in (1, 5, 10)] == pytest.approx(list(expected_mp), abs=1e-12)
        # the default on the same ranking: each item once, junk dropped, N = distinct positives
        aps = []
        for ranked, entry in zip(ranks.tolist(), gnd["gnd"]):
            positives, junk = expected_truth(setup, entry)
            if positives:
                aps.append(trapezoid_ap(list(dict.fromkeys(ranked)), positives, junk))
        assert default["summary"][setup]["mAP"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert reference["protocol_options"]["ap"] == "reference"
    assert reference["summary"]["easy"]["mAP"] != pytest.approx(default["summary"]["easy"]["mAP"])


# The reference mode per query, against a transcription of compute_map's own loop.


def test_revisitop_reference_matches_compute_map_on_repeats():
    rng = np.random.default_rng(21)
    kappas = (1, 5, 10)
    compared_mp = 0
    for _ in range(400):
        ranked, padded, ok, junk = random_reference_case(rng)
        ap, precisions = revisitop_reference(padded, sorted(set(ok)), sorted(set(junk)), len(ok), kappas)
        found = np.isin(ranked, ok).any()
        if not ok:
            assert math.isnan(ap) and all(math.isnan(p) for p in precisions)
            continue
        expected_ap, _ = compute_map_query(ranked, ok, junk, ())
        assert ap == pytest.approx(expected_ap, abs=1e-12)
        if found:  # compute_map cannot give mP@k when no positive was returned
            _, expected = compute_map_query(ranked, ok, junk, kappas)
            assert precisions == pytest.approx(expected, abs=1e-12)
            compared_mp += 1
        else:
            assert precisions == [0.0, 0.0, 0.0]
    assert compared_mp > 100


def test_revisitop_reference_hand_case_and_default_unchanged():
    # id 3 repeated: compute_map counts it at positions 0 and 2 (junk 5 removed before 3's
    # second occurrence: 3 -> 2), ok = [3, 7] (N = 2)
    ranked, ok, junk = [3, 1, 5, 3, 7], [3, 7], [5]
    ap, precisions = revisitop_reference(ranked, ok, junk, len(ok), (1, 5))
    # positives at 0, 2, 3: (1 + 1)/2/2 + (1/2 + 2/3)/2/2 + (2/3 + 3/4)/2/2
    expected = (1 + 1) / 4 + (1 / 2 + 2 / 3) / 4 + (2 / 3 + 3 / 4) / 4
    assert ap == pytest.approx(expected) and ap == pytest.approx(compute_map_query(ranked, ok, junk, ())[0])
    assert precisions == pytest.approx([1.0, 3 / 4])
    # the default definition on the same input: 3 once, 7 at junk-free place 2 of [3, 1, 7]
    assert metrics.trapezoid_ap(ranked, ok, junk) == pytest.approx(1 / 2 + (1 / 2 + 2 / 3) / 4)
    assert metrics.trapezoid_ap(ranked, ok, junk) == pytest.approx(bf_trapezoid(ranked, ok, junk))
    assert metrics.revisitop_mp_at_k(ranked, ok, 5, junk) == pytest.approx(bf_mp(ranked, ok, 5, junk))
    # a gnd whose easy and hard lists share id 7: ok = easy + hard lists it twice, N = 3
    ap_listed, _ = revisitop_reference(ranked, [3, 7], junk, 3, ())
    assert ap_listed == pytest.approx(compute_map_query(ranked, [3, 7, 7], junk, ())[0])
    # an id that is both positive and junk scores as a positive, and later ones move past it
    both = revisitop_reference([4, 2], [4, 2], [4], 2, (1,))
    assert both[0] == pytest.approx(compute_map_query([4, 2], [4, 2], [4], ())[0])
    assert both[0] == pytest.approx((1 + 1) / 4 + (1 + 2) / 4)
