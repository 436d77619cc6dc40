"""`~` expanded in every option that names a path, so that paths.cache=~/cache never makes a
folder named `~`: which options are paths is the schema's to say."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from retrieval.config.nodes import join, nested, plain
from retrieval.config.rules import Schema
from retrieval.config.schema import config_schema
from retrieval.config.values import names_path


def expand_paths(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A plain copy of the config with `~` expanded in every path option."""
    tree = plain(cfg)
    _expand_node("", tree, config_schema())
    return tree


def _expand_node(key: str, node: dict[str, Any], schema: Schema) -> None:
    for name, option in schema.options.items():
        if name not in node:
            continue
        value = node[name]
        if option.rule.path or names_path(option.hint):
            node[name] = _expanded(value)
        inner = nested(join(key, name), value, option)
        if inner is not None:
            _expand_node(join(key, name), value, inner)


def _expanded(value: Any) -> Any:
    """A path, or each path of a list of them, with `~` expanded; any other value unchanged."""
    if isinstance(value, str):
        return os.path.expanduser(value)
    if isinstance(value, list):
        return [_expanded(entry) for entry in value]
    return value
