"""End to end on a tiny real-photo folder set: outputs, artifact reuse, refusals, skips,
re-ranking, multirun.

Stages run in-process (through `retrieval.pipeline`, as the entry points do) on configs
composed by Hydra exactly as the entry points compose them; one test runs `python evaluate.py
-m` itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from conftest import REPO, ComposeFn, copy_eth80
from retrieval import pipeline
from retrieval.leaderboard import read_rows
from retrieval.models import Embedder, create_model
from retrieval.plan import MismatchError, RunPlan
from retrieval.plan import model as model_spec
from retrieval.ranking import Ranking
from retrieval.stages import evaluate
from retrieval.stages import extract as extract_stage
from retrieval.stages import search as search_stage


class Calls:
    """What the stages built during a test: model constructions, items embedded per split,
    searches."""

    def __init__(self) -> None:
        self.models: list[str] = []
        self.extracted: list[tuple[str, int]] = []
        self.searched = 0

    def reset(self) -> None:
        self.__init__()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, lite0: Embedder) -> Calls:
    """Count builds; hand out the session's 64 px Lite0 instead of reloading its weights."""
    record = Calls()

    def counted_model(family: str, **options: Any) -> Embedder:
        record.models.append(family)
        if family == "effnet_lite" and options.get("input_size") == 64 and not options.get("checkpoint"):
            return lite0
        return create_model(family, **options)

    fill, build_search = extract_stage.fill_store, search_stage._build

    def counted_fill(store: Any, items: Any, *args: Any, desc: str, **options: Any) -> dict:
        stats = fill(store, items, *args, desc=desc, **options)
        record.extracted.append((desc, stats["embedded"]))
        return stats

    def counted_search(*args: Any) -> None:
        record.searched += 1
        build_search(*args)

    monkeypatch.setattr(model_spec, "create_model", counted_model)
    monkeypatch.setattr(extract_stage, "fill_store", counted_fill)
    monkeypatch.setattr(search_stage, "_build", counted_search)
    monkeypatch.setattr(evaluate, "git_commit", lambda: "test")  # leave the developer's repository alone
    return record


def instance_of(key: str) -> str:
    return key.split("/")[1]  # images/<instance>/<file>


def independent_metrics(ranking: Path) -> pd.DataFrame:
    """Leave-one-out AP, hit@1 and recall@5 per query, from ranking.npz and the file names alone."""
    with np.load(ranking) as data:
        indices, query_ids, gallery_ids = data["indices"], data["query_ids"], data["gallery_ids"]
    labels = [instance_of(str(key)) for key in gallery_ids]
    rows = []
    for q, query in enumerate(map(str, query_ids)):
        ranked = [g for g in indices[q] if g >= 0 and str(gallery_ids[g]) != query]
        hits = [labels[g] == instance_of(query) for g in ranked]
        npos = sum(label == instance_of(query) for label in labels) - 1
        precisions = [sum(hits[: i + 1]) / (i + 1) for i, hit in enumerate(hits) if hit]
        rows.append({"ap": sum(precisions) / npos, "hit@1": float(any(hits[:1])), "recall@5": sum(hits[:5]) / npos})
    return pd.DataFrame(rows)


def test_evaluate_writes_outputs_and_reuses_artifacts(make_cfg: ComposeFn, calls: Calls, tmp_path: Path) -> None:
    out = tmp_path / "run1"
    pipeline.evaluate(make_cfg("query=box", "eval.report=true"), out)
    for name in ("metrics.json", "per_query.csv", "ranking.npz", "dataset.json", "report.html"):
        assert (out / name).is_file(), name
    assert calls.extracted == [("queries", 12), ("gallery", 12)] and calls.searched == 1
    assert calls.models == ["effnet_lite", "effnet_lite"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["model"], metrics["query_mode"], metrics["index"]) == ("folder", "effnet_lite0", "box", "flat")
    assert metrics["counts"]["n_queries"] == metrics["counts"]["n_gallery"] == 12
    assert metrics["counts"]["skipped"] == {"loading": 0, "queries": 0, "gallery": 0}
    manifest = json.loads((out / "dataset.json").read_text())
    assert len(manifest["gallery"]) == 12 and manifest["protocol"] == "instance"

    expected = independent_metrics(out / "ranking.npz")
    per_query = pd.read_csv(out / "per_query.csv")
    np.testing.assert_allclose(per_query["ap"], expected["ap"], atol=1e-9)
    summary = metrics["summary"]["all"]
    for metric, column in (("mAP", "ap"), ("hit@1", "hit@1"), ("recall@5", "recall@5")):
        assert summary[metric] == pytest.approx(expected[column].mean(), abs=1e-9), metric
    assert 0 < summary["mAP"] < 1 and 0 < summary["hit@1"] < 1  # imperfect: the checks above compare real numbers

    rows = read_rows(tmp_path / "leaderboard.csv")
    assert len(rows) == 1 and rows[0]["query_mode"] == "box" and rows[0]["run_dir"] == str(out.resolve())
    assert float(rows[0]["mAP"]) == pytest.approx(round(100 * summary["mAP"], 2))

    # Same settings but an option that does not touch the vectors or the ranking: nothing rebuilt.
    calls.reset()
    pipeline.evaluate(make_cfg("query=box", "eval.report=true", "eval.report_top_k=3"), tmp_path / "run2")
    assert (calls.models, calls.extracted, calls.searched) == ([], [], 0)
    assert (tmp_path / "run2" / "ranking.npz").read_bytes() == (out / "ranking.npz").read_bytes()
    assert len(read_rows(tmp_path / "leaderboard.csv")) == 2

    # Leave-one-out queries cut out as the gallery is (whole images) are the gallery's items:
    # nothing is embedded, no model is even built; only the search runs.
    calls.reset()
    pipeline.evaluate(make_cfg("query=full"), tmp_path / "run3")
    assert (calls.models, calls.extracted, calls.searched) == ([], [], 1)
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 1  # one store, both splits
    full = json.loads((tmp_path / "run3" / "metrics.json").read_text())
    assert full["query_mode"] == "full"
    assert full["summary"]["all"]["mAP"] == pytest.approx(independent_metrics(tmp_path / "run3" / "ranking.npz")["ap"].mean())


def test_queries_from_another_model_are_refused(make_cfg: ComposeFn, calls: Calls) -> None:
    other = make_cfg("model=dinov2_vits14", "model.pretrained=null", "model.input_size=28")
    folder = extract_stage.main(RunPlan.from_config(other), "queries")
    with pytest.raises(MismatchError, match="python extract.py") as error:
        pipeline.ranking(make_cfg(f"search.queries={folder}"))
    message = str(error.value)
    assert "dinov2_vits14" in message and "effnet_lite0" in message and "384" in message and "1280" in message


def test_a_store_without_the_datasets_images_is_refused(make_cfg: ComposeFn, calls: Calls, tmp_path: Path) -> None:
    small = copy_eth80(tmp_path / "small", instances=("cup1", "pear1"), views=("000-000", "090-068"))
    folder = extract_stage.main(RunPlan.from_config(make_cfg(f"dataset.root={small}")), "gallery")
    with pytest.raises(MismatchError, match="holds 0 of the 12 gallery of dataset folder"):
        pipeline.ranking(make_cfg(f"search.gallery={folder}"))


def test_adding_images_embeds_only_them(make_cfg: ComposeFn, calls: Calls, folder_root: Path, tmp_path: Path) -> None:
    pipeline.evaluate(make_cfg("query=full"), tmp_path / "run1")
    assert calls.extracted == [("queries", 12)]  # the gallery's items are the queries' items
    copy_eth80(folder_root, instances=("pear1",))  # one more instance folder, three views
    calls.reset()
    pipeline.evaluate(make_cfg("query=full"), tmp_path / "run2")
    assert calls.extracted == [("queries", 3)] and calls.searched == 1
    metrics = json.loads((tmp_path / "run2" / "metrics.json").read_text())
    assert metrics["counts"]["n_gallery"] == 15
    expected = independent_metrics(tmp_path / "run2" / "ranking.npz")
    assert metrics["summary"]["all"]["mAP"] == pytest.approx(expected["ap"].mean(), abs=1e-9)


def test_moved_root_reuses_everything_and_a_changed_image_is_embedded_again(
    make_cfg: ComposeFn, calls: Calls, folder_root: Path, tmp_path: Path
) -> None:
    first = pipeline.ranking(make_cfg("query=full"))
    moved = tmp_path / "moved"
    folder_root.rename(moved)
    calls.reset()
    again = pipeline.ranking(make_cfg("query=full", f"dataset.root={moved}"))
    assert (calls.models, calls.extracted, calls.searched) == ([], [], 0) and again == first

    changed = moved / "images" / "cup1" / "cup1-045-180.png"
    changed.write_bytes((moved / "images" / "apple1" / "apple1-045-180.png").read_bytes())  # same name, new content
    calls.reset()
    after = pipeline.ranking(make_cfg("query=full", f"dataset.root={moved}"))
    assert calls.extracted == [("queries", 1)] and after != first  # a new ranking, not the stale one
    ranking = Ranking.load(after)
    ids = list(map(str, ranking.gallery_ids))
    copy_of_apple = ids.index("images/apple1/apple1-045-180.png")
    assert ranking.indices[ids.index("images/cup1/cup1-045-180.png"), 0] == copy_of_apple  # identical pixels rank first
    assert ranking.scores[ids.index("images/cup1/cup1-045-180.png"), 0] == pytest.approx(1.0, abs=1e-5)


def test_unknown_model_preset_lists_the_presets(make_cfg: ComposeFn) -> None:
    with pytest.raises(MissingConfigException) as error:
        make_cfg("model=effnet_lite9")
    assert "Available options in 'model'" in str(error.value)
    for preset in ("effnet_lite0", "dinov2_vits14", "clip_vit_b32"):
        assert preset in str(error.value)


def test_misspelt_config_key_is_named(make_cfg: ComposeFn) -> None:
    with pytest.raises(ConfigCompositionException, match="dataset.rooot") as error:
        make_cfg("dataset.rooot=/photos")
    assert "not in struct" in str(error.value.__cause__)


def test_missing_dataset_root_shows_the_layout(make_cfg: ComposeFn, calls: Calls, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="expected layout") as error:
        pipeline.evaluate(make_cfg(f"dataset.root={tmp_path / 'nowhere'}"), tmp_path / "run")
    assert "<root>/images/<instance_id>/" in str(error.value) and "nowhere" in str(error.value)


def test_corrupt_gallery_image_is_a_counted_skip(make_cfg: ComposeFn, calls: Calls, folder_root: Path, tmp_path: Path) -> None:
    broken = sorted((folder_root / "images" / "cup1").iterdir())[1]
    broken.write_bytes(b"\x89PNG\r\n\x1a\n and then nothing")
    key = broken.relative_to(folder_root).as_posix()
    pipeline.evaluate(make_cfg("query=full"), tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["counts"]["skipped"] == {"loading": 0, "queries": 1, "gallery": 1}
    assert [entry[0] for entry in metrics["skipped"]["gallery"]] == [key]
    assert "cannot decode" in metrics["skipped"]["gallery"][0][1]
    with np.load(tmp_path / "run" / "ranking.npz") as data:
        gallery_ids, indices = list(map(str, data["gallery_ids"])), data["indices"]
    assert gallery_ids.index(key) not in indices  # never returned
    assert (indices[gallery_ids.index(key)] == -1).all()  # and its own query row is empty
    per_query = pd.read_csv(tmp_path / "run" / "per_query.csv")
    assert per_query.loc[per_query["query_id"] == key, "ap"].tolist() == [0.0]  # scored as a miss


def test_multirun_appends_a_row_per_job_and_reuses_the_gallery(folder_root: Path, tmp_path: Path) -> None:
    command = [
        sys.executable, "evaluate.py", "-m", "query=full,box",
        "dataset=folder", f"dataset.root={folder_root}",
        f"paths.cache={tmp_path / 'cache'}", f"paths.leaderboard={tmp_path / 'leaderboard.csv'}",
        "extract.workers=0", "model.input_size=64", "eval.report=false",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    # GIT_DIR to nowhere: the run records commit "unknown" instead of reading this repository;
    # one OpenMP thread, as in this process (see conftest)
    env = os.environ | {"GIT_DIR": str(tmp_path / "no-repository"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = read_rows(tmp_path / "leaderboard.csv")
    assert sorted(row["query_mode"] for row in rows) == ["box", "full"]
    assert {row["commit"] for row in rows} == {"unknown"}
    logs = done.stdout + done.stderr
    # full: the queries are the gallery's whole images, embedded once for both splits;
    # box: the 12 cut-outs are embedded, the gallery is reused.
    assert logs.count("queries: embedded 12 items") == 2, logs[-3000:]
    assert logs.count("gallery: all 12 items already extracted") == 2
    assert len(list((tmp_path / "cache" / "features").iterdir())) == 1
    for row in rows:
        assert (Path(row["run_dir"]) / "metrics.json").is_file()
    # the sweep ends with a table of its runs, by job, whose folders name what differs
    table = done.stdout.splitlines()[-3:]
    assert table[0].split() == ["query", "mAP", "hit@1", "folder"]
    assert [line.split()[0] + " " + line.split()[-1] for line in table[1:]] == [
        "full folder/model.input_size=64,query=full-0", "box folder/model.input_size=64,query=box-1"]
