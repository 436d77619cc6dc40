"""The schema of the configuration, checked before any work starts.

Every option of every group has a type, and where it matters bounds and choices; a value
that cannot work stops the run with one line naming the key, the value and what would do,
before a dataset, a model or an index is touched (so no leaderboard row either):

    extract.dtype=float61 is not valid: choose float32 or float16
    extract.bach_size is not an option of extract: did you mean batch_size?

Choices come from the registries (dataset formats, model families, query modes, proposers,
representations, re-rank steps, protocols), and the options a format, family, mode,
proposer, representation, step or protocol takes are its entry's keyword parameters, typed by
their hints and limited by the rule annotated beside each (`Annotated[int, Rule(low=1)]`):
adding a plug-in extends the schema without touching this package. The few fixed choices are
imported from the modules that act on them (precisions, storage dtypes, mask fills, VPR
ground-truth kinds).

Defaults are stated once, in the YAML under conf/. A key the YAML may leave out (`optional`)
takes the code's default (the entry's signature, or the stage that reads it); the schema
never restates one, and filling them in here would change the settings that cached
artifacts are keyed by.

Why not dataclasses in Hydra's ConfigStore: Hydra validates those while composing, before
the task function runs, so its multi-line OmegaConf errors end the run with status 1 and
no `cli.user_errors` in between; and the options of `dataset`, `model`, `query` and the
proposers depend on the chosen format, family, mode or proposer (a union OmegaConf cannot
type), as do cross-key checks such as the FAISS factory.

    check(cfg)                  raise ConfigError unless the composed config is valid
    check_groups(cfg)           what needs several groups together (query=text and the model)
    resolve(cfg) -> dict        both checks, then a plain dict (earlier spellings moved, `~` expanded in every path option)
    expand_paths(cfg) -> dict   only the expansion
    check_dataset(cfg, dataset) what needs the loaded dataset (query=mask, protocol options)
    check_index(factory, ...)   the FAISS factory and search parameters, at any dimension

The modules, each building on the ones above it:

    rules.py     what an option is (type hint and Rule) and a node's Schema; ConfigError
    values.py    one value against its option, and the words for what would do
    nodes.py     a config tree walked against its schemas: unknown, missing and invalid keys
    choices.py   the values registries and this machine allow, read when checking
    arguments.py limits annotated beside a plug-in's parameters, read by the schema, checked on each call
    plugins.py   the options of plug-in nodes, read from their entries' signatures
    shorthands.py  earlier spellings of the representation's keys in `regions`, moved into it
    schema.py    one dataclass per group, and Config, the root
    factory.py   the FAISS factory and search parameters, checked by faiss itself
    paths.py     `~` expanded in every path option
    checks.py    check, check_groups, check_dataset and resolve
"""
from __future__ import annotations

import importlib
from typing import Any

from retrieval.config.rules import ConfigError

_LAZY = {"check": "checks", "check_dataset": "checks", "check_groups": "checks", "resolve": "checks",
         "check_index": "factory", "expand_paths": "paths"}
"""Imported on first use: plug-ins import `retrieval.config.rules` to annotate their parameters,
and the checks import the plug-in registries."""

__all__ = ["ConfigError", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
