"""Name-keyed plug-in registries (datasets, models, protocols, query modes).

Entries register themselves with a decorator where they are defined; the registry imports
its plug-in modules on first use (those it lists, or, made with `modules=None`, every public
module of its package: a new plug-in module is found without being listed anywhere), and
describes each entry by its docstring's first line, so error messages and `list` commands
always show what really exists.
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from retrieval.errors import UserError

T = TypeVar("T", bound=Callable)


class UnknownName(UserError, ValueError):
    """A name no entry of a registry is registered under."""


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str, modules: Iterable[str] | None = (), checked: str | None = None):
        """`modules`: the package's modules that hold entries (None: every module of the package
        whose name does not start with "_"). `checked`: the config key of an entry's options, `{name}` standing for the entry's
        name ("rerank.{name}"); then every call of an entry first checks its arguments against
        the rules its parameters are annotated with (`retrieval.config.arguments`)."""
        self.kind = kind
        self._package = package
        self._modules = None if modules is None else tuple(modules)
        self._checked = checked
        self._entries: dict[str, T] = {}
        self._imported = False

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if self._checked is not None:
                from retrieval.config.arguments import with_checked_arguments

                entry = with_checked_arguments(entry, self._checked.format(name=name))
            self._entries[name] = entry
            return entry

        return decorate

    def _import_plugins(self) -> None:
        if not self._imported:
            self._imported = True
            for module in self._modules if self._modules is not None else self._public_modules():
                importlib.import_module(f"{self._package}.{module}")

    def _public_modules(self) -> list[str]:
        package = importlib.import_module(self._package)
        return sorted(info.name for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_"))

    def get(self, name: str) -> T:
        """The entry registered as `name`; an unknown name gets an error listing valid ones."""
        self._import_plugins()
        if name not in self._entries:
            raise UnknownName(f"Unknown {self.kind} {name!r}. Valid: {', '.join(sorted(self._entries))}.")
        return self._entries[name]

    def available(self) -> dict[str, str]:
        """Name -> one-line description."""
        self._import_plugins()
        return {name: describe(entry) for name, entry in sorted(self._entries.items())}


def describe(entry: Callable) -> str:
    return (entry.__doc__ or "").strip().split("\n")[0]
