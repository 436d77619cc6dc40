"""A pytest plugin that fails every test which opens or lists a path outside the project, so that
a clone passes its tests with nothing beside it.

A test may touch only the project (pytest's rootdir), pytest's temporary folders, the Python
installation and the system's own folders (/usr, /etc, /proc, ...). Paths beside the project
(under its parent folder) are refused even where a wider rule would allow them, e.g. for a
checkout under /tmp or /usr/src: the most specific matching folder decides. An audit hook
(`sys.addaudithook`, events "open", "os.listdir" and "os.scandir") records such paths while a
test module is imported and while a test's setup, call or teardown runs; that collection or
phase fails naming them when it ends.
"""
from __future__ import annotations

import os
import site
import sys
import sysconfig
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

WATCHED = frozenset({"open", "os.listdir", "os.scandir"})
SYSTEM = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/etc", "/dev", "/proc", "/sys")
"""Folders of the operating system that libraries read (shared libraries, CPU and memory
information, locale and time zone files, /dev/null and /dev/shm)."""
SHOWN = 5
"""Paths listed in a failure; the rest are counted."""


def python_installation() -> set[str]:
    """The interpreter's prefixes, its library folders and every site-packages folder."""
    folders = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix, site.getusersitepackages(),
               *site.getsitepackages(), *sysconfig.get_paths().values()}
    return {os.path.realpath(folder) for folder in folders if folder}


class Guard:
    """Which paths a test may touch, and the ones it touched that it may not."""

    def __init__(self, project: Path) -> None:
        self.project = project.resolve()
        self.rules: list[tuple[str, bool]] = []
        self.outside: dict[str, str] = {}
        self.recording = False
        self.allow(self.project, *python_installation(), *SYSTEM)

    def allow(self, *folders: str | Path) -> None:
        """Let tests touch `folders`; folders beside the project stay refused around them."""
        allowed = {os.path.join(os.path.abspath(folder), "") for folder in folders}
        beside = os.path.join(str(self.project.parent), "")
        rules = {prefix: ok for prefix, ok in self.rules} | dict.fromkeys(allowed, True) | {beside: False}
        # Most specific first: the project beats its parent, and the parent beats /usr or /tmp.
        self.rules = sorted(rules.items(), key=lambda rule: len(rule[0]), reverse=True)

    def allows(self, path: str) -> bool:
        folder = os.path.join(path, "")
        for prefix, ok in self.rules:
            if folder.startswith(prefix):
                return ok
        return False

    def audit(self, event: str, args: tuple) -> None:
        """The audit hook: runs on every audited event of the process, so it returns early."""
        if not self.recording or event not in WATCHED:
            return
        target = args[0] if args else None
        if isinstance(target, int):  # an open file descriptor
            return
        try:
            path = os.path.abspath(os.fsdecode(target if target is not None else "."))
        except (TypeError, ValueError):
            return
        if not self.allows(path) and not self.allows(os.path.realpath(path)):
            self.outside.setdefault(path, event)

    @contextmanager
    def paused(self) -> Iterator[None]:
        recording, self.recording = self.recording, False
        try:
            yield
        finally:
            self.recording = recording

    def report(self) -> str | None:
        """What the phase touched outside, as one message (None: nothing), and forget it."""
        outside, self.outside = self.outside, {}
        if not outside:
            return None
        shown = [f"{path} ({event})" for path, event in list(outside.items())[:SHOWN]]
        more = f" and {len(outside) - SHOWN} more" if len(outside) > SHOWN else ""
        return (f"touched outside {self.project} and its temporary folders: {', '.join(shown)}{more}; "
                "tests may read only what is in the repository or what they build")


GUARD: Guard | None = None


def pytest_configure(config: pytest.Config) -> None:
    global GUARD
    if GUARD is None:  # audit hooks cannot be removed: one per process
        GUARD = Guard(config.rootpath)
        sys.addaudithook(GUARD.audit)


@pytest.fixture(scope="session", autouse=True)
def _temporary_folders_allowed(tmp_path_factory: pytest.TempPathFactory) -> None:
    """pytest's base temporary folder (every tmp_path is under it), known once it exists."""
    assert GUARD is not None
    with GUARD.paused():  # making the folder lists its parent
        GUARD.allow(tmp_path_factory.getbasetemp())


def _guarded() -> Generator[None, object, object]:
    """Record while a test phase runs; fail the phase when it touched a path outside."""
    assert GUARD is not None
    GUARD.recording = True
    try:
        return (yield)
    finally:
        GUARD.recording = False
        message = GUARD.report()
        if message:
            pytest.fail(message, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Collecting imports the test modules: what they read at import counts too."""
    assert GUARD is not None
    GUARD.recording = True
    try:
        report = yield
    finally:
        GUARD.recording = False
    message = GUARD.report()
    if message and report.passed:
        report.outcome, report.longrepr = "failed", message
    return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    return (yield from _guarded())
