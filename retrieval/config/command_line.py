"""What the command line asks that Hydra's composition would lose or misreport, checked before
Hydra starts (`retrieval.cli.command_line_checked`).

Re-rank steps are a config group whose options each live in one node, `rerank.<step>`: so
`rerank=[aqe,aqe]` composes to a single `rerank.aqe` and would silently run aqe once, and
`rerank=[bogus]` stops in Hydra's "Could not load 'rerank/bogus'", which names no step. A step
listed twice is refused rather than run twice, since the config cannot give the second run
options of its own; an unknown one is refused with the steps there are.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retrieval.config.rules import ConfigError
from retrieval.config.values import either

RERANK_PRESETS = Path(__file__).resolve().parents[2] / "conf" / "rerank"


def check_command_line(arguments: Sequence[str]) -> None:
    """Raise ConfigError for a `rerank=` override (each value of a sweep) that lists a step that
    does not exist, or one step twice. Arguments that are not overrides, or that Hydra's grammar
    refuses, are left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for argument in arguments:
        if argument.startswith("-") or "=" not in argument:
            continue
        try:
            (override,) = parser.parse_overrides([argument])
        except OverrideParseException:
            continue
        if override.key_or_group != "rerank" or override.is_delete():
            continue
        for value in (override.sweep_iterator() if override.is_sweep_override() else [override.value()]):
            if value is not None:  # rerank=null: no steps
                _check_steps(value if isinstance(value, list) else [value])


def _check_steps(names: list[Any]) -> None:
    listed = f"rerank=[{','.join(map(str, names))}]"
    steps = sorted(path.stem for path in RERANK_PRESETS.glob("*.yaml"))
    unknown = next((name for name in names if name not in steps), None)
    if unknown is not None:
        raise ConfigError(f"{listed} is not valid: {unknown} is not a re-rank step; choose {either(steps)}")
    twice = next((name for name in names if names.count(name) > 1), None)
    if twice is not None:
        raise ConfigError(f"{listed} lists {twice} twice, but a step's options are one node (rerank.{twice}), "
                          "so it can run only once: list each step once")
