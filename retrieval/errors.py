"""The one error type the whole library raises for a user's mistake.

A `UserError` is a wrong setting, a missing folder, an unknown name, inputs that do not go
together: its message says what to do, and the entry scripts print it alone, without a
traceback (`retrieval.cli`). Library code that is not driven from the command line sees an
ordinary exception.

A file that cannot be read as what it should be (truncated, corrupt, another kind of file)
is an `UnreadableFile`, always worded the same way, so that every such line reads alike:

    <path> is not a readable <what>: <short reason>; <what to do>
"""
from __future__ import annotations

import os


class UserError(Exception):
    """A mistake the user can fix (a setting, a path, a name): shown as its message alone."""


class UnreadableFile(UserError, ValueError):
    """A file the run needs that cannot be read as what it should be; made by `unreadable`."""


def unreadable(path: str | os.PathLike, what: str, reason: str, remedy: str) -> UnreadableFile:
    """The error for `path`, which is not a readable `what` because of `reason` (short, one
    line); `remedy` says what to do. Built here, not in `__init__`, so that the exception
    still pickles (a worker process may raise it)."""
    return UnreadableFile(f"{path} is not a readable {what}: {reason}; {remedy}")


def brief(error: BaseException) -> str:
    """An exception as a short reason: its type and the first line of its message, cut after
    the first sentence when that line runs on (torch and numpy explain at length)."""
    lines = str(error).strip().splitlines()
    line = lines[0] if lines else ""
    if len(line) > 120 and ". " in line:
        line = line.split(". ", 1)[0]
    return f"{type(error).__name__}: {line}" if line else type(error).__name__
