"""`representation=segvlad`: rows of a real tiny run checked against a brute-force computation of
SegVLAD (segments' patches, supersegments by a graph walk, VLAD of the covered patches, the
held-out whitening) on the model's own map; images ranked by the query segments' weighted Borda
votes; the state reused and refitted; bad inputs refused or skipped; the demo end to end."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from aggregation_reference import bfs_within, patches_of, unit, vlad_loop

from conftest import REPO, ComposeFn
from fit_counts import Counts, counting
from retrieval import pipeline
from retrieval.aggregation.supersegments import centroids, delaunay_graph
from retrieval.aggregation.vlad import Vocabulary
from retrieval.errors import UserError
from retrieval.masks import decode, tight_box
from retrieval.models import Embedder
from retrieval.models.transform import normalise
from retrieval.plan import RunPlan
from retrieval.ranking import Ranking
from retrieval.representations.fitting import STATE
from retrieval.representations.segvlad import SegVladRepresentation
from retrieval.representations import vlad as vlad_module
from retrieval.representations.vlad import VladState


SEGVLAD = ["representation=segvlad", "representation.clusters=4", "representation.input_size=128",
           "representation.fit_descriptors=8", "representation.fit_sample=8", "representation.whiten_sample=4",
           "representation.whiten=6"]


def prepared_of(representation: SegVladRepresentation, model: Embedder, item) -> dict:
    return representation.worker_dataset([item], model)[0]


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch, lite0: Embedder) -> Counts:
    return counting(monkeypatch, lite0, vlad_module, "fit_vocabulary")


def test_rows_are_the_supersegments_vlad_of_the_models_map_whitened(make_cfg: ComposeFn, counts: Counts, lite0: Embedder) -> None:
    plan = RunPlan.from_config(make_cfg("query=full", *SEGVLAD))
    pipeline.features(plan)
    gallery = plan.stores["gallery"]
    state = VladState.load(gallery.fit.folder / STATE)
    centroids_ = state.vocabulary.centroids.astype(np.float64)
    whitening = state.whitening
    rows = gallery.load()
    assert rows.localises and rows.dim == 6

    representation = gallery.representation
    for position in (0, 7):
        prepared = prepared_of(representation, lite0, gallery.items[position])
        masks = prepared["masks"].numpy()
        with torch.inference_mode():
            feature_map = lite0.feature_map(normalise(prepared["pixels"][None], lite0.preprocess))[0].double().numpy()
        grid = feature_map.shape[1:]
        patches = [patches_of(mask, grid) for mask in masks]
        kept = [i for i, cover in enumerate(patches) if cover]
        adjacency = delaunay_graph(centroids(torch.from_numpy(masks[kept])))
        descriptors = feature_map.reshape(len(feature_map), -1).T
        expected, boxes = [], []
        for seed in range(len(kept)):
            members = bfs_within(adjacency, seed, 3)
            covered = sorted(set().union(*(patches[kept[m]] for m in members)))
            raw = vlad_loop(descriptors[covered], centroids_)
            white = (raw - whitening.mean) @ whitening.projection.astype(np.float64) / np.sqrt(whitening.eigenvalues + whitening.eps)
            expected.append(unit(white))
            boxes.append(tight_box(masks[kept[seed]]))
        own = rows.row_image == position
        assert own.sum() == len(kept) > 3
        np.testing.assert_allclose(np.asarray(rows.vectors)[own], np.array(expected), atol=2e-3)
        np.testing.assert_array_equal(rows.boxes[own], np.array(boxes, dtype=np.float32))
        first = int(np.flatnonzero(own)[0])
        np.testing.assert_array_equal(decode(json.loads(rows.masks[first])), masks[kept[0]])


def borda_by_hand(query_rows: np.ndarray, gallery_rows: np.ndarray, row_image: np.ndarray, top: int = 50) -> list[int]:
    """SegVLAD's ranking of one query: each query segment's top database segments, similarities
    min-max normalised over all of them, summed per image; best first (ties: lower image)."""
    similarities = query_rows.astype(np.float64) @ gallery_rows.astype(np.float64).T
    picked = [(value, row) for line in similarities for row in np.argsort(-line, kind="stable")[:top] for value in [line[row]]]
    values = np.array([v for v, _ in picked])
    low, high = values.min(), values.max()
    totals: dict[int, float] = {}
    for value, row in picked:
        totals[int(row_image[row])] = totals.get(int(row_image[row]), 0.0) + (value - low) / (high - low)
    return [image for image, _ in sorted(totals.items(), key=lambda pair: (-pair[1], pair[0]))]


def test_images_are_ranked_by_the_query_segments_votes_with_the_best_segments_box(make_cfg: ComposeFn, counts: Counts) -> None:
    plan = RunPlan.from_config(make_cfg("query=box", *SEGVLAD))
    assert plan.search.aggregate == "segment_votes"
    ranking = Ranking.load(pipeline.ranking(plan))
    queries, gallery = plan.stores["queries"].load(), plan.stores["gallery"].load()
    vectors = np.asarray(gallery.vectors)
    assert len(queries.row_image) > len(queries.keys)  # queries are several rows
    for query in (0, 5, 9):
        own = np.asarray(queries.vectors)[queries.row_image == query]
        voted = borda_by_hand(own, vectors, gallery.row_image)
        assert ranking.indices[query, : len(voted)].tolist() == voted
        best = ranking.indices[query, 0]  # its box: of its segment most similar to a query segment that found it
        similarities = own.astype(np.float64) @ vectors.astype(np.float64).T
        found = [(line[row], row) for line in similarities for row in np.argsort(-line, kind="stable")[:50]
                 if gallery.row_image[row] == best]
        top = max(found)[0]  # supersegments that grew to the same segments tie: any of them
        assert ranking.boxes[query, 0].tolist() in [gallery.boxes[row].tolist() for value, row in found if value > top - 1e-5]


def test_the_state_is_reused_and_fitted_again_when_its_settings_change(make_cfg: ComposeFn, counts: Counts) -> None:
    first = RunPlan.from_config(make_cfg("query=full", *SEGVLAD))
    pipeline.features(first)
    assert counts.fits == 1
    counts.extracted.clear()
    pipeline.features(RunPlan.from_config(make_cfg("query=full", *SEGVLAD)))
    assert counts.fits == 1 and counts.extracted == []
    changed = RunPlan.from_config(make_cfg("query=full", *SEGVLAD, "representation.whiten=5"))
    pipeline.features(changed)
    assert counts.fits == 2 and changed.stores["gallery"].fit.folder != first.stores["gallery"].fit.folder


def test_segments_that_cover_no_patch_are_left_out_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    representation = SegVladRepresentation(10**8, whiten=None).fitted(
        VladState(Vocabulary(np.eye(2, 8, dtype=np.float32), 0, 1, "")))
    feature_map = torch.randn(8, 4, 4)
    masks = torch.zeros(3, 32, 32, dtype=torch.bool)
    masks[0, :16], masks[2, 16:] = True, True  # segment 1 is empty
    prepared = {"key": "scene.png", "size_hw": (32, 32), "masks": masks, "sources": np.array([1, 1, 1], np.int8)}
    with caplog.at_level(logging.WARNING):
        rows = representation._rows(prepared, feature_map)
    assert len(rows.vectors) == 2 and rows.boxes.tolist() == [[0, 0, 32, 16], [0, 16, 32, 32]]
    assert "scene.png: 1 of its 3 segments cover no patch of the 4x4 feature map; left out" in caplog.text
    nothing = {**prepared, "masks": torch.zeros(2, 32, 32, dtype=torch.bool), "sources": np.array([1, 1], np.int8)}
    whole = representation._rows(nothing, feature_map)  # no segment left: the image is its one segment
    assert len(whole.vectors) == 1 and whole.boxes.tolist() == [[0, 0, 32, 32]]


@pytest.mark.parametrize("overrides, message", [
    (["index=hnsw"], r"^representation=segvlad scores images by the votes of the query's segments, searched exactly: use "
                    r"index=flat, not index.factory="),
    (["rerank=[aqe]"], r"^representation=segvlad describes a query by several rows, which re-rank steps do not take: "
                       r"drop rerank=\[aqe\]$"),
])
def test_searches_that_cannot_take_segment_votes_are_refused_before_work(make_cfg: ComposeFn, overrides: list[str],
                                                                          message: str) -> None:
    with pytest.raises(UserError, match=message):
        RunPlan.from_config(make_cfg("query=box", *SEGVLAD, *overrides))


def test_evaluate_runs_segvlad_on_the_demo_set_with_localisation(tmp_path: Path) -> None:
    command = [sys.executable, "evaluate.py", "representation=segvlad", f"paths.cache={tmp_path / 'cache'}",
               f"paths.leaderboard={tmp_path / 'leaderboard.csv'}", f"hydra.run.dir={tmp_path / 'run'}",
               "extract.workers=0", "model.input_size=64", "representation.input_size=128", "representation.fit_sample=8",
               "representation.whiten_sample=4", "representation.whiten=16", "eval.report=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GIT_DIR": str(tmp_path / "no-repository")}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    summary = metrics["summary"]["all"]
    assert metrics["representation"] == "segvlad" and 0 < summary["mAP"] <= 1
    assert {"box_mAP@50", "mask_mAP@50", "box_mIoU"} <= set(summary), summary
