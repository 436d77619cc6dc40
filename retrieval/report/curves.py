"""Per-query outcome labels and the curves drawn from them, straight from ranking and truth.

The report recomputes only what no saved file holds: which returned image was right, wrong or
junk, and the mean precision-recall curve. AP itself comes from `per_query.csv`, so the page
shows exactly the numbers `evaluate` reported.
"""
from __future__ import annotations

import numpy as np

POSITIVE, WRONG, JUNK = "p", "n", "j"


def outcome_labels(row: np.ndarray, positives: np.ndarray, junk: np.ndarray) -> str:
    """One letter per returned gallery index (p = correct, n = wrong, j = junk); pads end it."""
    row = row[row >= 0]
    labels = np.full(row.shape, WRONG)
    labels[np.isin(row, junk)] = JUNK
    labels[np.isin(row, positives)] = POSITIVE
    return "".join(labels.tolist())


def interpolated_precision(labels: str, npos: int, recall_levels: np.ndarray) -> np.ndarray:
    """Interpolated precision (max precision at any recall >= r) at each level; 0 if unreached.

    Junk entries are dropped first, as the benchmarks do; `npos` counts positives in the
    whole gallery, so a truncated ranking that misses some never reaches recall 1.
    """
    hits = np.array([label == POSITIVE for label in labels if label != JUNK], dtype=bool)
    out = np.zeros(len(recall_levels))
    if npos <= 0 or not hits.any():
        return out
    found = np.cumsum(hits)
    precision = found / np.arange(1, len(hits) + 1)
    recall = found / npos
    best_after = np.maximum.accumulate(precision[::-1])[::-1]
    first = np.searchsorted(recall, recall_levels - 1e-12, side="left")
    reached = first < len(recall)
    out[reached] = best_after[first[reached]]
    return out


def mean_pr_curve(
    labels: list[str], npos: list[int], levels: int = 51
) -> tuple[np.ndarray, np.ndarray]:
    """Recall levels and mean interpolated precision over queries that have positives."""
    recall_levels = np.linspace(0.0, 1.0, levels)
    curves = [interpolated_precision(l, n, recall_levels) for l, n in zip(labels, npos) if n > 0]
    mean = np.mean(curves, axis=0) if curves else np.zeros(levels)
    return recall_levels, mean


def ap_histogram(aps: list[float | None], bins: int = 10) -> np.ndarray:
    """Count of queries per AP bin over [0, 1]; queries without positives (None) are left out."""
    values = np.array([ap for ap in aps if ap is not None], dtype=float)
    counts, _ = np.histogram(np.clip(values, 0.0, 1.0), bins=bins, range=(0.0, 1.0))
    return counts
