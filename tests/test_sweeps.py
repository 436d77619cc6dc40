"""Sweeps: a sweep run in parallel by Hydra's joblib launcher finishes both jobs against one
shared cache, and no item is embedded twice (each shard is built by one job; the other reuses
it); each job's folder is named after its overrides, and the sweep ends with a table of its runs."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hydra import compose, initialize_config_dir

from conftest import REPO
from retrieval.features.store import SHARD_GLOB
from retrieval.percent import percent_text
from retrieval.report.board import read_leaderboard
from retrieval.sweeps import MAX_NAME, run_folder


def test_a_job_folder_is_named_after_its_overrides_safely_and_briefly() -> None:
    assert run_folder("model=dinov2_vits14,query=mask", 3) == "model=dinov2_vits14,query=mask-3"
    assert run_folder("rerank=[]", 0) == "rerank=none-0" and run_folder("rerank=[verify,aqe]", 1) == "rerank=verify,aqe-1"
    assert run_folder("index.factory='IVF4,Flat'", 2) == "index.factory=IVF4,Flat-2"
    assert run_folder("model.checkpoint=/data/w/ft v2.pt,query=box", 4) == "model.checkpoint=_data_w_ft_v2.pt,query=box-4"
    assert run_folder("", 5) == "run-5"  # only excluded keys differ: the job number tells the folders apart
    first, second = (run_folder(f"model.checkpoint={'/very/long/path' * 20}/{name}.pt", 6) for name in ("a", "b"))
    assert first != second and len(first) <= MAX_NAME + len("-6") and first.startswith("model.checkpoint=_very_long_path")


def test_paths_and_run_settings_stay_out_of_the_folder_name(tmp_path: Path) -> None:
    """conf/config.yaml names a sweep job's folder after the overrides that can change a result."""
    overrides = ["dataset=folder", f"dataset.root={tmp_path}", f"paths.cache={tmp_path / 'cache'}", "extract.workers=0",
                 "extract.batch_size=8", "eval.report=false", "query=box", "+model.pretrained=false"]
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    cfg.hydra.job.num = 4
    assert cfg.hydra.sweep.subdir == "folder/+model.pretrained=false,query=box-4"


def test_a_two_job_joblib_sweep_shares_one_cache(tmp_path: Path, folder_root: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "multirun"
    command = [
        sys.executable, "evaluate.py", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "query=box,full",
        "dataset=folder", f"dataset.root={folder_root}", f"paths.cache={tmp_path / 'cache'}",
        f"paths.leaderboard={tmp_path / 'leaderboard.csv'}", f"hydra.sweep.dir={sweep}",
        "extract.workers=0", "model.input_size=64", "eval.report=false",
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    jobs = sorted(sweep.glob("folder/*"))
    assert [job.name for job in jobs] == ["model.input_size=64,query=box-0", "model.input_size=64,query=full-1"]
    table = [f"sweep {sweep}: 2 runs (metrics in %)", "query  mAP    hit@1  folder"]
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["counts"]["n_queries"] == 12
        values = [metrics["query_mode"], percent_text(metrics["summary"]["all"]["mAP"]), percent_text(metrics["summary"]["all"]["hit@1"])]
        table.append("  ".join(value.ljust(width) for value, width in zip(values, (5, 5, 5))) + f"  folder/{job.name}")
    assert done.stdout.splitlines()[-3:] == table[1:] and table[0] in done.stdout.splitlines()
    board = read_leaderboard(tmp_path / "leaderboard.csv")
    assert {(run.sweep.key, tuple(run.sweep.swept)) for run in board.datasets[0].runs} == {(str(sweep), ("query=box,full",))}
    built = [name for job in jobs for name in re.findall(r"building (shard-\w+\.npz)", (job / "evaluate.log").read_text())]
    shards = sorted((tmp_path / "cache" / "features").glob(f"*/{SHARD_GLOB}"))
    assert sorted(built) == sorted({path.name for path in shards})  # each shard built once, by one job
    keys = [key for path in shards for key in np.load(path)["items"].tolist()]
    assert len(keys) == len(set(keys))  # no item embedded twice
    assert sum("#" not in key for key in keys) == 12  # the gallery (whole images; cut-outs add "#<what>"), once
