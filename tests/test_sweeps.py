"""A sweep run in parallel by Hydra's joblib launcher: both jobs finish against one shared
cache, and no item is embedded twice (each shard is built by one job; the other reuses it)."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO
from retrieval.features.store import SHARD_GLOB

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")


def test_a_two_job_joblib_sweep_shares_one_cache(tmp_path: Path, folder_root: Path) -> None:
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
    assert [job.name.rsplit("-", 1)[0] for job in jobs] == ["effnet_lite0-box", "effnet_lite0-full"]
    for job in jobs:
        assert json.loads((job / "metrics.json").read_text())["counts"]["n_queries"] == 12
    built = [name for job in jobs for name in re.findall(r"building (shard-\w+\.npz)", (job / "evaluate.log").read_text())]
    shards = sorted((tmp_path / "cache" / "features").glob(f"*/{SHARD_GLOB}"))
    assert sorted(built) == sorted({path.name for path in shards})  # each shard built once, by one job
    keys = [key for path in shards for key in np.load(path)["items"].tolist()]
    assert len(keys) == len(set(keys))  # no item embedded twice
    assert sum("#" not in key for key in keys) == 12  # the gallery (whole images; cut-outs add "#<what>"), once
