"""What the leaderboard page needs to know about `leaderboard.csv`: which columns name a
configuration and which measure it, which runs repeat one configuration, and which runs one
Hydra sweep made.

Only the CSV and the run folders it points to are read; a CSV written before a column existed
still reads (the column is then empty for its rows).
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from retrieval.report.inputs import number

MAIN_METRICS = ("mAP", "mAP@200", "hit@1", "box_mAP@50")
"""Shown first when a dataset reports them (per setup too, `medium/mAP`): what papers quote."""
IDENTITY = ("model", "weights", "query_mode", "combination", "index", "search", "regions", "representation", "rerank",
            "n_queries", "n_gallery", "n_distractors")
"""Columns that say what ran; runs equal in all of them are one configuration."""
RUN_FACTS = ("date", "dataset", "commit", "run_dir")
MEASURES = ("search_recall", "images_per_s", "queries_per_s")
"""Measured, but not accuracy: never marked best, never a configuration's name."""
TIMINGS = ("images_per_s", "queries_per_s")
SWEEP_FILE = "multirun.yaml"
SWEEP_SYNTAX = re.compile(r",|\b(range|choice|glob|interval)\(")
"""A Hydra override that sweeps: a list of values, or one of the sweep functions."""


@dataclass
class Sweep:
    key: str
    """The sweep folder (where Hydra wrote `multirun.yaml`), or "" for runs of no sweep."""
    label: str
    """The folder as the page shows it: relative to the CSV when it lies under it."""
    swept: list[str] = field(default_factory=list)
    """The sweeping overrides (`model=a,b`), read from `multirun.yaml` when it is there."""


@dataclass
class Run:
    row: dict[str, str]
    order: int
    """Position in the CSV: rows are appended as runs finish, so a later row is a later run."""
    config: str
    sweep: Sweep


@dataclass
class DatasetBoard:
    """One dataset's runs and how its table is laid out."""

    name: str
    runs: list[Run]
    varying: list[str]
    """Identity columns whose value differs between runs: they tell the rows apart."""
    fixed: dict[str, str]
    """Identity columns equal in every run, with that value (said once, above the table)."""
    main: list[str]
    """Main metrics, shown first; `rerank` joins `varying` when any run re-ranked."""
    more: list[str]
    """Every other non-empty column, behind the all-columns toggle."""
    timings: list[str]

    def latest(self) -> list[Run]:
        """The last run of each configuration, in order of first appearance."""
        last: dict[str, Run] = {}
        for run in self.runs:
            last[run.config] = run
        return list(last.values())

    def label(self, run: Run) -> str:
        """A configuration's short name: its values in the varying columns (not the index
        type when the search, which names it with its knobs, varies too)."""
        skip = {"rerank", "index"} if "search" in self.varying else {"rerank"}
        parts = [run.row.get(c, "") or "—" for c in self.varying if c not in skip]
        if "rerank" in self.varying:
            parts.append(run.row.get("rerank") or "no re-rank")
        return " · ".join(parts) or run.row.get("model", "") or self.name


def read_csv(csv_path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(csv_path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [{k: v or "" for k, v in row.items() if k is not None} for row in reader]
        return list(reader.fieldnames or []), rows


def numeric_columns(columns: list[str], rows: list[dict[str, str]]) -> set[str]:
    """Columns whose every non-empty cell is a number (and that have one)."""
    def numeric(column: str) -> bool:
        cells = [row.get(column, "") for row in rows if row.get(column, "") != ""]
        return bool(cells) and all(number(cell) is not None for cell in cells)

    return {c for c in columns if c not in RUN_FACTS and numeric(c)}


def metric_columns(columns: list[str], numeric: set[str]) -> list[str]:
    return [c for c in columns if c in numeric and c not in IDENTITY and c not in MEASURES and not c.startswith("n_")]


def identity_columns(columns: list[str], numeric: set[str]) -> list[str]:
    """Known identity columns, and any unknown text column (a new setting is an identity too)."""
    known = [c for c in IDENTITY if c in columns]
    unknown = [c for c in columns if c not in IDENTITY and c not in RUN_FACTS and c not in MEASURES
               and (c not in numeric or c.startswith("n_"))]
    return known + unknown


def main_metrics(metrics: list[str]) -> list[str]:
    """The MAIN_METRICS among `metrics`, whole-set or per setup, in that order; else the first."""
    chosen = [m for name in MAIN_METRICS for m in metrics if m.split("/")[-1] == name and m.count("/") <= 1]
    return chosen or metrics[:1]


class SweepFinder:
    """The Hydra sweep a run folder belongs to: the nearest folder above it holding
    `multirun.yaml`; for a folder no longer on disk, the `multirun/<time>` part of its path."""

    def __init__(self, csv_dir: Path):
        self.csv_dir = csv_dir
        self._marked: dict[Path, bool] = {}
        self._sweeps: dict[str, Sweep] = {"": Sweep("", "")}

    def __call__(self, run_dir: str) -> Sweep:
        if not run_dir:
            return self._sweeps[""]
        path = self.csv_dir / run_dir
        folder = next((p for p in path.parents if self._has_sweep_file(p)), None)
        if folder is None:
            parts = path.parts
            if "multirun" in parts[:-2]:
                at = len(parts) - 1 - parts[::-1].index("multirun")
                folder = Path(*parts[:at + 2])
        if folder is None:
            return self._sweeps[""]
        key = str(folder)
        if key not in self._sweeps:
            self._sweeps[key] = Sweep(key, self._label(folder), swept_overrides(folder / SWEEP_FILE))
        return self._sweeps[key]

    def _has_sweep_file(self, folder: Path) -> bool:
        if folder not in self._marked:
            self._marked[folder] = (folder / SWEEP_FILE).is_file()
        return self._marked[folder]

    def _label(self, folder: Path) -> str:
        try:
            return folder.resolve().relative_to(self.csv_dir.resolve()).as_posix()
        except ValueError:
            return folder.as_posix()


def swept_overrides(path: Path) -> list[str]:
    """The overrides of a sweep that take several values; [] when the file is absent or odd."""
    try:
        hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra") or {}
        task = (hydra.get("overrides") or {}).get("task") or []
    except (OSError, yaml.YAMLError, AttributeError):
        return []
    return [str(o) for o in task if SWEEP_SYNTAX.search(str(o).split("=", 1)[-1])]


@dataclass
class Leaderboard:
    columns: list[str]
    numeric: set[str]
    metrics: set[str]
    """Accuracy columns (higher is better): the ones a best value is marked in."""
    datasets: list[DatasetBoard]
    """In order of first appearance in the CSV."""


def read_leaderboard(csv_path: Path) -> Leaderboard:
    columns, rows = read_csv(csv_path)
    numeric = numeric_columns(columns, rows)
    metrics = metric_columns(columns, numeric)
    identity = identity_columns(columns, numeric)
    sweep_of = SweepFinder(csv_path.parent)
    by_dataset: dict[str, list[Run]] = {}
    for order, row in enumerate(rows):
        dataset = row.get("dataset", "")
        config = json.dumps([dataset, *(row.get(c, "") for c in identity)])
        by_dataset.setdefault(dataset, []).append(Run(row, order, config, sweep_of(row.get("run_dir", ""))))
    boards = []
    for name, runs in by_dataset.items():
        present = [c for c in columns if any(run.row.get(c, "") != "" for run in runs)]
        values = {c: {run.row.get(c, "") for run in runs} for c in identity}
        varying = [c for c in identity if len(values[c]) > 1]
        if "rerank" in present and "rerank" not in varying:
            varying.append("rerank")
        fixed = {c: next(iter(values[c])) for c in identity if c not in varying and c in present}
        own_metrics = [m for m in metrics if m in present]
        main = main_metrics(own_metrics)
        shown = {"date", "dataset", "run_dir", *varying, *main}
        more = [c for c in present if c not in shown]
        timings = [c for c in TIMINGS if c in present and c in numeric]
        boards.append(DatasetBoard(name, runs, varying, fixed, main, more, timings))
    return Leaderboard(columns, numeric, set(metrics), boards)
