"""The small groups of a run, read: where its artifacts go, how it extracts, what it writes
when it scores."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from retrieval.device import resolve_device


@dataclass(frozen=True)
class Paths:
    cache: Path
    """Every artifact: feature stores, rankings, indexes, fitted states."""
    leaderboard: Path

    @classmethod
    def of(cls, node: Mapping[str, Any]) -> "Paths":
        return cls(Path(node["cache"]).expanduser(), Path(node["leaderboard"]).expanduser())


@dataclass(frozen=True)
class ExtractSpec:
    """How a split's missing items are embedded (the `extract` group); only `dtype` and
    `max_pixels` change what is stored, the rest how fast and where."""

    device: torch.device
    precision: str
    batch_size: int
    workers: int
    shard_size: int
    """Images per resumable shard (region galleries: `regions.shard_images`)."""
    dtype: str
    max_pixels: int
    engine: str
    engine_options: dict[str, Any] | None
    """`extract.<engine>`: the engine's own options."""

    @classmethod
    def of(cls, node: Mapping[str, Any]) -> "ExtractSpec":
        return cls(
            device=resolve_device(node["device"]),
            precision=node["precision"],
            batch_size=int(node["batch_size"]),
            workers=int(node["workers"]),
            shard_size=int(node["shard_size"]),
            dtype=node["dtype"],
            max_pixels=int(node["max_pixels"]),
            engine=node["engine"],
            engine_options=node.get(node["engine"]),
        )


@dataclass(frozen=True)
class EvalSpec:
    """How a ranking is scored and reported (the `eval` group and the dataset's protocol options)."""

    ranking: Path | None
    """An existing ranking to score instead of the configured search."""
    report: bool
    report_top_k: int
    protocol_options: dict[str, Any]

    @classmethod
    def of(cls, node: Mapping[str, Any], protocol_options: Mapping[str, Any] | None) -> "EvalSpec":
        ranking = node.get("ranking")
        return cls(
            ranking=Path(ranking).expanduser() if ranking else None,
            report=bool(node.get("report", True)),
            report_top_k=int(node.get("report_top_k", 10)),
            protocol_options=dict(protocol_options or {}),
        )
