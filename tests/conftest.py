"""Shared fixtures: a tiny real-photo folder dataset and Hydra configs whose outputs stay in tmp_path."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import faiss
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from retrieval.models import Embedder, create_model

pytest_plugins = ["isolation"]  # a test that opens a path outside the project fails

# Tiny workloads on a shared 2-core machine: one thread each. With two OpenMP threads and the
# other core busy elsewhere, every parallel region waits for a descheduled thread and a 30 ms
# forward pass takes 2 s.
torch.set_num_threads(1)
faiss.omp_set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
"""The real data the tests read: a few MB in the repository, sources and terms in its README.md."""
ETH80 = TEST_DATA / "eth80"
"""16 ETH-80 objects (two per category), six views each, with masks."""
VOXDET_MINI = TEST_DATA / "voxdet-mini"
"""A VoxDet-layout set with the anns.pt files the original VoxDet-SoIR builder wrote for it."""
# Two apples and two cups, three far-apart views each: similar enough that rankings are imperfect
# (mAP about 0.5 with the default model), so metric checks compare more than all-ones.
TINY_INSTANCES = ("apple1", "apple2", "cup1", "cup2")
TINY_VIEWS = ("000-000", "045-180", "090-068")


def data_file(path: Path) -> Path:
    """`path` (under TEST_DATA), or a failure of the test that asks for it naming the missing
    file: a broken checkout fails those tests, not the collection of the whole suite."""
    if not path.exists():
        pytest.fail(f"test data missing: {path}; restore tests/data from the repository "
                    "(tests/data/README.md lists its files)", pytrace=False)
    return path


def copy_eth80(root: Path, instances: tuple[str, ...] = TINY_INSTANCES, views: tuple[str, ...] = TINY_VIEWS) -> Path:
    """`root/images/<instance>/` and `root/masks/<instance>/` with the given ETH-80 views (camera
    angles) of each instance: copies, so that tests may add to or damage the set."""
    for instance in instances:
        for kind in ("images", "masks"):
            (root / kind / instance).mkdir(parents=True, exist_ok=True)
            for view in views:
                name = f"{instance}-{view}.png"
                shutil.copyfile(data_file(ETH80 / kind / instance / name), root / kind / instance / name)
    return root


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """4 instances x 3 views (128x128 PNG photos with masks) in the folder adapter's layout."""
    return copy_eth80(tmp_path / "photos")


@pytest.fixture(scope="session")
def lite0() -> Embedder:
    """The offline default model (packaged weights) at 64 px, built once: loading it is the slow part."""
    return create_model("effnet_lite", input_size=64)


ComposeFn = Callable[..., DictConfig]


@pytest.fixture
def make_cfg(tmp_path: Path, folder_root: Path) -> ComposeFn:
    """`make_cfg(*overrides)` -> the composed config, as the entry points see it, on the tiny
    folder set with cache and leaderboard under tmp_path, no worker processes and 64 px inputs."""
    base = [
        "dataset=folder",
        f"dataset.root={folder_root}",
        f"paths.cache={tmp_path / 'cache'}",
        f"paths.leaderboard={tmp_path / 'leaderboard.csv'}",
        "extract.workers=0",
        "extract.batch_size=8",
        "model.input_size=64",
        "eval.report=false",
    ]

    def make(*overrides: str) -> DictConfig:
        with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
            return compose("config", overrides=[*base, *overrides])

    return make
