"""Metrics as papers and the leaderboard quote them: fractions shown as percentages with 2 decimals."""
from __future__ import annotations

import math


def percent(value: float | None) -> float | None:
    """100 x `value` rounded to 2 decimals (0.51234 -> 51.23); None when there is no value
    (None, or NaN for a mean over no query)."""
    if value is None or not math.isfinite(value):
        return None
    return round(100 * value, 2)


def percent_text(value: float | None, missing: str = "-") -> str:
    """`percent` written with both decimals ("51.20"), or `missing`."""
    shown = percent(value)
    return missing if shown is None else f"{shown:.2f}"
