"""A config as a tree of nodes, walked against their schemas: every key known, every required
key present, every value valid, nested nodes checked by their own schemas.

    extract.bach_size is not an option of extract: did you mean batch_size?
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from retrieval.config.rules import ConfigError, Option, Schema, dataclass_schema
from retrieval.config.values import check_value, names_path

MISSING = "???"
"""OmegaConf's mark of a mandatory value nobody set (e.g. dataset.root of dataset=folder)."""


def plain(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain, private copy: OmegaConf nodes resolved, unset mandatory values left as "???"."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not OmegaConf.is_config(cfg):
        return copy.deepcopy(dict(cfg))
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as error:
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(f"{getattr(error, 'full_key', None) or 'the config'} is not valid: {reason}") from None


def check_node(key: str, node: Mapping[str, Any], schema: Schema) -> None:
    """Raise ConfigError unless the node at `key` holds only its schema's options, valid."""
    for name in node:
        if name not in schema.options:
            raise ConfigError(unknown(join(key, name), schema.label, schema.options))
    for name, option in schema.options.items():
        if name not in node and option.rule.optional:
            continue
        check_present(join(key, name), node, name, schema)
        check_value(join(key, name), node[name], option)
        inner = nested(join(key, name), node[name], option)
        if inner is not None:
            check_node(join(key, name), node[name], inner)


def nested(key: str, value: Any, option: Option) -> Schema | None:
    """The schema of the node an option holds; None when its value is not a node."""
    if not isinstance(value, Mapping):
        return None
    if option.rule.schema is not None:
        return option.rule.schema(key, value)
    if dataclasses.is_dataclass(option.hint):
        return dataclass_schema(option.hint, key)
    return None


def check_present(key: str, node: Mapping[str, Any], name: str, schema: Schema) -> None:
    """Raise ConfigError if the node leaves option `name` out or unset."""
    if name not in node or (isinstance(node[name], str) and node[name] == MISSING):
        placeholder = "path" if names_path(schema.options[name].hint) or schema.options[name].rule.path else "value"
        raise ConfigError(f"{key} is required by {schema.label or 'the config'}: add {key}=<{placeholder}>")


def unknown(key: str, label: str, options: Iterable[str]) -> str:
    """The message for a key that is not an option: the closest option, or all of them."""
    name = key.rsplit(".", 1)[-1]
    names = sorted(options)
    close = difflib.get_close_matches(name, names, n=1)
    if close:
        return f"{key} is not an option of {label}: did you mean {close[0]}?"
    if not names:
        return f"{key} is not an option of {label}: it takes none"
    return f"{key} is not an option of {label}: its options are {', '.join(names)}"


def join(key: str, name: str) -> str:
    """The dotted key of option `name` of the node at `key` ("" for the root)."""
    return f"{key}.{name}" if key else name
