"""The stages chained: config in, artifacts out, each stage built only when missing.

    features(cfg)       -> (queries store, gallery store)          extract
    ranking(cfg)        -> ranking.npz after search and re-ranking  extract, search, rerank
    evaluate(cfg, out)  -> metrics.json                             all of them

The configuration is checked before any work starts, so a bad value never costs a model
load or leaves a leaderboard row. Stages take their inputs as paths and never import each
other; this module is where they meet (the entry scripts call it, and so can a notebook).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from retrieval.stages import evaluate as evaluate_stage
from retrieval.stages import extract, rerank, search
from retrieval.stages.common import forget_datasets, plain, regions_enabled


def _begin() -> None:
    """Start from the files as they are now: a dataset listed by an earlier call in this
    process (an earlier job of an in-process sweep) may have changed on disk since."""
    forget_datasets()


def _features(cfg: Mapping[str, Any]) -> tuple[Path, Path]:
    return extract.main(cfg, "queries"), extract.main(cfg, "gallery")


def _ranking(cfg: Mapping[str, Any]) -> Path:
    queries, gallery = _features(cfg)
    return rerank.main(cfg, search.main(cfg, queries, gallery), queries, gallery)


def features(cfg: Mapping[str, Any]) -> tuple[Path, Path]:
    """The feature stores of the queries and the gallery, extracted where missing."""
    _begin()
    return _features(cfg)


def ranking(cfg: Mapping[str, Any]) -> Path:
    """The run's final ranking: searched, then re-ranked by the configured steps."""
    _begin()
    return _ranking(cfg)


def whole_image(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The same config with one vector per gallery image and no re-ranking: the baseline."""
    return {**plain(cfg), "regions": {"name": "none"}, "rerank": {}}


def evaluate(cfg: Mapping[str, Any], out: Path) -> Path:
    """Score the run (or `eval.ranking`, an existing ranking file) into the folder `out`."""
    _begin()
    given = plain(cfg["eval"]).get("ranking")
    if given:
        return evaluate_stage.main(cfg, Path(given).expanduser(), out)
    baseline = _ranking(whole_image(cfg)) if regions_enabled(cfg) else None
    return evaluate_stage.main(cfg, _ranking(cfg), out, baseline)
