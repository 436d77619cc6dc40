"""The options of the nodes whose entries are plug-ins: a dataset's format, a model's family, a
query's mode, the region proposers, the re-rank steps and the protocol. Each takes its
entry's keyword parameters, typed by their hints, so that adding a plug-in extends the
schema without touching it. A parameter's limits (bounds, choices, paths) are stated beside it,
`Annotated[int, Rule(low=1)]` (`retrieval.config.arguments`, which the entry's calls check too);
REFINEMENTS holds those of the entries that do not state them yet.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import functools
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.config.arguments import parameters
from retrieval.config.choices import (
    combinations, device_problem, families, formats, image_modes, modes, representations, resize_modes, sam_model_types,
)
from retrieval.config.nodes import check_present
from retrieval.config.rules import Option, Rule, Schema, dataclass_schema, opt
from retrieval.config.values import check_value
from retrieval.datasets.vpr import POSITIVES as VPR_POSITIVES
from retrieval.queries import FILLS
from retrieval.registry import Registry

REFINEMENTS: dict[str, Rule] = {
    "dataset.seed": Rule(low=0),
    "dataset.radius_m": Rule(above=0),
    "dataset.positives": Rule(choices=lambda: VPR_POSITIVES),
    # files and folders relative to dataset.root (an absolute path is used as it is)
    **{f"dataset.{name}": Rule(path=True) for name in (
        "queries", "database", "ground_truth", "query_cameras", "database_cameras", "image_list", "pairs"
    )},
    "model.checkpoint": Rule(path=True, exists="file"),
    "model.input_size": Rule(low=1),
    "model.gem_p": Rule(above=0),
    "model.resize": Rule(choices=resize_modes),
    "query.margin": Rule(above=-0.5),
    "query.fill": Rule(choices=lambda: FILLS, low=0, high=255),
    "query.blur_sigma": Rule(above=0),
    "regions.proposals.grid.scales": Rule(above=0, high=1),
    "regions.proposals.grid.overlap": Rule(low=0, below=1),
    "regions.proposals.segments.scales": Rule(above=0),
    "regions.proposals.segments.sigma": Rule(low=0),
    "regions.proposals.segments.min_area": Rule(low=0, high=1),
    "regions.proposals.segments.max_area": Rule(above=0, high=1),
    "regions.proposals.segments.dedupe_iou": Rule(above=0, high=1),
    "regions.proposals.sam.checkpoint": Rule(path=True, exists="file", nullable=False),
    "regions.proposals.sam.model_type": Rule(choices=sam_model_types),
    "regions.proposals.sam.device": Rule(test=device_problem),
    "regions.proposals.*.min_side": Rule(low=1),
    "regions.proposals.*.max_side": Rule(low=1),
    "regions.proposals.*.points_per_side": Rule(low=1),
    "regions.proposals.*.max_regions": Rule(low=1),
    "dataset.protocol_options.*": Rule(low=1),
}
"""Rules of the options read from registered entries' signatures, by dotted key (`*` = any
name). `dataset.protocol_options.*`: every numeric protocol option is a depth or cut-off."""

PROTOCOL_CHOICES = {"ap": "AP_MODES", "denominator": "DENOMINATORS"}
"""Protocol option -> the constant of the protocol's own module that lists its values."""


# The keys of a node besides its entry's options, one of which picks the entry.


@dataclass
class DatasetCommon:
    """The keys of every dataset besides its format's loader options."""

    format: str = opt(choices=formats)
    k: int | None = opt(low=1, optional=True)
    distractors: Path | list[Path] | None = opt(path=True, optional=True)
    """Images appended to the gallery (`retrieval.datasets.distractors`), any format alike."""
    protocol_options: dict[str, Any] | None = opt(optional=True)
    """Checked by `check_dataset`: which protocol scores a dataset is known once it is loaded."""


@dataclass
class ModelCommon:
    name: str = opt()
    family: str = opt(choices=families)


@dataclass
class RepresentationCommon:
    name: str = opt(choices=representations)


@dataclass
class QueryCommon:
    name: str = opt(choices=modes)


@dataclass
class ComposedQuery:
    """query=composed's own keys besides name, file and lambda."""

    cut: str = opt(choices=image_modes)
    combine: str = opt(choices=combinations)


def dataset_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.datasets import LOADERS

    common = dataclass_schema(DatasetCommon, key)
    name = _selector(key, node, "format", common)
    return Schema(f"dataset format {name}", {**_signature_options(LOADERS.get(name), key), **common.options})


def model_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.models import FAMILIES

    common = dataclass_schema(ModelCommon, key)
    name = _selector(key, node, "family", common)
    return Schema(f"model family {name}", {**_signature_options(FAMILIES.get(name), key), **common.options})


def query_schema(key: str, node: Mapping[str, Any]) -> Schema:
    """An image mode's options; query=text: the query file; query=composed: the query file,
    the image mode that cuts out the image part (`cut`) with its options, and the combination."""
    from retrieval.queries import MODES
    from retrieval.queries.spec import TEXT_KINDS

    common = dataclass_schema(QueryCommon, key)
    name = _selector(key, node, "name", common)
    if name not in TEXT_KINDS:
        options = _signature_options(MODES.get(name), key, skip=("image", "instance"))
        return Schema(f"query={name}", {**options, **common.options})
    words = {**common.options, "file": Option(Path | None, Rule(path=True, exists="file", optional=True))}
    if name == "text":
        return Schema(f"query={name}", words)
    composed = dataclass_schema(ComposedQuery, key).options
    cut = _selector(key, node, "cut", Schema(f"query={name}", composed))
    options = _signature_options(MODES.get(cut), key, skip=("image", "instance"))
    weight = Option(float, Rule(low=0, high=1))  # `lambda` cannot name a dataclass field
    return Schema(f"query={name} with cut={cut}", {**options, **words, **composed, "lambda": weight})


def representation_schema(key: str, node: Mapping[str, Any]) -> Schema:
    """A representation's options: its constructor's parameters besides what the run supplies."""
    from retrieval.representations import CONTEXT, REPRESENTATIONS

    common = dataclass_schema(RepresentationCommon, key)
    name = _selector(key, node, "name", common)
    return Schema(f"representation {name}", {**_signature_options(REPRESENTATIONS.get(name), key, skip=CONTEXT), **common.options})


def proposals_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.regions.proposals import PROPOSERS

    return _entries_schema(key, PROPOSERS, skip=("image",))


def rerank_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.rerank import STEPS

    return _entries_schema(key, STEPS)


def _entries_schema(key: str, registry: Registry, skip: tuple[str, ...] = ()) -> Schema:
    """A node of registered entries by name (proposers, re-rank steps), each with its options."""

    def entry(name: str, key: str, node: Mapping[str, Any]) -> Schema:
        return Schema(f"{registry.kind} {name}", _signature_options(registry.get(name), key, skip))

    return Schema(key, {
        name: Option(dict | None, Rule(optional=True, schema=functools.partial(entry, name))) for name in registry.available()
    })


def protocol_schema(protocol: str) -> Schema:
    """A protocol's options: its keyword parameters, and the localisation flags it declares."""
    from retrieval.protocols import PROTOCOLS, localisation_spec

    entry = PROTOCOLS.get(protocol)
    options = _signature_options(entry, "dataset.protocol_options", skip=("ranking", "dataset"))
    module = sys.modules[entry.__module__]
    for name, constant in PROTOCOL_CHOICES.items():
        if name in options and hasattr(module, constant):
            values = tuple(getattr(module, constant))
            options[name] = Option(options[name].hint, dataclasses.replace(options[name].rule, choices=lambda v=values: v))
    flags = {name: Option(bool, Rule(optional=True)) for name in localisation_spec(protocol).options}
    return Schema(f"protocol {protocol}", {**options, **flags})


def _signature_options(entry: Callable, prefix: str, skip: Iterable[str] = ()) -> dict[str, Option]:
    """The keyword options of a registered function or class: its parameters, typed by their
    hints, with the rule each is annotated with (`Annotated[int, Rule(low=1)]`), else the one
    REFINEMENTS gives it; one with a default may be left out."""
    options = {}
    for name, (hint, rule, has_default) in parameters(entry, skip).items():
        rule = rule if rule is not None else _refinement(f"{prefix}.{name}")
        options[name] = Option(hint, dataclasses.replace(rule, optional=has_default))
    return options


def _refinement(key: str) -> Rule:
    return next((rule for pattern, rule in REFINEMENTS.items() if fnmatch.fnmatchcase(key, pattern)), Rule())


def _selector(key: str, node: Mapping[str, Any], name: str, common: Schema) -> str:
    """The value of the key that picks a node's other options (format, family, mode), checked."""
    check_present(f"{key}.{name}", node, name, common)
    check_value(f"{key}.{name}", node[name], common.options[name])
    return node[name]
