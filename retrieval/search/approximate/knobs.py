"""The search-time knob of each approximate index type: the one setting that trades speed for
recall without rebuilding, and the values tuning tries, cheapest first.

Found by what the index is, through the wrappers a factory adds (OPQ's pre-transform, a
refine stage), so `OPQ64,IVF4096,PQ64` tunes nprobe like `IVF4096,Flat`. An index without a
knob (plain PQ, LSH) can be measured but not tuned.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import faiss

from retrieval.config.rules import ConfigError

EF_SEARCH = (16, 1024)
"""The efSearch range tried: below 16 the graph search is erratic, above 1024 exact search is
usually as fast."""


@dataclass(frozen=True)
class Knob:
    name: str
    ladder: tuple[int, ...]
    """Values to try, cheapest first."""


def doubling(low: int, high: int) -> tuple[int, ...]:
    """low, 2 low, 4 low, ... and `high` itself: a log-spaced ladder ending at the top."""
    values = []
    value = max(1, low)
    while value < high:
        values.append(value)
        value *= 2
    return (*values, high)


def inner_index(index: faiss.Index) -> faiss.Index:
    """The index under faiss's wrappers (pre-transforms such as OPQ, a refine stage, id maps)."""
    index = faiss.downcast_index(index)
    while True:
        if isinstance(index, faiss.IndexRefine):
            index = faiss.downcast_index(index.base_index)
        elif isinstance(index, (faiss.IndexPreTransform, faiss.IndexIDMap)):
            index = faiss.downcast_index(index.index)
        else:
            return index


def _nprobe(index: faiss.Index, k_rows: int) -> tuple[int, ...] | None:
    """Inverted lists visited per query: 1 up to all of them (then IVF search is exhaustive)."""
    inner = inner_index(index)
    return doubling(1, inner.nlist) if isinstance(inner, faiss.IndexIVF) else None


def _ef_search(index: faiss.Index, k_rows: int) -> tuple[int, ...] | None:
    """The graph search's candidate list; faiss never uses less than the rows asked for, so the
    ladder starts there."""
    if not isinstance(inner_index(index), faiss.IndexHNSW):
        return None
    return doubling(max(EF_SEARCH[0], k_rows), max(EF_SEARCH[1], k_rows))


KNOBS: dict[str, Callable[[faiss.Index, int], tuple[int, ...] | None]] = {"nprobe": _nprobe, "efSearch": _ef_search}
"""Knob name (a faiss ParameterSpace name) -> its ladder for an index, None if the index has no such knob."""


def knob_of(index: faiss.Index, k_rows: int = 1) -> Knob | None:
    """The knob of a (CPU) index searched for `k_rows` rows per query; None when it has none."""
    for name, ladder in KNOBS.items():
        values = ladder(index, k_rows)
        if values is not None:
            return Knob(name, values)
    return None


def knob_to_tune(index: faiss.Index, factory: str, target_recall: float, k_rows: int = 1) -> Knob:
    """The knob `index.target_recall` tunes; a ConfigError naming the fix when the index has none."""
    knob = knob_of(index, k_rows)
    if knob is None:
        raise ConfigError(f"index.target_recall={target_recall:g} needs a search-time knob to tune, and index.factory={factory} "
                        "has none: use an IVF or HNSW factory (nprobe, efSearch), or index.target_recall=null")
    return knob
