"""Earlier spellings of the representation's keys, kept working: `regions.pooling=roi` is
`representation=roi`, and `regions.crop_size`, `regions.input_sizes`, `regions.roi_size` are
the representation's options of those names (`representation.crop_size=160`). The region
presets leave them null; a value given replaces the representation's (`pooling`: the
representation, its options then the named one's defaults).

    shorthand_options(key)      their options in the `regions` node, ruled as the representation rules them
    with_shorthands(tree)       the config with them moved into `representation`
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from retrieval.config.rules import ConfigError, Option, Rule
from retrieval.config.values import either, show

POOLING = "pooling"
OPTIONS = ("crop_size", "input_sizes", "roi_size")
WHOLE_IMAGE = {"name": "global"}
"""The representation of a config that names none."""


def region_representations() -> Iterable[str]:
    """The representations that describe an image by its regions (they take the proposals)."""
    from retrieval.representations import REPRESENTATIONS, takes

    return [name for name in REPRESENTATIONS.available() if takes(name, "proposals")]


def _takers(option: str) -> list[str]:
    from retrieval.representations import REPRESENTATIONS, options_of

    return [name for name in REPRESENTATIONS.available() if option in options_of(name)]


def shorthand_options() -> dict[str, Option]:
    """The shorthands' options: `pooling` names a region representation; each other one is typed
    and ruled as the representation that takes it (its annotated parameter), null allowed."""
    from retrieval.config.arguments import parameters
    from retrieval.representations import REPRESENTATIONS

    options = {POOLING: Option(str | None, Rule(choices=region_representations, optional=True))}
    for name in OPTIONS:
        hint, rule, _ = parameters(REPRESENTATIONS.get(_takers(name)[0]))[name]
        options[name] = Option(hint | None, dataclasses.replace(rule or Rule(), optional=True, nullable=True))
    return options


def with_shorthands(tree: Mapping[str, Any]) -> dict[str, Any]:
    """The config with the shorthands given in `regions` set in `representation` instead (and
    left out of `regions`); ConfigError for an option the representation does not take."""
    from retrieval.representations import options_of

    regions = dict(tree.get("regions") or {})
    given = {name: regions.pop(name) for name in (POOLING, *OPTIONS) if name in regions}
    representation = dict(tree.get("representation") or WHOLE_IMAGE)
    pooling = given.pop(POOLING, None)
    if pooling is not None and pooling != representation["name"]:
        representation = {"name": pooling}
    for name, value in given.items():
        if value is None:
            continue
        if name not in options_of(representation["name"]):
            raise ConfigError(
                f"regions.{name}={show(value)} sets representation.{name}, which representation={representation['name']} "
                f"does not take: drop it, or choose representation={either(_takers(name))}"
            )
        representation[name] = value
    out = {**tree, "representation": representation}
    if "regions" in tree:
        out["regions"] = regions
    return out
