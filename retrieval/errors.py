"""The one error type the whole library raises for a user's mistake.

A `UserError` is a wrong setting, a missing folder, an unknown name, inputs that do not go
together: its message says what to do, and the entry scripts print it alone, without a
traceback (`retrieval.cli`). Library code that is not driven from the command line sees an
ordinary exception.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (a setting, a path, a name): shown as its message alone."""
