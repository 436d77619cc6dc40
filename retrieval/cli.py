"""How the entry scripts end on a user's mistake: one `error: <message>` line, status 2.

A wrong setting, a missing folder or an unknown name is the user's to fix, and a traceback
only hides the sentence that says how. `user_errors` goes between `@hydra.main` and the task
function, because Hydra catches whatever the task raises and prints it with a traceback:

    @hydra.main(version_base=None, config_path="conf", config_name="config")
    @cli.user_errors
    def main(cfg: DictConfig) -> None:
        ...

A user error is a `UserError` (`retrieval.config.ConfigError` is one) or a FileNotFoundError
the library raised with its own message (no errno: `open()` of a missing file is a bug or a
race, and keeps its traceback). Any other exception propagates unchanged, and with
HYDRA_FULL_ERROR=1 user errors do too, so Hydra shows the whole traceback.

In a sweep (`-m`) the task runs once per job in this process, and a job that exits would
end the sweep; so there the job fails instead (Hydra runs the remaining jobs, then repeats
the first failure's message and exits with status 1).

What Hydra's composition would lose or misreport (a re-rank step listed twice or unknown:
`retrieval.config.command_line`) is read from the command line itself, before Hydra starts,
by `command_line_checked` above `@hydra.main`:

    @cli.command_line_checked
    @hydra.main(version_base=None, config_path="conf", config_name="config")
    @cli.user_errors
    def main(cfg: DictConfig) -> None:
        ...
"""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from hydra.errors import CompactHydraException

from retrieval.errors import UserError

EXIT_USER_ERROR = 2
"""Exit status of a run stopped by a user error (argparse's convention for bad usage)."""

T = TypeVar("T")
C = TypeVar("C")


class JobFailed(CompactHydraException):
    """A sweep job's user error; Hydra prints a compact exception's message without a traceback."""


def is_user_error(error: BaseException) -> bool:
    """Whether `error` is the user's to fix and its message says how."""
    if isinstance(error, UserError):
        return True
    return isinstance(error, FileNotFoundError) and error.errno is None


def _full_error() -> bool:
    """Hydra's own switch for full tracebacks (it tests for exactly "1")."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def command_line_checked(main: Callable[[], T]) -> Callable[[], T]:
    """Wrap an entry script's `@hydra.main` function: a user error in its command line
    (`retrieval.config.command_line`) prints `error: <message>` and exits with status 2 before
    Hydra composes anything."""

    @functools.wraps(main)
    def run() -> T:
        from retrieval.config.command_line import check_command_line

        try:
            check_command_line(sys.argv[1:])
        except UserError as error:
            if _full_error():
                raise
            print(f"error: {error}", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)
        return main()

    return run


def user_errors(task: Callable[[C], T]) -> Callable[[C], T]:
    """Wrap a Hydra task function: a user error prints `error: <message>` on stderr and exits
    with status 2 (fails the job, in a sweep); anything else propagates as raised."""

    @functools.wraps(task)
    def run(cfg: C) -> T:
        try:
            return task(cfg)
        except Exception as error:
            if not is_user_error(error) or _full_error():
                raise
            message = f"error: {error}"
            print(message, file=sys.stderr, flush=True)
            if _in_sweep():
                raise JobFailed(message) from None
            sys.exit(EXIT_USER_ERROR)

    return run
