"""Percentages as the leaderboard, the printed summary and the reports show metrics."""
from __future__ import annotations

import math

from retrieval.percent import percent, percent_text


def test_percent_rounds_to_two_decimals_and_keeps_missing_apart():
    assert percent(0.51234) == 51.23 and percent(1) == 100 and percent(0.5) == 50.0
    assert percent(None) is None and percent(math.nan) is None
    assert percent_text(0.5) == "50.00" and percent_text(0.0123456) == "1.23"
    assert percent_text(None) == "-" and percent_text(math.nan, missing="") == ""


def test_text_is_the_number_written_with_both_decimals():
    for value in (0.125, 0.005, 0.015, 0.12345, 0.99995, 2 / 3):
        assert percent_text(value) == f"{100 * value:.2f}" == f"{percent(value):.2f}"
