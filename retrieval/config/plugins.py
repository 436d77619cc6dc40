"""The options of the nodes whose entries are plug-ins: a dataset's format, a model's family, a
query's mode, the representation, the region proposers, the re-rank steps and the protocol.
Each takes its entry's keyword parameters, typed by their hints, with the limits (bounds,
choices, paths) stated beside each, `Annotated[int, Rule(low=1)]` (`retrieval.config.arguments`;
the registries of representations, proposers, steps and protocols check every call too), so
that adding a plug-in extends the schema without touching it.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.config.arguments import parameters
from retrieval.config.choices import combinations, families, formats, image_modes, modes, representations
from retrieval.config.nodes import check_present
from retrieval.config.rules import Option, Rule, Schema, dataclass_schema, opt
from retrieval.config.values import check_value
from retrieval.registry import Registry

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
    return Schema(f"dataset format {name}", {**_signature_options(LOADERS.get(name)), **common.options})


def model_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.models import FAMILIES

    common = dataclass_schema(ModelCommon, key)
    name = _selector(key, node, "family", common)
    return Schema(f"model family {name}", {**_signature_options(FAMILIES.get(name)), **common.options})


def query_schema(key: str, node: Mapping[str, Any]) -> Schema:
    """An image mode's options; query=text: the query file; query=composed: the query file,
    the image mode that cuts out the image part (`cut`) with its options, and the combination."""
    from retrieval.queries import MODES
    from retrieval.queries.spec import TEXT_KINDS

    common = dataclass_schema(QueryCommon, key)
    name = _selector(key, node, "name", common)
    if name not in TEXT_KINDS:
        options = _signature_options(MODES.get(name), skip=("image", "instance"))
        return Schema(f"query={name}", {**options, **common.options})
    words = {**common.options, "file": Option(Path | None, Rule(path=True, exists="file", optional=True))}
    if name == "text":
        return Schema(f"query={name}", words)
    composed = dataclass_schema(ComposedQuery, key).options
    cut = _selector(key, node, "cut", Schema(f"query={name}", composed))
    options = _signature_options(MODES.get(cut), skip=("image", "instance"))
    weight = Option(float, Rule(low=0, high=1))  # `lambda` cannot name a dataclass field
    return Schema(f"query={name} with cut={cut}", {**options, **words, **composed, "lambda": weight})


def representation_schema(key: str, node: Mapping[str, Any]) -> Schema:
    """A representation's options: its constructor's parameters besides what the run supplies."""
    from retrieval.representations import CONTEXT, REPRESENTATIONS

    common = dataclass_schema(RepresentationCommon, key)
    name = _selector(key, node, "name", common)
    return Schema(f"representation {name}", {**_signature_options(REPRESENTATIONS.get(name), skip=CONTEXT), **common.options})


def proposals_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.regions.proposals import PROPOSERS

    return _entries_schema(key, PROPOSERS, skip=("image",))


def rerank_schema(key: str, node: Mapping[str, Any]) -> Schema:
    from retrieval.rerank import STEPS

    return _entries_schema(key, STEPS)


def _entries_schema(key: str, registry: Registry, skip: tuple[str, ...] = ()) -> Schema:
    """A node of registered entries by name (proposers, re-rank steps), each with its options."""

    def entry(name: str, key: str, node: Mapping[str, Any]) -> Schema:
        return Schema(f"{registry.kind} {name}", _signature_options(registry.get(name), skip))

    return Schema(key, {
        name: Option(dict | None, Rule(optional=True, schema=functools.partial(entry, name))) for name in registry.available()
    })


def protocol_schema(protocol: str) -> Schema:
    """A protocol's options: its keyword parameters, and the localisation flags it declares."""
    from retrieval.protocols import PROTOCOLS, localisation_spec

    options = _signature_options(PROTOCOLS.get(protocol), skip=("ranking", "dataset"))
    flags = {name: Option(bool, Rule(optional=True)) for name in localisation_spec(protocol).options}
    return Schema(f"protocol {protocol}", {**options, **flags})


def _signature_options(entry: Callable, skip: Iterable[str] = ()) -> dict[str, Option]:
    """The keyword options of a registered function or class: its parameters, typed by their
    hints, with the rule each is annotated with (`Annotated[int, Rule(low=1)]`); one with a
    default may be left out."""
    return {name: Option(hint, dataclasses.replace(rule or Rule(), optional=has_default))
            for name, (hint, rule, has_default) in parameters(entry, skip).items()}


def _selector(key: str, node: Mapping[str, Any], name: str, common: Schema) -> str:
    """The value of the key that picks a node's other options (format, family, mode), checked."""
    check_present(f"{key}.{name}", node, name, common)
    check_value(f"{key}.{name}", node[name], common.options[name])
    return node[name]
