"""The run's counts, timings and steps as a person reads them: labelled rows with units, not
the JSON dicts `metrics.json` stores them in.

Known keys get a label and a unit; any other key is still shown, its name made readable, so a
new field never disappears from the page. Empty values (None, [], {}) are left out.
"""
from __future__ import annotations

import numbers
from datetime import datetime
from html import escape
from typing import Any

from retrieval.search.approximate.recall import describe

LABELS = {
    "n_queries": "queries",
    "n_gallery": "gallery images",
    "n_distractors": "distractors",
    "n_rows": "gallery vectors",
    "n_queries_without_positives": "without positives",
    "k": "ranking depth",
    "index_bytes": "index size",
    "search_seconds": "search time",
    "queries_per_s": "search speed",
    "extraction_images_per_s": "extraction speed",
    "top1_sources": "first result from",
    "created": "search ranking built",
}
LEFT_OUT = {"skipped_queries", "skipped_gallery"}
"""Listed one by one in the page's skipped-inputs table already."""
SHORT_OPTIONS = {"verify": ("features", "model", "min_inliers", "top_n")}
"""Options a re-rank step is named by in the header (all of them are in its tooltip)."""


def label(key: str) -> str:
    return LABELS.get(key) or key.removeprefix("n_").replace("_", " ")


def number_text(value: float) -> str:
    """Integers with thousands separators, other numbers to about three significant digits."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral) or float(value).is_integer() and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def size_text(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:,.0f} {unit}" if unit == "B" else f"{n_bytes:.3g} {unit}"
        n_bytes /= 1024
    return ""


def when(stamp: str | datetime) -> str:
    """An ISO time as `2026-05-01 14:03 UTC` (as given when it does not parse)."""
    try:
        moment = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp)
    zone = moment.strftime("%Z") or ""
    return moment.strftime("%Y-%m-%d %H:%M") + (f" {zone}" if zone else "")


def value_text(key: str, value: Any) -> str | None:
    """Plain text of one value with its unit; None when there is nothing to show."""
    if value is None or value == [] or value == {} or value == "":
        return None
    if key == "search" and isinstance(value, dict):
        return "exact" if value.get("exact", True) else describe(value).removeprefix("approximate search: ")
    if key == "created":
        return when(value)
    if isinstance(value, dict):
        unit = f" {key.removesuffix('_per_s').split('_')[-1]}/s" if key.endswith("_per_s") else ""
        parts = [(label(k), value_text(k, v)) for k, v in value.items()]
        shown = " · ".join(f"{name} {text}" for name, text in parts if text is not None)
        return (shown + unit) if shown else None
    if isinstance(value, list):
        if all(isinstance(v, (str, numbers.Number)) for v in value):
            return ", ".join(str(v) for v in value)
        return f"{len(value)} entries"
    if isinstance(value, numbers.Number):
        if key.endswith("_bytes"):
            return size_text(float(value))
        if key.endswith("_per_s"):
            return f"{number_text(value)} {key.removesuffix('_per_s').split('_')[-1]}/s"
        if key.endswith(("_seconds", "_s")):
            return f"{value:.3g} s"
        return number_text(value)
    return str(value)


def fact_rows(values: dict[str, Any], setups: list[str] | tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(label, text) of every value worth showing; a setup's own counts are labelled by it."""
    rows = []
    for key, value in values.items():
        if key in LEFT_OUT:
            continue
        text = value_text(key, value)
        if text is not None:
            rows.append((f"setup {key}" if key in setups else label(key), text))
    return rows


def fact_table(title: str, rows: list[tuple[str, str]], table_id: str) -> str:
    """A titled two-column table; nothing when there are no rows."""
    if not rows:
        return ""
    body = "".join(f"<tr><th>{escape(name)}</th><td>{escape(text)}</td></tr>" for name, text in rows)
    return f'<div class="facts"><h3>{escape(title)}</h3><table class="facts-table" id="{table_id}">{body}</table></div>'


def step_text(step: dict[str, Any]) -> tuple[str, str]:
    """A re-rank step as (its name with the options it is known by, every option), e.g.
    ("verify: sift, homography, ≥ 12 inliers, top 100", "top_n=100, features=sift, ...")."""
    name = str(step.get("name", "?"))
    options = {k: v for k, v in step.items() if k not in ("step", "name")}
    every = ", ".join(f"{k}={v}" for k, v in options.items())
    short = SHORT_OPTIONS.get(name)
    if short is None:
        return (f"{name}: {every}" if every else name), every
    parts = []
    for key in short:
        if options.get(key) is None:
            continue
        value = options[key]
        parts.append({"min_inliers": f"≥ {value} inliers", "top_n": f"top {value}"}.get(key, str(value)))
    return f"{name}: {', '.join(parts)}", every
