"""GL3D adapter: every image a query over the whole list, directed pairs, self as junk."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from retrieval import metrics
from retrieval.datasets import load_dataset
from retrieval.protocols.gl3d import gl3d_reference_ap
from tests.fixtures_protocols import gl3d_map, make_gl3d, overlap_ap, run_evaluate, write_ranking
from tests.test_metrics import bf_trapezoid


def expected_positives(pairs_text: str, n_images: int) -> list[list[int]]:
    """Longhand reading of the pair list: first two tokens, i == j skipped, j positive of i."""
    found: list[set[int]] = [set() for _ in range(n_images)]
    for line in pairs_text.splitlines():
        if line.strip():
            i, j = (int(token) for token in line.split()[:2])
            if i != j:
                found[i].add(j)
    return [sorted(s) for s in found]


def test_truth_from_directed_pairs(tmp_path):
    names, pairs = make_gl3d(tmp_path)
    dataset = load_dataset("gl3d", root=tmp_path)
    assert dataset.protocol == "gl3d" and list(dataset.truth) == ["all"]
    assert dataset.query_keys == names and dataset.gallery_keys == names
    truths = dataset.truth["all"]
    assert [t.positives.tolist() for t in truths] == expected_positives(pairs, len(names))
    assert [t.junk.tolist() for t in truths] == [[i] for i in range(len(names))]
    assert truths[3].positives.tolist() == [4] and truths[4].positives.tolist() == []  # directed
    assert 0 not in truths[0].positives  # the self pair is skipped
    assert dataset.extra["duplicate_pairs"] == 1
    assert dataset.extra["queries_without_positives"] == 2  # images 4 and 7
    assert all(record.path.is_file() for record in dataset.gallery)


def test_out_of_range_pair_and_blank_list_line(tmp_path):
    names, _ = make_gl3d(tmp_path)
    (tmp_path / "gl3d_gt_pairs").write_text(f"0 {len(names)}\n")
    with pytest.raises(ValueError, match="outside"):
        load_dataset("gl3d", root=tmp_path)
    (tmp_path / "gl3d_gt_pairs").write_text("0 1\n")
    (tmp_path / "eval_img_list.txt").write_text(names[0] + "\n\n" + names[1] + "\n")
    with pytest.raises(ValueError, match="blank"):
        load_dataset("gl3d", root=tmp_path)


def test_missing_files_explain_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="eval_img_list.txt") as error:
        load_dataset("gl3d", root=tmp_path)
    assert "prepare gl3d" in str(error.value)
    names, _ = make_gl3d(tmp_path)
    (tmp_path / names[5]).unlink()
    with pytest.raises(FileNotFoundError, match="1 of 8"):
        load_dataset("gl3d", root=tmp_path)


def test_image_root_setting(tmp_path):
    names, _ = make_gl3d(tmp_path / "images")
    (tmp_path / "lists").mkdir()
    for file in ("eval_img_list.txt", "gl3d_gt_pairs"):
        (tmp_path / "images" / file).rename(tmp_path / "lists" / file)
    dataset = load_dataset("gl3d", root=tmp_path / "lists", image_root=tmp_path / "images")
    assert [r.path for r in dataset.gallery] == [tmp_path / "images" / n for n in names]


def trapezoid_ap(ranked: list[int], positives: set[int], junk: set[int]) -> float:
    """docs/formats.md section 5, longhand: junk (the query) dropped, duplicates dropped, N = all."""
    kept: list[int] = []
    for g in ranked:
        if g not in junk and g not in kept:
            kept.append(g)
    ranks = [r for r, g in enumerate(kept) if g in positives]
    total = sum(((1.0 if r == 0 else j / r) + (j + 1) / (r + 1)) / 2 for j, r in enumerate(ranks))
    return total / len(positives)


def test_end_to_end_map_matches_the_saved_ranking(tmp_path):
    names, pairs = make_gl3d(tmp_path / "data")
    run = run_evaluate(tmp_path, "gl3d", f"dataset.root='{tmp_path / 'data'}'")
    metrics = json.loads((run / "metrics.json").read_text())
    with np.load(run / "ranking.npz") as ranking:
        indices = ranking["indices"].tolist()
    assert len(indices) == len(names) and all(len(row) == len(names) for row in indices)
    assert all(q in row for q, row in enumerate(indices))  # the query is in its own ranking
    expected = [
        trapezoid_ap(row[:200], set(positives), {q})
        for q, (row, positives) in enumerate(zip(indices, expected_positives(pairs, len(names))))
        if positives
    ]
    assert metrics["summary"]["all"]["mAP@200"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert metrics["counts"]["all"]["n_queries_without_positives"] == len(names) - len(expected)


def test_duplicated_lines_are_listed_for_the_reference_mode(tmp_path):
    make_gl3d(tmp_path)
    dataset = load_dataset("gl3d", root=tmp_path)
    # "2 5 0.10" is on two lines: image 2 has one positive, listed twice
    assert dataset.truth["all"][2].positives.tolist() == [5]
    assert dataset.extra["listed_positives"] == {"all": {2: 2}}
    (tmp_path / "gl3d_gt_pairs").write_text("0 1\n1 0\n")
    assert "listed_positives" not in load_dataset("gl3d", root=tmp_path).extra


def test_reference_mode_counts_duplicated_lines_and_repeated_results(tmp_path):
    names, _ = make_gl3d(tmp_path / "data")
    # the reference reads every line (a blank one would stop it): duplicated lines, a self pair
    lines = ["0 1 0.52", "0 1 0.52", "0 2 0.31", "1 0 0.52", "0 0 1.0", "2 5 0.10", "2 5 0.10",
             "2 5", "3 4", "5 2 0.44", "6 7 0.20"]
    (tmp_path / "data" / "gl3d_gt_pairs").write_text("\n".join(lines) + "\n")
    n = len(names)
    rng = np.random.default_rng(5)
    ranks = np.array([rng.integers(0, n, size=n) for _ in range(n)])  # repeats, self anywhere
    ranks[0, :4] = [0, 1, 1, 2]
    path = write_ranking(tmp_path / "mine.npz", names, names, ranks)
    settings = (f"dataset.root='{tmp_path / 'data'}'", f"eval.ranking='{path}'")
    reference = json.loads((run_evaluate(tmp_path / "ref", "gl3d", *settings,
                                         "dataset.protocol_options.ap=reference") / "metrics.json").read_text())
    default = json.loads((run_evaluate(tmp_path / "std", "gl3d", *settings) / "metrics.json").read_text())
    # the results file the reference pipeline writes: "i j" for each of the top 200, self included
    results = [f"{i} {j}" for i, row in enumerate(ranks.tolist()) for j in row[:200]]
    assert reference["summary"]["all"]["mAP@200"] == pytest.approx(gl3d_map(n, lines, results), abs=1e-12)
    assert reference["dataset_notes"]["listed_positives"] == {"all": {"0": 3, "2": 3}}
    # the default on the same input: each result once, N = distinct neighbours
    expected = [
        trapezoid_ap(row[:200], set(positives), {q})
        for q, (row, positives) in enumerate(zip(ranks.tolist(), expected_positives("\n".join(lines), n)))
        if positives
    ]
    assert default["summary"]["all"]["mAP@200"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert reference["counts"]["all"] == default["counts"]["all"]
    assert reference["summary"]["all"]["mAP@200"] != pytest.approx(default["summary"]["all"]["mAP@200"])


# The reference mode per query, against a transcription of MIRorR's own loop.


def test_gl3d_reference_matches_mirror_on_duplicated_lines_and_results():
    rng = np.random.default_rng(23)
    for _ in range(400):
        n, query = 10, int(rng.integers(0, 10))
        # ground-truth lines "query j": duplicated lines and a self line possible
        gt_lines = rng.integers(0, n, size=int(rng.integers(1, 7))).tolist()
        gt_list = [j for j in gt_lines if j != query]
        # result lines "query j" of a raw top list with repeats (the query itself in it too)
        top = rng.integers(0, n, size=int(rng.integers(1, 14)))
        res_list = [int(j) for j in top if j != query]
        value = gl3d_reference_ap(top, sorted(set(gt_list)), len(gt_list), junk=[query])
        if not gt_list:
            assert math.isnan(value)
            continue
        assert value == pytest.approx(overlap_ap(gt_list, res_list), abs=1e-12)
        # default on the same input: results once each, normaliser = distinct neighbours
        assert metrics.trapezoid_ap(top, sorted(set(gt_list)), [query]) == pytest.approx(
            bf_trapezoid(top, sorted(set(gt_list)), [query]), abs=1e-12
        )


def test_gl3d_reference_hand_case():
    # neighbours 1 and 2, the line "0 1" twice: N = 3; result 1 returned twice
    value = gl3d_reference_ap([0, 1, 1, 5, 2], [1, 2], listed=3, junk=[0])
    expected = ((1 + 1) / 2 + (1 + 1) / 2 + (2 / 3 + 3 / 4) / 2) / 3
    assert value == pytest.approx(expected)
    assert value == pytest.approx(overlap_ap([1, 1, 2], [1, 1, 5, 2]))
    assert metrics.trapezoid_ap([0, 1, 1, 5, 2], [1, 2], [0]) == pytest.approx((1 + (1 / 2 + 2 / 3) / 2) / 2)
