"""The schema of the whole config: one dataclass per group, `Config` the root naming them all.

A field's annotation is the key's type, `opt` the rest of its rule. No defaults here: conf/
states them, and an `optional` key left out takes the code's. The groups whose options are
a plug-in's parameters (dataset, model, query, representation, regions.proposals, rerank) are
described by `retrieval.config.plugins`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.config.choices import aggregations, device_problem, engine_problem, engines, gpu_problem
from retrieval.config.plugins import (
    dataset_schema, model_schema, proposals_schema, query_schema, representation_schema, rerank_schema,
)
from retrieval.config.rules import Schema, dataclass_schema, opt
from retrieval.config.shorthands import shorthand_options
from retrieval.device import PRECISIONS
from retrieval.features.extract import STORAGE
from retrieval.search.exact import budget_problem
from retrieval.sizes import Size

DTYPES = tuple(STORAGE)


@dataclass
class Paths:
    cache: Path = opt(path=True)
    data: Path = opt(path=True, optional=True)
    leaderboard: Path = opt(path=True)


@dataclass
class RayEngine:
    address: str | None = opt()
    num_cpus: int | None = opt(low=1)
    cpus_per_task: float = opt(above=0)
    gpus_per_task: float | None = opt(low=0)
    max_retries: int = opt(low=0)
    connect_timeout: float = opt(above=0)


@dataclass
class Extract:
    device: str = opt(test=device_problem)
    precision: str = opt(choices=lambda: PRECISIONS)
    batch_size: int = opt(low=1)
    workers: int = opt(low=0)
    shard_size: int = opt(low=1)
    dtype: str = opt(choices=lambda: DTYPES)
    max_pixels: int = opt(low=1)
    engine: str = opt(choices=engines, test=engine_problem)
    ray: RayEngine = opt(optional=True)


@dataclass
class Search:
    block_size: int = opt(low=1)
    memory_budget: Size | None = opt(test=budget_problem, optional=True)
    queries: Path | None = opt(path=True, exists="folder", optional=True)
    gallery: Path | None = opt(path=True, exists="folder", optional=True)


@dataclass
class Eval:
    ranking: Path | None = opt(path=True, exists="file", optional=True)
    report: bool = opt(optional=True)
    report_top_k: int = opt(low=1, optional=True)


@dataclass
class Index:
    name: str = opt()
    factory: str = opt()
    gpu: bool | None = opt(test=gpu_problem, optional=True)
    search_params: dict[str, float] | None = opt(optional=True)
    train_size: int = opt(low=1, optional=True)
    seed: int = opt(optional=True)
    target_recall: float | None = opt(above=0, high=1, optional=True)
    tune_queries: int = opt(low=1, optional=True)
    rescore: int | None = opt(low=1, optional=True)


@dataclass
class Regions:
    """Which regions describe a gallery image, and how they score and are stored; what embeds
    them is the `representation` group's (the region presets choose `crop`)."""

    name: str = opt()
    shard_images: int = opt(low=1, optional=True)
    aggregate: str = opt(choices=aggregations, optional=True)
    k_regions: int | None = opt(low=1, optional=True)
    proposals: dict[str, Any] | None = opt(schema=proposals_schema, optional=True)


def regions_schema(key: str, node: Mapping[str, Any]) -> Schema:
    """The `regions` options, and the earlier spellings of the representation's keys
    (`retrieval.config.shorthands`)."""
    regions = dataclass_schema(Regions, key)
    return Schema(regions.label, {**regions.options, **shorthand_options()})


@dataclass
class Config:
    paths: Paths = opt()
    extract: Extract = opt()
    search: Search = opt()
    eval: Eval = opt()
    dataset: dict = opt(schema=dataset_schema)
    model: dict = opt(schema=model_schema)
    query: dict = opt(schema=query_schema)
    index: Index = opt()
    representation: dict | None = opt(schema=representation_schema, optional=True)
    """What describes a gallery image (left out: `global`)."""
    regions: dict | None = opt(schema=regions_schema, optional=True)
    rerank: dict | None = opt(schema=rerank_schema, optional=True)
    hydra: Any = opt(optional=True)
    """Hydra's own node, in a config composed with it; Hydra checks it."""


def config_schema() -> Schema:
    """The options of the root node: the groups."""
    return dataclass_schema(Config, "the config")
