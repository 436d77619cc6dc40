"""Benchmark protocols, resolved by name: a ranking plus a dataset in, metric tables out.

A protocol is a function `score(ranking, dataset, **options) -> ProtocolResult` registered
with `@register("name")`; its docstring's first line describes it in error messages. Every
protocol scores each truth setup of the dataset (e.g. "all", or "easy"/"medium"/"hard") and,
within each, every query group, so results are reported per subset as well as overall.

A protocol also declares, as a `LocalisationSpec` passed to `register`, how the box / mask
localisation of a ranking is scored under it (`retrieval.protocols.localisation`), so that
code never needs to know protocols by name.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from retrieval.localisation import AP_KINDS
from retrieval.metrics import count_positives, count_queries, summarise
from retrieval.ranking import Ranking
from retrieval.records import Dataset, QueryTruth
from retrieval.registry import Registry

ID_COLUMNS = ("setup", "query", "query_id", "group", "npos")
"""Leading columns of every per-query table; the metric columns follow."""

LISTED_POSITIVES = "listed_positives"
"""`Dataset.extra` key an adapter sets when its ground-truth file lists a positive more than
once (a duplicated line): setup -> {query index: positives listed, repeats included}, for those
queries only. Reference modes divide by that count, as the reference evaluators do."""


@dataclass
class ProtocolResult:
    summary: dict[str, dict[str, float]]
    """Label -> metric -> mean, as a fraction. Labels: "<setup>" and "<setup>/<group>"."""
    per_query: pd.DataFrame
    """One row per (setup, query): ID_COLUMNS, then one column per metric (NaN = excluded)."""
    counts: dict[str, dict[str, int]]
    """Label -> n_queries, n_queries_without_positives."""


Protocol = Callable[..., ProtocolResult]
QueryScorer = Callable[[np.ndarray, Sequence[QueryTruth]], pd.DataFrame]
"""(indices (n_query, k), truths) -> per-query frame with `npos` and metric columns."""

LocalisationExtra = Callable[[Ranking, Dataset, Mapping[str, np.ndarray]], dict[str, dict[str, float]]]
"""(ranking, dataset, IoUs per localisation kind) -> label -> metrics added to the summary."""


@dataclass(frozen=True)
class LocalisationSpec:
    """What scoring localisation under a protocol needs to know about it."""

    ap: str = "standard"
    """AP of the localised mAPs (one of `retrieval.localisation.AP_KINDS`): the protocol's own,
    so that box_mAP@0 equals its mAP."""
    options: Mapping[str, LocalisationExtra] = field(default_factory=dict)
    """Protocol option (a flag) -> the extra metrics it turns on, e.g. a reference
    implementation's own numbers."""

    def __post_init__(self) -> None:
        if self.ap not in AP_KINDS:
            raise ValueError(f"ap must be one of {AP_KINDS}, not {self.ap!r}")


PROTOCOLS: Registry[Protocol] = Registry(
    "protocol", __name__, ("instance", "revisitop", "vpr", "gl3d", "patterncom"), checked="dataset.protocol_options"
)
available = PROTOCOLS.available
get_protocol = PROTOCOLS.get
_LOCALISATION: dict[str, LocalisationSpec] = {}


def register(name: str, localisation: LocalisationSpec = LocalisationSpec()) -> Callable[[Protocol], Protocol]:
    """Register a protocol as `name`, with how localisation is scored under it."""

    def decorate(protocol: Protocol) -> Protocol:
        _LOCALISATION[name] = localisation
        return PROTOCOLS.register(name)(protocol)

    return decorate


def localisation_spec(name: str) -> LocalisationSpec:
    """How localisation is scored under protocol `name` (an unknown name lists valid ones)."""
    get_protocol(name)
    return _LOCALISATION[name]


def score(ranking: Ranking, dataset: Dataset, **options: Any) -> ProtocolResult:
    """Score with the protocol the dataset names."""
    return get_protocol(dataset.protocol)(ranking, dataset, **options)


@dataclass(frozen=True)
class ListedTruth(QueryTruth):
    """A query's truth plus `listed`: its positives as the ground-truth file lists them,
    repeats included (the normaliser of the revisitop and MIRorR reference evaluators)."""

    listed: int = 0


def listed_truths(
    truths: Sequence[QueryTruth], listed: Mapping[int | str, int] | None = None
) -> list[ListedTruth]:
    """`truths` with their listed counts: `listed[q]` where given (an adapter's
    `LISTED_POSITIVES` entry for the setup; keys may be ints or their strings), else npos."""
    listed = {int(q): int(n) for q, n in (listed or {}).items()}
    return [
        ListedTruth(truth.positives, truth.junk, listed.get(q, count_positives(truth.positives)))
        for q, truth in enumerate(truths)
    ]


def with_listed_positives(dataset: Dataset) -> Dataset:
    """The dataset with every query's positives counted as its ground-truth file lists them,
    repeats included (the adapter's `extra[LISTED_POSITIVES]`): what reference evaluators
    (revisitop's compute_map, MIRorR) divide AP by."""
    listed = dataset.extra.get(LISTED_POSITIVES, {})
    return replace(dataset, truth={setup: listed_truths(truths, listed.get(setup)) for setup, truths in dataset.truth.items()})


def check_alignment(ranking: Ranking, dataset: Dataset) -> None:
    """Refuse a ranking made for another query list or gallery order: scores would be noise."""
    if not dataset.truth:
        raise ValueError(f"dataset {dataset.name!r} has no ground truth to score against")
    if list(map(str, ranking.query_ids)) != dataset.query_keys:
        raise ValueError(
            f"ranking queries ({len(ranking.query_ids)}) do not match dataset "
            f"{dataset.name!r} queries ({len(dataset.queries)}) in content or order"
        )
    if list(map(str, ranking.gallery_ids)) != dataset.gallery_keys:
        raise ValueError(
            f"ranking gallery ({len(ranking.gallery_ids)}) does not match dataset "
            f"{dataset.name!r} gallery ({len(dataset.gallery)}) in content or order"
        )
    if ranking.indices.size and ranking.indices.max() >= len(dataset.gallery):
        raise ValueError("ranking holds gallery indices past the end of the gallery")
    for setup, truths in dataset.truth.items():
        if len(truths) != len(dataset.queries):
            raise ValueError(
                f"truth setup {setup!r} has {len(truths)} entries for "
                f"{len(dataset.queries)} queries"
            )


def _labelled(per_query: pd.DataFrame, dataset: Dataset) -> dict[str, pd.DataFrame]:
    """Label -> rows it summarises: each setup, then each query group within it (when there
    are several groups; one group would only repeat the setup's row)."""
    groups = dataset.query_groups()
    if len(groups) == 1 and len(next(iter(groups.values()))) == len(dataset.queries):
        groups = {}
    subsets = {}
    for setup in dataset.truth:
        rows = per_query[per_query["setup"] == setup]
        subsets[setup] = rows
        for group, queries in groups.items():
            subsets[f"{setup}/{group}"] = rows[rows["query"].isin(queries)]
    return subsets


def evaluate_setups(ranking: Ranking, dataset: Dataset, scorer: QueryScorer) -> ProtocolResult:
    """Run `scorer` on every truth setup and summarise per setup and per query group."""
    check_alignment(ranking, dataset)
    indices = np.asarray(ranking.indices, dtype=np.int64)
    frames = []
    for setup, truths in dataset.truth.items():
        frame = scorer(indices, truths).reset_index(drop=True)
        metrics = [column for column in frame.columns if column != "npos"]
        frame = frame.assign(
            setup=setup,
            query=np.arange(len(frame)),
            query_id=dataset.query_keys,
            group=[record.group for record in dataset.queries],
        )
        frames.append(frame[[*ID_COLUMNS, *metrics]])
    per_query = pd.concat(frames, ignore_index=True)
    metric_columns = [column for column in per_query.columns if column not in ID_COLUMNS]
    subsets = _labelled(per_query, dataset)
    return ProtocolResult(
        summary={label: summarise(rows, metric_columns) for label, rows in subsets.items()},
        per_query=per_query,
        counts={label: count_queries(rows) for label, rows in subsets.items()},
    )
