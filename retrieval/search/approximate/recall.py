"""How close an approximate ranking is to the exact one, and which queries measure it.

recall@K of one query = |approximate top-K images ∩ exact top-K images| / |exact top-K
images|: the share of the K images exact search ranks first that the approximate search also
returns in its first K, after rows are grouped by image (so a region gallery is measured on
what it ranks, images). The run's recall@K is its mean over the sample's queries. K is the
run's depth capped at RECALL_DEPTH: beyond that the tail matters little and the exact search
of the sample grows.

The samples are the run's own queries (not gallery vectors, which find themselves at
similarity 1 in their own inverted list, so IVF recall on them is flattered): a seeded
shuffle gives a tuning sample and, disjoint from it, a reporting sample, so the recall
written into metrics.json is measured on queries the knob was not chosen on.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

RECALL_DEPTH = 100


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean recall@k of (queries, >= k) image ids `found` against `truth` (-1 = padding); a
    query whose exact list is empty (an empty gallery) counts as fully recalled."""
    shares = []
    for mine, exact in zip(found[:, :k], truth[:, :k]):
        exact = exact[exact >= 0]
        shares.append(np.intersect1d(mine[mine >= 0], exact).size / len(exact) if len(exact) else 1.0)
    return float(np.mean(shares)) if shares else 1.0


def held_out_samples(queries: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(tuning, reporting) query indices drawn from `queries` (the valid ones) by a seeded
    shuffle: disjoint, at most `size` each, the tuning one at most half of them; with a single
    query both are that query, since there is nothing to hold out."""
    order = np.random.default_rng(seed).permutation(np.asarray(queries, dtype=np.int64))
    n_tune = min(size, (len(order) + 1) // 2)
    tune, report = order[:n_tune], order[n_tune : n_tune + size]
    return np.sort(tune), np.sort(report if len(report) else tune)


def describe(search: Mapping[str, Any] | None) -> str:
    """One line saying how a ranking was searched, for the report and the console: empty for
    exact search (or an unknown one), else its measured recall, e.g. `approximate search:
    recall@100 0.962 against exact (IVF1024,PQ32, nprobe 16)`."""
    if not search or search.get("exact", True):
        return ""
    knobs = "".join(f", {name} {value:g}" for name, value in (search.get("params") or {}).items())
    knobs += f", top {search['rescore']} re-scored exactly" if search.get("rescore") else ""
    return (f"approximate search: recall@{search['k']} {search['recall_at_k']:.3f} against exact "
            f"({search['index']}{knobs}) on {search['recall_queries']} {'held-out ' if search.get('held_out') else ''}queries")
