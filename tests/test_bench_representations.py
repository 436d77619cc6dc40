"""bench/bench_representations.py: which setups it skips and why, and the table it prints."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import bench_representations as bench
from conftest import ETH80


def args_for(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(cache=tmp_path / "cache", out=tmp_path / "out", overrides=[], data=ETH80)


def test_an_unknown_setup_is_skipped_with_the_known_ones(tmp_path: Path) -> None:
    reason = bench.unavailable(args_for(tmp_path), "eth80", ETH80, "netvlad")
    assert reason == "unknown setup; known: global, grid_crop, vlad, segvlad, rmac"


def test_a_representation_the_checkout_lacks_is_skipped_naming_its_config(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(bench.SETUPS, "future", ["representation=future"])
    reason = bench.unavailable(args_for(tmp_path), "eth80", ETH80, "future")
    assert reason == "representation=future is not in this checkout (no conf/representation/future.yaml)"


def test_a_setup_the_config_refuses_is_skipped_with_its_message(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(bench.SETUPS, "bad", ["regions=none", "extract.batch_size=0"])
    reason = bench.unavailable(args_for(tmp_path), "eth80", ETH80, "bad")
    assert reason and "batch_size" in reason


def test_global_runs_on_eth80(tmp_path: Path) -> None:
    assert bench.unavailable(args_for(tmp_path), "eth80", ETH80, "global") is None


def test_table_gives_ratios_to_global_and_lists_skips() -> None:
    rows = {
        "global": {"mAP": 0.5, "extract_seconds": 10.0, "peak_mib": 900.0, "cached": False},
        "grid_crop": {"mAP": 0.625, "extract_seconds": 300.0, "peak_mib": 1200.0, "cached": True},
        "vlad": {"skipped": "representation=vlad is not in this checkout"},
    }
    text = bench.table("eth80", rows)
    assert "| global | 50.00 | 10 | 1.0 | 900 |" in text
    assert "| grid_crop | 62.50 | 300 | 30.0 | 1200* |" in text
    assert "- vlad: skipped: representation=vlad is not in this checkout" in text


@pytest.mark.parametrize("value, expected", [("global,grid_crop", ["global", "grid_crop"]), ("rmac,", ["rmac"])])
def test_setups_are_comma_separated(value: str, expected: list[str]) -> None:
    assert bench.names(value) == expected
