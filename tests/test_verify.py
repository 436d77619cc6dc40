"""rerank=[verify]: a known homography is recovered and the query's outline projected through
it; bad inputs are counted, never fatal; local features are cached across settings that do not
change them; the step composes with query expansion in a real run."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from conftest import ETH80, REPO, ComposeFn
from retrieval import artifacts, pipeline
from retrieval.models import Embedder, create_model
from retrieval.plan import model as model_spec
from retrieval.errors import UserError
from retrieval.features.keys import file_key
from retrieval.images import load_rgb
from retrieval.local_features.geometry import FitFailure, fit
from retrieval.local_features.matching import mutual_ratio_matches
from retrieval.localisation import box_iou, mask_iou
from retrieval.masks import decode, tight_box
from retrieval.ranking import Ranking
from retrieval.records import Dataset, Record
from retrieval.rerank import QueryCutout, RerankInputs, StepOutput, create_step
from test_rerank import expand_by_hand, rank_by_hand, vectors

TRUE_H = np.array([[1.3, 0.15, 120.0], [-0.1, 1.2, 90.0], [4e-4, 2e-4, 1.0]])
SCENE_SIZE = (480, 400)
OBJECT = ETH80 / "images" / "car1" / "car1-000-000.png"
OBJECT_MASK = ETH80 / "masks" / "car1" / "car1-000-000.png"


def save(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def warped_scene(folder: Path) -> Path:
    """The ETH-80 car, seen through TRUE_H on a grey background."""
    return save(folder / "scene.png", cv2.warpPerspective(load_rgb(OBJECT), TRUE_H, SCENE_SIZE, borderValue=(90, 90, 90)))


def verify(root: Path, queries: list[tuple[Path, tuple | None, object]], gallery: list[Path], indices: list[list[int]],
           boxes: np.ndarray | None = None, **options: object) -> StepOutput:
    """The verify step on these images: `queries` are (image, box, mask) cut-outs, `indices`
    each query's ranking (previous scores decreasing), `boxes` its regions (or None)."""
    dataset = Dataset("synthetic", root, [Record(path, path.name) for path, _, _ in queries],
                      [Record(path, path.name) for path in gallery], truth={})
    cutouts = [QueryCutout(f"{file_key(path, root)}#cut", path, box, mask) for path, box, mask in queries]
    rows = np.array(indices, dtype=np.int64)
    ranking = Ranking(rows, np.where(rows >= 0, 1.0 - 0.01 * np.arange(rows.shape[1]), -np.inf).astype(np.float32),
                      np.array([path.name for path, _, _ in queries]), np.array([path.name for path in gallery]), boxes)
    step = create_step("verify", **{"resize": 480, "query_resize": 480, "min_inliers": 8, **options})
    inputs = RerankInputs(loaders={"dataset": lambda: dataset, "query_cutouts": lambda: cutouts,
                                   "cache": lambda: root / "cache"}, search=None, allowed=step.needs)
    return step(ranking, inputs)


@pytest.mark.parametrize("features", ["sift", "xfeat"])
def test_a_known_homography_is_recovered_and_the_outline_projected(tmp_path: Path, features: str) -> None:
    mask = decode(OBJECT_MASK)
    box = tight_box(mask)
    scene = warped_scene(tmp_path)
    out = verify(tmp_path, [(OBJECT, box, mask)], [save(tmp_path / "flat.png", np.full((400, 480, 3), 90, np.uint8)), scene],
                 [[0, 1]], features=features, max_keypoints=512)
    ranking = out.ranking
    assert ranking.indices[0].tolist() == [1, 0]  # the scene is verified and moves first
    assert ranking.scores[0, 0] >= 8
    x1, y1, x2, y2 = box
    corners = cv2.perspectiveTransform(np.array([[[x1, y1], [x2, y1], [x2, y2], [x1, y2]]], np.float64), TRUE_H)[0]
    truth = np.r_[np.clip(corners.min(0), 0, SCENE_SIZE), np.clip(corners.max(0), 0, SCENE_SIZE)]
    assert box_iou(ranking.boxes[0, :1], truth[None])[0, 0] > 0.9
    true_mask = cv2.warpPerspective(mask.astype(np.uint8), TRUE_H, SCENE_SIZE, flags=cv2.INTER_NEAREST).astype(bool)
    assert mask_iou(decode(ranking.mask(0, 0)), true_mask) > 0.8
    assert np.isnan(ranking.boxes[0, 1]).all() and ranking.mask(0, 1) is None  # the flat image: no outline


def test_region_view_matches_only_inside_the_entry_s_region(tmp_path: Path) -> None:
    scene = warped_scene(tmp_path)
    elsewhere = np.array([[[0, 300, 100, 400]]], dtype=np.float32)  # a corner of the scene without the car
    around = np.array([[[150, 110, 260, 190]]], dtype=np.float32)  # a region holding most of the car
    missed = verify(tmp_path, [(OBJECT, None, None)], [scene], [[0]], elsewhere)
    found = verify(tmp_path, [(OBJECT, None, None)], [scene], [[0]], around, context=0.5)
    whole = verify(tmp_path, [(OBJECT, None, None)], [scene], [[0]], elsewhere, gallery_view="image")
    assert missed.report["counts"]["verified"] == 0
    np.testing.assert_array_equal(missed.ranking.boxes, elsewhere)  # unverified: keeps its region
    assert found.report["counts"]["verified"] == 1 and whole.report["counts"]["verified"] == 1


def test_bad_inputs_are_counted_and_keep_their_order(tmp_path: Path) -> None:
    scene = warped_scene(tmp_path)
    flat = save(tmp_path / "flat.png", np.full((400, 480, 3), 200, np.uint8))
    tiny = save(tmp_path / "tiny.png", load_rgb(OBJECT)[::16, ::16])  # 8x8 pixels
    line = np.full((200, 400, 3), 255, np.uint8)  # texture on one line: every match is collinear
    line[99:101, 20:380] = np.random.default_rng(0).integers(0, 255, (2, 360, 1))
    line = save(tmp_path / "line.png", line)
    out = verify(tmp_path, [(OBJECT, None, None), (flat, None, None), (line, None, None)], [flat, tiny, scene, line],
                 [[0, 1, 2, -1], [2, 0, -1, -1], [3, -1, -1, -1]], top_n=10)
    counts = out.report["counts"]
    assert counts["no_keypoints"] == 1 + 2  # the flat gallery image; the flat query against two images
    assert counts["too_small"] == 1
    assert counts["degenerate"] == 1  # the line against itself
    assert counts["top_n_beyond_ranking"] == 3
    assert counts["verified"] == 1 and counts["pairs"] == 6
    assert out.ranking.indices.tolist() == [[2, 0, 1, -1], [2, 0, -1, -1], [3, -1, -1, -1]]
    np.testing.assert_array_equal(out.ranking.scores[1:], np.array([[1.0, 0.99, -np.inf, -np.inf],
                                                                    [1.0, -np.inf, -np.inf, -np.inf]], np.float32))


def test_collinear_points_are_a_degenerate_fit() -> None:
    source = np.c_[np.arange(20.0), 2 * np.arange(20.0) + 3]
    with pytest.raises(FitFailure, match="degenerate"):
        fit("homography", source, source * 1.5 + 7, threshold=2.0)
    with pytest.raises(FitFailure, match="too_few_matches"):
        fit("fundamental", source[:5], source[:5], threshold=2.0)


def test_features_are_cached_across_depth_and_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = warped_scene(tmp_path)
    first = verify(tmp_path, [(OBJECT, None, None)], [scene], [[0]], top_n=5, model="homography")
    assert first.report["counts"]["frames_extracted"] == 2 and first.report["counts"]["verified"] == 1
    from retrieval.local_features.sift import Sift

    monkeypatch.setattr(Sift, "extract", lambda *_: pytest.fail("re-extracted a cached frame"))
    again = verify(tmp_path, [(OBJECT, None, None)], [scene], [[0]], top_n=1, model="affine", threshold=4.0)
    assert again.report["counts"]["frames_extracted"] == 0 and again.report["counts"]["verified"] == 1


def test_mutual_ratio_matches_as_defined() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(50, 8))
    b[:10] = a[:10] + 0.01 * rng.normal(size=(10, 8))
    distances = np.linalg.norm(a[:, None] - b[None], axis=2)
    expected = []
    for i in range(len(a)):
        first, second = np.argsort(distances[i])[:2]
        if np.argmin(distances[:, first]) == i and distances[i, first] < 0.8 * distances[i, second]:
            expected.append((i, first))
    assert mutual_ratio_matches(a, b, 0.8).tolist() == [list(pair) for pair in expected]
    assert (0, 0) in expected  # not vacuous: the planted matches pass


@pytest.fixture
def demo_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lite0: Embedder) -> ComposeFn:
    """Configs on the built-in demo set (built under tmp_path), with the session's 64 px Lite0."""
    monkeypatch.setattr(model_spec, "create_model", lambda family, **options: (
        lite0 if family == "effnet_lite" and options.get("input_size") == 64 else create_model(family, **options)))

    def make(*overrides: str):
        with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
            return compose("config", overrides=[
                "dataset=demo", f"paths.cache={tmp_path / 'cache'}", f"paths.leaderboard={tmp_path / 'leaderboard.csv'}",
                "extract.workers=0", "model.input_size=64", "eval.report=false", *overrides])

    return make


def test_verify_then_query_expansion_on_the_demo_set(demo_cfg: ComposeFn) -> None:
    verify_options = ("rerank.verify.top_n=4", "rerank.verify.resize=320", "rerank.verify.query_resize=320")
    cfg = demo_cfg("rerank=[verify,aqe]", *verify_options, "rerank.aqe.k=2")
    final = Ranking.load(pipeline.ranking(cfg))
    assert [step["name"] for step in final.provenance if step["step"] == "rerank"] == ["verify", "aqe"]
    # AQE expands each query with the first k of the verified ranking (built once: reused here)
    stage = pipeline.ranking(demo_cfg("rerank=[verify]", *verify_options))
    verified = Ranking.load(stage)
    meta = artifacts.read_meta(stage.parent)
    assert meta["counts"]["pairs"] == 4 * len(verified.query_ids) and meta["counts"]["verified"] > 0
    assert np.isfinite(verified.boxes[:, 0]).any()  # verified entries carry their projected box
    queries, gallery = vectors(cfg)
    expanded = expand_by_hand(queries, gallery, verified.indices, 2, 0.0)
    order, _ = rank_by_hand(expanded, gallery)
    np.testing.assert_array_equal(final.indices[:, :5], order[:, :5])


def test_options_that_do_not_go_together_are_a_user_error() -> None:
    with pytest.raises(UserError, match="min_inliers must be >= 8 for model=fundamental"):
        create_step("verify", model="fundamental", min_inliers=5)


def test_those_options_are_refused_before_any_work(make_cfg: ComposeFn, tmp_path: Path) -> None:
    cfg = make_cfg("rerank=[verify]", "rerank.verify.model=fundamental", "rerank.verify.min_inliers=5")
    with pytest.raises(UserError, match="min_inliers must be >= 8 for model=fundamental"):
        pipeline.ranking(cfg)
    assert not (tmp_path / "cache").exists()
