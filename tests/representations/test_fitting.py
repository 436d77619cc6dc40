"""A representation that learns (`representation=global representation.whiten=N`): its state is
fitted once on a seeded sample, kept as an artifact, reused by every run with the same sample and
settings and fitted again when either changes; gallery and queries are embedded with it."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ComposeFn, copy_eth80
from fit_counts import Counts, counting
from retrieval import artifacts, pipeline
from retrieval.errors import UserError
from retrieval.models import Embedder
from retrieval.plan import RunPlan
from retrieval.representations import whole
from retrieval.aggregation.whitening import Whitening
from retrieval.representations.fitting import STATE, sample_records

WHITEN = ["representation.whiten=4", "representation.fit_sample=6"]


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch, lite0: Embedder) -> Counts:
    return counting(monkeypatch, lite0, whole, "fit_whitening")


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_whitening_is_learnt_on_the_sample_and_applied_to_every_vector(make_cfg: ComposeFn, counts: Counts) -> None:
    plan = RunPlan.from_config(make_cfg("query=full", *WHITEN))
    gallery = plan.stores["gallery"]
    assert gallery.fit is not None and len(gallery.fit.items) == 6
    chosen = sample_records(plan.dataset.gallery, 6, 0)
    assert [item.path for item in gallery.fit.items] == [record.path for record in chosen]
    pipeline.features(plan)
    assert counts.fits == 1
    assert counts.extracted == [("fit sample", 6), ("queries", 12)]  # the gallery's items are the queries'

    stored = artifacts.read_yaml(gallery.folder / "config.yaml")
    assert stored["whiten"] == 4 and stored["fit"] == gallery.fit.folder.name
    state = Whitening.load(gallery.fit.folder / STATE)
    assert state.projection.shape == (1280, 4)

    # by hand: the raw whole-image vectors (the sample's already in their store), whitened
    raw = RunPlan.from_config(make_cfg("query=full"))
    pipeline.features(raw)
    raw_vectors = raw.stores["gallery"].load().per_image().astype(np.float64)
    in_sample = [raw.stores["gallery"].item_keys.index(item.key) for item in gallery.fit.items]
    centred = raw_vectors[in_sample] - raw_vectors[in_sample].mean(axis=0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    cosines = np.abs(state.projection.T.astype(np.float64) @ axes[:4].T)
    np.testing.assert_allclose(np.diag(cosines), 1, atol=1e-3)  # the sample's principal axes
    scale = 1 / np.sqrt(state.eigenvalues.astype(np.float64) + state.eps)
    expected = unit((raw_vectors - state.mean) @ state.projection.astype(np.float64) * scale)
    np.testing.assert_allclose(gallery.load().per_image(), expected, atol=1e-4)


def test_the_state_is_reused_and_fitted_again_when_its_sample_or_settings_change(
    make_cfg: ComposeFn, counts: Counts, folder_root: Path
) -> None:
    def run(*overrides: str) -> RunPlan:
        plan = RunPlan.from_config(make_cfg("query=full", *overrides))
        pipeline.ranking(plan)
        return plan

    first = run(*WHITEN)
    assert counts.fits == 1
    counts.extracted.clear()
    again = run(*WHITEN)
    assert counts.fits == 1 and counts.extracted == []  # nothing fitted or embedded again
    assert again.stores["gallery"].fit.folder == first.stores["gallery"].fit.folder

    folders = {first.stores["gallery"].fit.folder}
    for changed in (["representation.fit_seed=1"], ["representation.whiten=3"], ["representation.fit_sample=7"]):
        plan = run(*WHITEN, *changed)
        assert plan.stores["gallery"].fit.folder not in folders and plan.stores["gallery"].folder != first.stores["gallery"].folder
        folders.add(plan.stores["gallery"].fit.folder)
    assert counts.fits == 4

    # an image of the sample overwritten: another sample, so another state
    image = first.stores["gallery"].fit.items[0].path
    shutil.copyfile(folder_root / "images" / "cup2" / "cup2-090-068.png", image)
    changed = run(*WHITEN)
    assert changed.stores["gallery"].fit.folder not in folders and counts.fits == 5


def test_queries_cut_out_are_whitened_with_the_gallery_state(make_cfg: ComposeFn, counts: Counts) -> None:
    plan = RunPlan.from_config(make_cfg("query=box", *WHITEN))
    assert plan.stores["queries"].fit == plan.stores["gallery"].fit
    assert plan.stores["queries"].folder == plan.stores["gallery"].folder  # one store, keyed by the state
    pipeline.features(plan)
    assert counts.fits == 1  # fitted for the queries, reused for the gallery
    queries = plan.stores["queries"].load()
    assert queries.dim == 4 and queries.valid.all()


def test_a_training_folder_is_sampled_instead_of_the_gallery(make_cfg: ComposeFn, counts: Counts, tmp_path: Path) -> None:
    training = copy_eth80(tmp_path / "training", instances=("pear1", "car1"))
    plan = RunPlan.from_config(make_cfg("query=full", *WHITEN, f"representation.fit_images={training}"))
    fit = plan.stores["gallery"].fit
    assert len(fit.items) == 6 and all(Path(item.path).is_relative_to(training) for item in fit.items)
    gallery_fit = RunPlan.from_config(make_cfg("query=full", *WHITEN)).stores["gallery"].fit
    assert fit.folder != gallery_fit.folder
    pipeline.features(plan)
    assert counts.fits == 1 and (fit.folder / STATE).is_file()


def test_a_sample_too_small_for_the_dimensions_is_refused(make_cfg: ComposeFn, counts: Counts) -> None:
    with pytest.raises(UserError, match=r"^representation.whiten=6: PCA-whitening to 6 dimensions needs at least 7 sample "
                                        r"vectors .*\(representation.fit_sample, representation.whiten\)$"):
        pipeline.features(make_cfg("query=full", "representation.whiten=6", "representation.fit_sample=6"))
