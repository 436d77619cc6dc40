"""What an option is: a type hint and a `Rule`; the options of a config node make its `Schema`.

The schema of a group is written as a dataclass whose fields are its options: a field's
annotation is the option's type, `opt(...)` the rest of its rule.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from retrieval.errors import UserError


class ConfigError(UserError, ValueError):
    """A setting that cannot work; the message is one line naming key, value and what would do."""


@dataclass(frozen=True)
class Rule:
    """What an option's value must be beyond its type hint, and what kind of option it is."""

    low: float | None = None
    """Inclusive bounds of a number, or of every number of a list."""
    high: float | None = None
    above: float | None = None
    """Exclusive bounds."""
    below: float | None = None
    choices: Callable[[], Iterable[str]] | None = None
    """The strings allowed, read when checking (registries fill up on first use)."""
    test: Callable[[Any], str | None] | None = None
    """A further test of a well-typed value: what to use instead, or None when it is fine."""
    path: bool = False
    """Names a file or folder: `~` is expanded."""
    exists: str | None = None
    """"file" or "folder": a path that must exist when set."""
    nullable: bool = True
    """False: null is refused even where the type hint allows it."""
    optional: bool = False
    """May be left out: the code's default applies."""
    schema: Callable[[str, Mapping[str, Any]], "Schema"] | None = None
    """(key, node) -> the options of a nested node, which may depend on the node."""


@dataclass(frozen=True)
class Option:
    hint: Any
    rule: Rule


@dataclass(frozen=True)
class Schema:
    """The options a config node may hold, and how messages name the node."""

    label: str
    options: dict[str, Option]


def opt(**rule: Any) -> Any:
    """A schema dataclass field: its annotation is the type, `rule` the rest."""
    return field(metadata={"rule": Rule(**rule)})


def dataclass_schema(cls: type, label: str) -> Schema:
    """The options of a schema dataclass, typed by its annotations."""
    hints = typing.get_type_hints(cls)
    return Schema(label, {f.name: Option(hints[f.name], f.metadata.get("rule", Rule())) for f in dataclasses.fields(cls)})
