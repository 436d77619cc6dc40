"""Byte sizes as people write them (`search.memory_budget=4GB`) and as messages show them.

Units are binary (1KB = 1024 bytes, as the KiB spelling also says), because the figures a
budget is checked against (array sizes, resident memory) are counted in pages and powers of two.
"""
from __future__ import annotations

import re
from typing import Any, NewType

Size = NewType("Size", str)
"""A config option holding a size as people write it ('4GB'): every value it is given, of
whatever type, goes to its test (`size_problem`), which says what to write instead."""
UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'4GB', '512MiB', '1.5g', '1000' -> bytes; ValueError naming the accepted forms."""
    match = _SIZE.fullmatch(str(text))
    if match is None:
        raise ValueError(f"{text!r} is not a size: write a number and a unit, such as 512MB or 4GB")
    return int(float(match[1]) * UNITS[match[2].upper()])


def format_size(n_bytes: float) -> str:
    """The largest unit that keeps the number at least 1, with three significant digits."""
    for unit in "TGMK":
        if n_bytes >= UNITS[unit]:
            return f"{n_bytes / UNITS[unit]:.3g}{unit}B"
    return f"{int(n_bytes)}B"


def size_problem(value: Any) -> str | None:
    """Config test: what to write instead, or None when `value` is a size with its unit (a bare
    number, which a person rarely means as bytes, is refused with the unit it likely lacks)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return "write a number and a unit, such as 512MB or 4GB"
    text = str(value).strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return f"add a unit ({text}MB?)"
    try:
        parse_size(text)
    except ValueError as error:
        return str(error)
    return None
