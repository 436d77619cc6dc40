"""`representation=vlad`: AnyLoc's VLAD of a real tiny run checked against a numpy computation of
its definition on the model's own maps; the vocabulary (and whitening) fitted once, reused, and
fitted again when its sample or settings change; bad inputs refused or skipped."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, ComposeFn
from fit_counts import Counts, counting
from retrieval import pipeline
from retrieval.errors import UserError
from retrieval.features.keys import Item
from retrieval.features.store import Store
from retrieval.models import Embedder
from retrieval.models.dense import DenseFeatureError
from retrieval.models.transform import normalise
from retrieval.plan import RunPlan
from retrieval.representations import vlad as vlad_module
from retrieval.representations.dense import DenseImages
from retrieval.representations.fitting import STATE
from retrieval.representations.vlad import SampledDescriptors, VladRepresentation, VladState

VLAD = ["representation=vlad", "representation.clusters=4", "representation.input_size=128", "representation.fit_descriptors=8"]


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch, lite0: Embedder) -> Counts:
    return counting(monkeypatch, lite0, vlad_module, "fit_vocabulary")


def model_map(model: Embedder, item: Item, long_side: int) -> np.ndarray:
    """The model's own C x h x w map of the whole image, resized as the representation resizes it."""
    prepared = DenseImages([item], long_side, model.patch_size, 10**8)[0]
    with torch.inference_mode():
        return model.feature_map(normalise(prepared["pixels"][None], model.preprocess))[0].double().numpy()


def numpy_vlad(feature_map: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """VLAD as published (AnyLoc): unit descriptors, each to its most cosine-similar word,
    residuals to the word summed per word, each sum L2-normalised, then the whole."""
    descriptors = feature_map.reshape(len(feature_map), -1).T
    descriptors = descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)
    words = centroids / np.linalg.norm(centroids, axis=1, keepdims=True)
    nearest = np.argmax(descriptors @ words.T, axis=1)
    sums = np.zeros_like(centroids)
    for descriptor, word in zip(descriptors, nearest):
        sums[word] += descriptor - centroids[word]
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    sums = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
    flat = sums.ravel()
    return flat / np.linalg.norm(flat)


def test_vectors_are_the_published_vlad_of_the_models_maps(make_cfg: ComposeFn, counts: Counts, lite0: Embedder) -> None:
    plan = RunPlan.from_config(make_cfg("query=full", *VLAD))
    pipeline.features(plan)
    gallery = plan.stores["gallery"]
    state = VladState.load(gallery.fit.folder / STATE)
    centroids = state.vocabulary.centroids.astype(np.float64)
    assert centroids.shape == (4, 1280) and state.whitening is None

    # the vocabulary: k-means words, each the mean of the unit sample descriptors nearest it
    helper = SampledDescriptors(10**8, None, "token", 128, 8, 0)
    keys = [i.key for i in gallery.fit.items]
    sample = Store(plan.folder_of(helper)).gather(keys, keys)
    descriptors = np.asarray(sample.vectors, dtype=np.float64)
    assert len(descriptors) == 12 * 8  # 8 of the 16 cells of each of the 12 images
    nearest = np.argmax(descriptors @ (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).T, axis=1)
    assert len(np.unique(nearest)) == 4
    for word in range(4):
        np.testing.assert_allclose(centroids[word], descriptors[nearest == word].mean(axis=0), atol=1e-5)

    vectors = gallery.load()
    assert vectors.dim == 4 * 1280 and len(vectors.row_image) == len(gallery.items)
    for position in (0, 5, 11):
        expected = numpy_vlad(model_map(lite0, gallery.items[position], 128), centroids)
        np.testing.assert_allclose(vectors.vectors[position], expected, atol=1e-4)


def test_the_whitening_is_learnt_on_held_out_images(make_cfg: ComposeFn, counts: Counts, lite0: Embedder) -> None:
    plan = RunPlan.from_config(make_cfg("query=full", *VLAD, "representation.whiten=3", "representation.whiten_sample=4",
                                        "representation.fit_sample=8"))
    pipeline.features(plan)
    gallery = plan.stores["gallery"]
    assert len(gallery.fit.items) == 12  # 8 for the words, 4 held out
    words, held_out = gallery.representation.split(gallery.fit.items)
    assert len(words) == 8 and len(held_out) == 4 and not {i.key for i in words} & {i.key for i in held_out}
    assert ("fit sample", 8) in counts.extracted and ("fit sample", 4) in counts.extracted
    state = VladState.load(gallery.fit.folder / STATE)
    raw = np.stack([numpy_vlad(model_map(lite0, item, 128), state.vocabulary.centroids.astype(np.float64)) for item in held_out])
    centred = raw - raw.mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    whitening = state.whitening
    np.testing.assert_allclose(whitening.mean, raw.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(np.abs(np.diag(whitening.projection.T.astype(np.float64) @ axes[:3].T)), 1, atol=1e-3)
    first = numpy_vlad(model_map(lite0, gallery.items[0], 128), state.vocabulary.centroids.astype(np.float64))
    expected = (first - whitening.mean) @ whitening.projection.astype(np.float64) / np.sqrt(whitening.eigenvalues + whitening.eps)
    np.testing.assert_allclose(gallery.load().vectors[0], expected / np.linalg.norm(expected), atol=1e-3)


def test_the_state_is_reused_and_fitted_again_when_its_sample_or_settings_change(make_cfg: ComposeFn, counts: Counts) -> None:
    def run(*overrides: str) -> RunPlan:
        plan = RunPlan.from_config(make_cfg("query=box", *VLAD, *overrides))
        pipeline.ranking(plan)
        return plan

    first = run()
    assert counts.fits == 1
    assert plan_queries_share_the_state(first)
    counts.extracted.clear()
    again = run()
    assert counts.fits == 1 and counts.extracted == []
    assert again.stores["gallery"].fit.folder == first.stores["gallery"].fit.folder
    folders = {first.stores["gallery"].fit.folder}
    for changed in (["representation.fit_seed=1"], ["representation.clusters=3"], ["representation.fit_sample=7"],
                    ["representation.fit_descriptors=6"]):
        plan = run(*changed)
        assert plan.stores["gallery"].fit.folder not in folders and plan.stores["gallery"].folder != first.stores["gallery"].folder
        folders.add(plan.stores["gallery"].fit.folder)
    assert counts.fits == 5


def plan_queries_share_the_state(plan: RunPlan) -> bool:
    return plan.stores["queries"].fit == plan.stores["gallery"].fit and plan.stores["queries"].load().dim == 4 * 1280


def test_a_vocabulary_larger_than_its_sample_is_refused(make_cfg: ComposeFn, counts: Counts) -> None:
    with pytest.raises(UserError, match=r"^representation.clusters=40: a vocabulary of 40 words needs at least 40 sample "
                                        r"descriptors, got 36: .*\(representation.fit_sample, representation.fit_descriptors, "
                                        r"representation.clusters\)$"):
        pipeline.features(make_cfg("query=full", *VLAD, "representation.clusters=40", "representation.fit_descriptors=3"))
    assert counts.extracted == [("fit sample", 12)]  # refused before the gallery is embedded


def test_a_vocabulary_larger_than_any_sample_can_give_is_refused_before_work(make_cfg: ComposeFn, counts: Counts) -> None:
    with pytest.raises(UserError, match=r"^representation.clusters=40 needs at least 40 sample descriptors, but "
                                        r"representation.fit_sample=4 images x representation.fit_descriptors=8 give at most "
                                        r"32: sample more or use fewer clusters$"):
        RunPlan.from_config(make_cfg("query=full", *VLAD, "representation.clusters=40", "representation.fit_sample=4"))
    assert counts.extracted == []


class HeadOnly(Embedder):
    """A model whose descriptor comes from its own head (as the CLIP towers): no dense map."""

    dense = False

    def __init__(self, model: Embedder):
        super().__init__(model.preprocess, model.dim)


def test_a_model_without_a_dense_map_is_refused_before_any_image(lite0: Embedder, folder_root: Path) -> None:
    representation = VladRepresentation(10**8).fitted(VladState(vlad_module.Vocabulary(np.eye(2, 1280, dtype=np.float32), 0, 1, "")))
    with pytest.raises(DenseFeatureError, match=r"^HeadOnly has no dense feature map to aggregate .*use a timm or effnet_lite model$"):
        representation.worker_dataset([], HeadOnly(lite0))


def test_an_image_narrower_than_a_patch_is_a_counted_skip(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.full((6, 600, 3), 128, np.uint8)).save(tmp_path / "strip.png")
    Image.fromarray(np.full((60, 60, 3), 128, np.uint8)).save(tmp_path / "square.png")
    items = [Item(key=name, path=tmp_path / name) for name in ("strip.png", "square.png")]
    images = DenseImages(items, 224, 14, 10**8)
    strip, square = images[0], images[1]
    assert strip["error"] == ("its 600x6 pixels resized by 0.373 (a longer side of 224 for its image) are 224x2: "
                              "thinner than one 14-pixel patch (representation.input_size)")
    assert square["error"] == "" and tuple(square["pixels"].shape) == (3, 224, 224)


def test_evaluate_runs_vlad_on_the_demo_set(tmp_path: Path) -> None:
    command = [sys.executable, "evaluate.py", "representation=vlad", f"paths.cache={tmp_path / 'cache'}",
               f"paths.leaderboard={tmp_path / 'leaderboard.csv'}", f"hydra.run.dir={tmp_path / 'run'}",
               "extract.workers=0", "model.input_size=64", "representation.input_size=128", "eval.report=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GIT_DIR": str(tmp_path / "no-repository")}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["representation"] == "vlad" and 0 < metrics["summary"]["all"]["mAP"] <= 1, metrics
