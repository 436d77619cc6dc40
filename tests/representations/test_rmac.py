"""`representation=rmac`: rows that are R-MAC of the model's own dense map (checked against a
loop over the published definition), the whitening fitted once and refitted when its sample or
settings change, AML boxes for the top results without a change of ranking, and bad input
refused before work or skipped and counted."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aggregation_reference import unit, whiten_loop
from conftest import REPO, ComposeFn
from fit_counts import counting
from hydra import compose, initialize_config_dir
from retrieval import pipeline
from retrieval.aggregation.dense import dense_maps
from retrieval.aggregation.rmac import rmac_regions
from retrieval.aggregation.whitening import Whitening
from retrieval.errors import UserError
from retrieval.images import load_rgb
from retrieval.models import Embedder
from retrieval.models.dense import DenseFeatureError
from retrieval.plan import RunPlan
from retrieval.ranking import Ranking
from retrieval.representations import rmac as rmac_module
from retrieval.representations.dense import DenseRepresentation
from retrieval.representations.fitting import STATE

RMAC = ["representation=rmac", "representation.input_size=96", "representation.whiten=16"]


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch, lite0: Embedder) -> list[int]:
    """The number of sample vectors of each whitening fitted."""
    return counting(monkeypatch, lite0, rmac_module, "fit_whitening").samples


def scene(path: Path, long_side: int) -> torch.Tensor:
    """1 x 3 x h x w uint8: the image at `long_side` pixels along its longer side (bicubic)."""
    image = Image.fromarray(load_rgb(path))
    scale = long_side / max(image.size)
    resized = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.BICUBIC)
    return torch.from_numpy(np.asarray(resized).transpose(2, 0, 1).copy())[None]


def regional_loop(feature_map: np.ndarray) -> np.ndarray:
    """The L2-normalised max over each R-MAC window of each channel, by loops."""
    vectors = []
    for x1, y1, x2, y2 in rmac_regions(*feature_map.shape[1:]).tolist():
        window = feature_map[:, y1:y2, x1:x2]
        vectors.append(unit(np.array([window[c].max() for c in range(len(window))], dtype=np.float64)))
    return np.array(vectors)


def test_rows_are_the_rmac_of_the_models_map(make_cfg: ComposeFn, fits: list[int], lite0: Embedder) -> None:
    plan = RunPlan.from_config(make_cfg("query=full", *RMAC))
    pipeline.features(plan)
    gallery = plan.stores["gallery"]
    assert fits == [12 * 14]  # 12 images, 3x3 cells each at 96 px: 1 + 4 + 9 windows
    maps = [dense_maps(lite0, scene(item.path, 96))[0].numpy() for item in gallery.items]
    assert maps[0].shape == (1280, 3, 3)
    regional = [regional_loop(feature_map) for feature_map in maps]
    whitened = [whiten_loop(vectors, np.concatenate(regional), 16, 1e-9) for vectors in regional]
    expected = np.array([unit(vectors.sum(axis=0)) for vectors in whitened])
    rows = gallery.load()
    np.testing.assert_allclose(rows.per_image(), expected, atol=2e-4)
    assert (rows.boxes == [0, 0, 128, 128]).all()  # a row is its whole image
    state = Whitening.load(gallery.fit.folder / STATE)
    assert state.projection.shape == (1280, 16)


def test_the_whitening_is_reused_and_fitted_again_when_its_sample_or_settings_change(make_cfg: ComposeFn, fits: list[int]) -> None:
    def run(*overrides: str) -> RunPlan:
        plan = RunPlan.from_config(make_cfg("query=full", *RMAC, *overrides))
        pipeline.ranking(plan)
        return plan

    first = run()
    again = run()
    assert len(fits) == 1 and again.stores["gallery"].fit.folder == first.stores["gallery"].fit.folder
    folders = {first.stores["gallery"].fit.folder}
    for changed in (["representation.fit_sample=6"], ["representation.fit_sample=6", "representation.fit_seed=1"],
                    ["representation.whiten=8"], ["representation.input_size=128"]):
        plan = run(*changed)
        assert plan.stores["gallery"].fit.folder not in folders and plan.stores["gallery"].folder != first.stores["gallery"].folder
        folders.add(plan.stores["gallery"].fit.folder)
    assert fits == [168, 6 * 14, 6 * 14, 168, 12 * 14]  # 128 px: 4x4 cells, windows of 4, 2 and 2 cells: 1 + 4 + 9


def test_a_whitening_wider_than_the_sample_is_refused(make_cfg: ComposeFn, fits: list[int]) -> None:
    with pytest.raises(UserError, match=r"^representation.whiten=40: PCA-whitening to 40 dimensions needs at least 41 sample "
                                        r"vectors .* got 28 of 1280.*\(the regional vectors of 2 sampled images; "
                                        r"representation.fit_sample, representation.whiten\)$"):
        pipeline.features(make_cfg("query=full", "representation=rmac", "representation.input_size=96",
                                   "representation.whiten=40", "representation.fit_sample=2"))


def test_a_model_without_a_dense_map_is_refused_before_any_image(make_cfg: ComposeFn, monkeypatch: pytest.MonkeyPatch) -> None:
    embedded: list[int] = []
    monkeypatch.setattr(DenseRepresentation, "maps", lambda *args, **kwargs: embedded.append(1) or [])
    cfg = make_cfg("query=full", "representation=rmac", "model=clip_vit_b32", "model.pretrained=null")
    with pytest.raises(DenseFeatureError, match=r"^ClipImageTower has no dense feature map to aggregate .*use a timm or effnet_lite model$"):
        pipeline.features(cfg)
    assert embedded == []


def test_an_image_thinner_than_a_patch_is_a_counted_skip(make_cfg: ComposeFn, folder_root: Path) -> None:
    thin = folder_root / "images" / "cup1" / "thin.png"
    Image.fromarray(np.full((3, 300, 3), 128, np.uint8)).save(thin)  # 56 px along 300: 0.56 px high
    plan = RunPlan.from_config(make_cfg("query=full", "representation=rmac", "representation.input_size=56",
                                        "representation.whiten=8", "model=dinov2_vits14", "model.pretrained=null",
                                        "model.input_size=28"))
    pipeline.features(plan)
    rows = plan.stores["gallery"].load()
    skipped = [rows.keys[i] for i in np.flatnonzero(~rows.valid)]
    assert skipped == ["images/cup1/thin.png"]
    assert "thinner than one 14-pixel patch" in rows.errors[int(np.flatnonzero(~rows.valid)[0])]
    assert rows.dim == 8 and rows.valid.sum() == 12


def test_aml_finds_boxes_in_the_top_results_without_changing_the_ranking(tmp_path: Path) -> None:
    """The built-in demo set (objects pasted into photos), end to end: AML's boxes overlap the
    planted objects better than the whole image does, and scores and order are the search's."""
    def run(top: int) -> tuple[Ranking, dict]:
        with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
            cfg = compose("config", overrides=[
                f"paths.cache={tmp_path / 'cache'}", f"paths.leaderboard={tmp_path / 'leaderboard.csv'}",
                "representation=rmac", "representation.input_size=256", f"representation.localise_top={top}",
                "extract.workers=0", "eval.report=false"])
        plan = RunPlan.from_config(cfg)
        metrics = json.loads(pipeline.evaluate(plan, tmp_path / f"top{top}").read_text())
        return Ranking.load(pipeline.ranking(plan)), metrics["summary"]

    whole, whole_metrics = run(0)
    found, found_metrics = run(5)
    np.testing.assert_array_equal(found.indices, whole.indices)
    np.testing.assert_array_equal(found.scores, whole.scores)
    same = np.isclose(found.boxes, whole.boxes).all(axis=2)
    assert same[:, 5:].all() and (~same[:, :5]).mean() > 0.5  # the first 5 localised, most of them within the image
    assert found.provenance[-1] == {"step": "localise", "aml": "tolias2016", "top": 5}
    assert found_metrics["all"]["mAP"] == whole_metrics["all"]["mAP"]
    assert found_metrics["all"]["box_mIoU"] > whole_metrics["all"]["box_mIoU"] + 0.02  # 0.129 against 0.096
