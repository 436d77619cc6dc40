"""The stages chained: config in, artifacts out, each stage built only when missing.

    features(cfg)       -> (queries store, gallery store)          extract
    texts(cfg)          -> the store of composed queries' words     extract
    ranking(cfg)        -> ranking.npz after search and re-ranking  extract, search, rerank
    evaluate(cfg, out)  -> metrics.json                             all of them

A text query's `queries` store holds its text vectors; a composed query's holds its image
part, and `texts` its words.

The configuration is checked before any work starts, so a bad value never costs a model
load or leaves a leaderboard row. Stages take their inputs as paths and never import each
other; this module is where they meet (the entry scripts call it, and so can a notebook).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from retrieval import artifacts, config
from retrieval.features.store import ShardSetAside
from retrieval.models.weights import check_weights
from retrieval.stages import evaluate as evaluate_stage
from retrieval.stages import extract, rerank, search
from retrieval.stages.common import dataset_from_config, forget_datasets, plain, query_of, regions_enabled

log = logging.getLogger(__name__)


def _begin(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The checked config (paths expanded), before any work: a bad value, or weights that
    cannot be had, cost no model load and leave no leaderboard row. The dataset is listed
    afresh, since one listed by an earlier call in this process (an earlier job of a sweep)
    may have changed on disk."""
    resolved = config.resolve(cfg)
    if not resolved["eval"].get("ranking"):  # a given ranking needs no model
        check_weights(resolved["model"])
    forget_datasets()
    config.check_dataset(resolved, dataset_from_config(resolved))
    return resolved


def _stores(cfg: Mapping[str, Any]) -> tuple[Path, Path, Path | None]:
    """The queries, gallery and (composed queries only) texts stores, extracted where missing."""
    texts = extract.main(cfg, "texts") if query_of(cfg).composed else None
    return extract.main(cfg, "queries"), extract.main(cfg, "gallery"), texts


def _ranking(cfg: Mapping[str, Any]) -> Path:
    """Extract, search, re-rank. A shard found damaged while it is read is set aside (and
    named in the log): its items are extracted again and the search runs again, for as long
    as each try finds another shard (one found twice, rebuilt and damaged again, stops it)."""
    set_aside: set[Path] = set()
    while True:
        try:
            return _search_and_rerank(cfg)
        except ShardSetAside as error:
            if error.shard in set_aside:
                raise
            set_aside.add(error.shard)
            log.warning("extracting the items of %s again, then searching again", error.shard.name)


def _search_and_rerank(cfg: Mapping[str, Any]) -> Path:
    queries, gallery, texts = _stores(cfg)
    return rerank.main(cfg, search.main(cfg, queries, gallery, texts), queries, gallery)


def features(cfg: Mapping[str, Any]) -> tuple[Path, Path]:
    """The feature stores of the queries and the gallery, extracted where missing (composed
    queries' words too: `texts` gives their store)."""
    return _stores(_begin(cfg))[:2]


def texts(cfg: Mapping[str, Any]) -> Path | None:
    """The feature store of the words of composed queries, extracted where missing (None when
    the configured queries are not composed)."""
    return _stores(_begin(cfg))[2]


def ranking(cfg: Mapping[str, Any]) -> Path:
    """The run's final ranking: searched, then re-ranked by the configured steps."""
    return _ranking(_begin(cfg))


def whole_image(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The same config with one vector per gallery image, exact search and no re-ranking: the
    baseline a region-level run is reported against (exact, since it is the reference, and an
    approximate index trained for many region rows may not even fit one row per image)."""
    exact = {"name": "flat", "factory": "Flat", "gpu": None, "search_params": {}}
    return {**plain(cfg), "regions": {"name": "none"}, "index": exact, "rerank": {}}


def evaluate(cfg: Mapping[str, Any], out: Path) -> Path:
    """Score the run (or `eval.ranking`, an existing ranking file) into the folder `out`."""
    cfg = _begin(cfg)
    artifacts.writable(Path(cfg["paths"]["leaderboard"]).parent, "paths.leaderboard")  # written last: checked first
    given = plain(cfg["eval"]).get("ranking")
    if given:
        return evaluate_stage.main(cfg, Path(given).expanduser(), out)
    baseline = _ranking(whole_image(cfg)) if regions_enabled(cfg) else None
    return evaluate_stage.main(cfg, _ranking(cfg), out, baseline)
