"""One option's value against its type hint and rule, and the words for what would do:

    extract.dtype=float61 is not valid: choose float32 or float16
"""
from __future__ import annotations

import collections.abc
import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

from retrieval.config.rules import ConfigError, Option, Rule

_SEQUENCES = {list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection}
_MAPPINGS = {dict, collections.abc.Mapping}
_PLURALS = {int: "integers", float: "numbers", str: "strings", bool: "booleans", Path: "paths"}


def check_value(key: str, value: Any, option: Option) -> None:
    """Raise ConfigError naming `key`, `value` and what would do, unless the value fits."""
    rule = option.rule
    entries = _entry_hint(option.hint)
    if isinstance(value, Mapping) and entries is not None:  # e.g. index.search_params: name -> number
        for name, entry in value.items():
            check_value(f"{key}.{name}", entry, Option(entries, Rule()))
        return
    if not _fits(value, option.hint, rule):
        problem = _expected(option.hint, rule)
    elif value is None:
        return
    else:
        problem = (rule.test(value) if rule.test else None) or _existence_problem(value, rule.exists)
        if problem is None:
            return
    raise ConfigError(f"{key}={show(value)} is not valid: {problem}")


def _existence_problem(value: Any, kind: str | None) -> str | None:
    if kind is None:
        return None
    path = Path(os.path.expanduser(str(value))).absolute()
    found = path.is_file() if kind == "file" else path.is_dir()
    return None if found else f"no {kind} at {path}"


# ---------------------------------------------------------------- types, in code and in words


def _members(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)


def _entry_hint(hint: Any) -> Any:
    """V of a dict[str, V] hint (or of one in a union); None for any other hint."""
    for member in _members(hint):
        if typing.get_origin(member) in _MAPPINGS and len(typing.get_args(member)) == 2:
            return typing.get_args(member)[1]
    return None


def _is_path_type(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, os.PathLike)


def names_path(hint: Any) -> bool:
    """Whether the type hint allows a path (an os.PathLike type, alone or in a union)."""
    return any(_is_path_type(member) for member in _members(hint))


def _fits(value: Any, hint: Any, rule: Rule) -> bool:
    if value is None:
        return rule.nullable and type(None) in _members(hint)
    if isinstance(value, str) and rule.choices is not None:
        return value in tuple(rule.choices())
    return any(_fits_type(value, member, rule) for member in _members(hint))


def _fits_type(value: Any, hint: Any, rule: Rule) -> bool:
    """Whether a value other than None is of type `hint`, numbers within the rule's bounds."""
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if hint is Any:
        return True
    if dataclasses.is_dataclass(hint) or origin in _MAPPINGS:
        if not isinstance(value, Mapping):
            return False
        return len(args) != 2 or all(
            _fits_type(k, args[0], Rule()) and any(_fits_type(v, m, rule) for m in _members(args[1]))
            for k, v in value.items()
        )
    if origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        return not args or all(any(_fits_type(item, m, rule) for m in _members(args[0])) for item in value)
    if origin is bool:
        return isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool) and _within(value, rule)
    if origin is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and _within(value, rule)
    if origin is str:
        return isinstance(value, str)
    if _is_path_type(origin):
        return isinstance(value, (str, os.PathLike)) and str(value) != ""
    if origin is type(None):
        return False
    return True  # a type the schema does not describe: the code that takes it checks it


def _within(number: float, rule: Rule) -> bool:
    return not math.isnan(number) and all((
        rule.low is None or number >= rule.low,
        rule.high is None or number <= rule.high,
        rule.above is None or number > rule.above,
        rule.below is None or number < rule.below,
    ))


def _expected(hint: Any, rule: Rule) -> str:
    """What a value of this option may be, in words: 'choose float32 or float16'."""
    words = [str(choice) for choice in rule.choices()] if rule.choices else []
    members = _members(hint)
    for member in members:
        if member is type(None) or (member is str and (rule.choices or any(map(_is_path_type, members)))):
            continue
        words.extend(_nouns(member, rule))
    if rule.nullable and type(None) in members:
        words.append("null")
    return ("choose " if rule.choices else "use ") + either(words)


def _nouns(hint: Any, rule: Rule) -> list[str]:
    origin = typing.get_origin(hint) or hint
    args = typing.get_args(hint)
    if origin is bool:
        return ["true", "false"]
    if origin is int:
        return [f"an integer{_bounds(rule)}"]
    if origin is float:
        return [f"a number{_bounds(rule)}"]
    if _is_path_type(origin) or (origin is str and rule.path):
        return [f"the path of an existing {rule.exists}" if rule.exists else "a path"]
    if origin is str:
        return ["a string"]
    if dataclasses.is_dataclass(hint) or origin in _MAPPINGS:
        return ["a mapping"]
    if origin in _SEQUENCES:
        element = _members(args[0])[0] if args else None
        return [f"a list of {_PLURALS.get(element, 'values')}{_bounds(rule)}"]
    return []


def _bounds(rule: Rule) -> str:
    if rule.low is not None and rule.high is not None:
        return f" from {_number(rule.low)} to {_number(rule.high)}"
    parts = [
        f"{sign} {_number(bound)}"
        for sign, bound in ((">=", rule.low), (">", rule.above), ("<=", rule.high), ("<", rule.below))
        if bound is not None
    ]
    return " " + " and ".join(parts) if parts else ""


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def either(words: list[str]) -> str:
    """Alternatives in words: 'a, b or c'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def show(value: Any) -> str:
    """A value as it would be written on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return f"[{', '.join(map(show, value))}]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)
