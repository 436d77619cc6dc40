"""The stages chained: config (or plan) in, artifacts out, each stage built only when missing.

    features(cfg)       -> (queries store, gallery store)          extract
    texts(cfg)          -> the store of composed queries' words     extract
    ranking(cfg)        -> ranking.npz after search and re-ranking  extract, search, rerank
    evaluate(cfg, out)  -> metrics.json                             all of them

`cfg` is a Hydra DictConfig, a plain dict, or a `RunPlan` already built from one. The plan is
built once per call (`RunPlan.from_config`), which checks the configuration before any work
starts, so a bad value never costs a model load or leaves a leaderboard row. Stages never
import each other; this module is where they meet (the entry scripts call it, and so can a
notebook).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from retrieval import artifacts
from retrieval.features.store import ShardSetAside
from retrieval.plan import RunPlan
from retrieval.stages import evaluate as evaluate_stage
from retrieval.stages import extract, rerank, search

log = logging.getLogger(__name__)


def plan_of(cfg: Mapping[str, Any] | RunPlan) -> RunPlan:
    """The plan of a config (built and checked), or the plan itself."""
    return cfg if isinstance(cfg, RunPlan) else RunPlan.from_config(cfg)


def _stores(plan: RunPlan) -> tuple[Path, Path, Path | None]:
    """The queries, gallery and (composed queries only) texts stores, extracted where missing."""
    texts = extract.main(plan, "texts") if plan.query.composed else None
    return extract.main(plan, "queries"), extract.main(plan, "gallery"), texts


def _ranking(plan: RunPlan) -> Path:
    """Extract, search, re-rank. A shard found damaged while it is read is set aside (and
    named in the log): its items are extracted again and the search runs again, for as long
    as each try finds another shard (one found twice, rebuilt and damaged again, stops it)."""
    set_aside: set[Path] = set()
    while True:
        try:
            _stores(plan)
            return rerank.main(plan, search.main(plan))
        except ShardSetAside as error:
            if error.shard in set_aside:
                raise
            set_aside.add(error.shard)
            log.warning("extracting the items of %s again, then searching again", error.shard.name)


def features(cfg: Mapping[str, Any] | RunPlan) -> tuple[Path, Path]:
    """The feature stores of the queries and the gallery, extracted where missing (composed
    queries' words too: `texts` gives their store)."""
    return _stores(plan_of(cfg))[:2]


def texts(cfg: Mapping[str, Any] | RunPlan) -> Path | None:
    """The feature store of the words of composed queries, extracted where missing (None when
    the configured queries are not composed)."""
    return _stores(plan_of(cfg))[2]


def ranking(cfg: Mapping[str, Any] | RunPlan) -> Path:
    """The run's final ranking: searched, then re-ranked by the configured steps."""
    return _ranking(plan_of(cfg))


def evaluate(cfg: Mapping[str, Any] | RunPlan, out: Path) -> Path:
    """Score the run (or `eval.ranking`, an existing ranking file) into the folder `out`."""
    plan = plan_of(cfg)
    artifacts.writable(plan.paths.leaderboard.parent, "paths.leaderboard")  # written last: checked first
    if plan.eval.ranking is not None:
        return evaluate_stage.main(plan, plan.eval.ranking, out)
    baseline = _ranking(plan.whole_image()) if plan.regional else None
    return evaluate_stage.main(plan, _ranking(plan), out, baseline)
