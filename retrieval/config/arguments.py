"""Limits stated once, beside the parameter: `typing.Annotated[int, Rule(low=1)]` in a plug-in's
signature is what the config schema checks (`retrieval.config.plugins`) and what every call of
the plug-in checks, so the library refuses what the command line refuses, in the same words:

    rerank.aqe.k=0 is not valid: use an integer >= 1

A registry made with `checked="rerank.{name}"` wraps each entry it registers (a class's
`__init__`, or a function) with `with_checked_arguments`.
"""
from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from retrieval.config.rules import Option, Rule
from retrieval.config.values import check_value


def annotated(hint: Any) -> tuple[Any, Rule | None]:
    """(type, rule) of a parameter's hint: the rule an `Annotated` hint carries, else None."""
    if typing.get_origin(hint) is Annotated:
        rule = next((extra for extra in hint.__metadata__ if isinstance(extra, Rule)), None)
        return typing.get_args(hint)[0], rule
    return hint, None


def _callable(entry: Callable) -> Callable:
    """What is called with the options: a class's `__init__`, or the function itself."""
    return entry.__init__ if isinstance(entry, type) else entry


def parameters(entry: Callable, skip: Iterable[str] = ()) -> dict[str, tuple[Any, Rule | None, bool]]:
    """name -> (type, rule or None, whether it has a default) of the keyword parameters of a
    registered function or class (`self`, `*args`, `**kwargs` and `skip` left out)."""
    hints = typing.get_type_hints(_callable(entry), include_extras=True)
    found = {}
    for name, parameter in inspect.signature(entry).parameters.items():
        if name in skip or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        hint, rule = annotated(hints.get(name, Any))
        found[name] = (hint, rule, parameter.default is not parameter.empty)
    return found


def check_arguments(key: str, function: Callable, arguments: dict[str, Any]) -> None:
    """Raise ConfigError (`<key>.<name>=<value> is not valid: ...`) unless every argument of a
    parameter with an annotated rule fits it."""
    hints = typing.get_type_hints(function, include_extras=True)
    for name, value in arguments.items():
        hint, rule = annotated(hints.get(name, Any))
        if rule is not None:
            check_value(f"{key}.{name}", value, Option(hint, rule))


def with_checked_arguments(entry: Callable, key: str) -> Callable:
    """`entry`, checking the arguments of every call against its annotated rules first (a
    class: its `__init__` is wrapped in place)."""
    function = _callable(entry)
    signature = inspect.signature(function)

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        check_arguments(key, function, bound.arguments)
        return function(*args, **kwargs)

    if isinstance(entry, type):
        entry.__init__ = checked
        return entry
    return checked
