"""A user's text file (a query list, a query file) read as UTF-8, or an error naming the line.

Python's own UnicodeDecodeError gives a byte offset and no file name; a user needs the file
and the line to fix, so the offset is turned into a line number here.
"""
from __future__ import annotations

from pathlib import Path

from retrieval.errors import unreadable

SAVE_AS_UTF8 = "save it as UTF-8 text"


def read_utf8(path: Path, what: str) -> str:
    """The text of `path` (a leading byte-order mark dropped); an UnreadableFile naming the
    first line that is not UTF-8, and the byte, when there is one."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:  # error.object: the bytes after any byte-order mark
        line = error.object.count(b"\n", 0, error.start) + 1
        reason = f"line {line} is not UTF-8 (byte 0x{error.object[error.start]:02x})"
        raise unreadable(path, what, reason, SAVE_AS_UTF8) from None
