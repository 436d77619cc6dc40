"""Shared fixtures: a tiny real-photo folder dataset and Hydra configs whose outputs stay in tmp_path."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
ETH80 = REPO.parent / "shared" / "data" / "eth80"
TINY_INSTANCES = ("apple1", "cup1", "horse1")
TINY_VIEWS = 4


def copy_eth80(root: Path, instances: tuple[str, ...] = TINY_INSTANCES, views: int = TINY_VIEWS) -> Path:
    """`root/images/<instance>/` and `root/masks/<instance>/`: the first `views` ETH-80 views of
    each instance (copies, since the shared data is read-only)."""
    for instance in instances:
        stems = sorted(p.name for p in (ETH80 / "images" / instance).glob("*.png"))[:views]
        for kind in ("images", "masks"):
            (root / kind / instance).mkdir(parents=True, exist_ok=True)
            for stem in stems:
                shutil.copyfile(ETH80 / kind / instance / stem, root / kind / instance / stem)
    return root


@pytest.fixture
def folder_root(tmp_path: Path) -> Path:
    """3 instances x 4 views (128x128 PNG photos with masks) in the folder adapter's layout."""
    return copy_eth80(tmp_path / "photos")


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
