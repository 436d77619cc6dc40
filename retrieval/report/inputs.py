"""Read a run folder exactly as `evaluate` left it; the report never recomputes a metric."""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from retrieval.images import not_regular
from retrieval.ranking import Ranking

RANKING, DATASET, METRICS, PER_QUERY = "ranking.npz", "dataset.json", "metrics.json", "per_query.csv"


@dataclass
class RunInputs:
    ranking: Ranking
    dataset: dict[str, Any]
    metrics: dict[str, Any]
    per_query: dict[str, dict[int, dict[str, str]]]
    """setup -> query index -> that row of `per_query.csv`."""
    created: str
    """When the run was scored: metrics.json's `created`, else the time the file was written
    (the ranking's own time is its search's, which a later run may have reused from the cache)."""

    @property
    def setups(self) -> list[str]:
        return list(self.dataset["truth"])


def _per_query(path: Path) -> dict[str, dict[int, dict[str, str]]]:
    rows: dict[str, dict[int, dict[str, str]]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            rows.setdefault(row["setup"], {})[int(row["query"])] = row
    return rows


def load_run(run_dir: Path) -> RunInputs:
    """All four artifacts, with a message naming the file that is absent (or not a regular
    file: reading a FIFO would hang the report)."""
    problems = {name: not_regular(run_dir / name) for name in (RANKING, DATASET, METRICS, PER_QUERY)}
    missing = [name for name, problem in problems.items() if problem == "missing file"]
    if missing:
        raise FileNotFoundError(f"{run_dir} is not a complete run folder: missing {', '.join(missing)}")
    odd = [f"{name} {problem}" for name, problem in problems.items() if problem]
    if odd:
        raise ValueError(f"{run_dir}: {', '.join(odd)}; the run's artifacts must be regular files")
    metrics = json.loads((run_dir / METRICS).read_text())
    written = datetime.fromtimestamp((run_dir / METRICS).stat().st_mtime, timezone.utc)
    inputs = RunInputs(
        ranking=Ranking.load(run_dir / RANKING, "run evaluate again to rewrite the run folder"),
        dataset=json.loads((run_dir / DATASET).read_text()),
        metrics=metrics,
        per_query=_per_query(run_dir / PER_QUERY),
        created=str(metrics.get("created") or written.isoformat(timespec="seconds")),
    )
    n_queries = len(inputs.dataset["queries"])
    if inputs.ranking.indices.shape[0] != n_queries:
        raise ValueError(
            f"{run_dir}: ranking has {inputs.ranking.indices.shape[0]} queries, dataset.json {n_queries}"
        )
    return inputs


def number(text: str | None) -> float | None:
    """A CSV cell as a finite float, or None for empty, NaN or non-numeric cells."""
    try:
        value = float(text) if text not in (None, "") else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None
