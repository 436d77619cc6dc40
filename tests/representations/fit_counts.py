"""What the representation tests share: fits and extractions counted, on a small model."""
from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from retrieval.models import Embedder, create_model
from retrieval.plan import model as model_spec
from retrieval.stages import extract as extract_stage


class Counts:
    """What a run did: the sample size of each fit, and (store, items embedded) of each extraction."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.extracted: list[tuple[str, int]] = []

    @property
    def fits(self) -> int:
        return len(self.samples)


def counting(monkeypatch: pytest.MonkeyPatch, lite0: Embedder, module: ModuleType, fit: str) -> Counts:
    """`module.fit` (what a representation learns with) and the extractions counted; the
    session's 64 px Lite0 for every 64 px effnet_lite build."""
    counted = Counts()
    learn, fill = getattr(module, fit), extract_stage.fill_store

    def counted_learn(sample: Any, *args: Any, **options: Any) -> Any:
        counted.samples.append(len(sample))
        return learn(sample, *args, **options)

    def counted_fill(*args: Any, desc: str, **options: Any) -> dict:
        stats = fill(*args, desc=desc, **options)
        counted.extracted.append((desc, stats["embedded"]))
        return stats

    monkeypatch.setattr(module, fit, counted_learn)
    monkeypatch.setattr(extract_stage, "fill_store", counted_fill)
    monkeypatch.setattr(model_spec, "create_model", lambda family, **options: (
        lite0 if family == "effnet_lite" and options.get("input_size") == 64 else create_model(family, **options)))
    return counted
