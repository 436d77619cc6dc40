"""What the benchmarks under bench/ share: a run's peak memory, the seconds its gallery took to
extract, and the table cells they print."""
from __future__ import annotations

import resource
from pathlib import Path

import numpy as np


def peak_mib() -> tuple[float, float]:
    """Peak resident memory (MiB) of this process and of its largest finished child process
    (ru_maxrss is in KiB on Linux)."""
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def extraction_seconds(store: Path, keys: list[str]) -> float | None:
    """Wall time spent embedding the store's shards that hold any of `keys` (the run that built
    them; a store shared with the queries also holds shards of query cut-outs, left out here)."""
    wanted, total, found = set(keys), 0.0, False
    for shard in store.glob("shard-*.npz"):
        with np.load(shard, allow_pickle=False) as data:
            if wanted.intersection(data["items"].tolist()):
                total, found = total + float(data["seconds"]), True
    return total if found else None


def mib(value: float | None, mark: str = "") -> str:
    return "-" if value is None else f"{value:.0f}{mark}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def ratio(value: float | None, whole: float | None) -> str:
    return "-" if value is None or not whole else f"{value / whole:.1f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table, as every bench prints its results."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])
