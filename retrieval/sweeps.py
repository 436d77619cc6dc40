"""What a Hydra sweep (`-m`) shows its user: run folders named after the values that differ,
and a table of its runs when it ends.

Folders: conf/config.yaml names each job's folder `${run_folder:${hydra.job.override_dirname},
${hydra.job.num}}` under its dataset's: the job's overrides (`model=dinov2_vits14,query=mask`),
without the keys its `exclude_keys` lists (paths and settings that change no result), made
safe for any file system and short, then the job number, which keeps two jobs that differ
only in excluded keys apart: `roxford5k/model=dinov2_vits14,query=mask-3`.

Table: `SweepTable`, a Hydra callback (conf/config.yaml's `hydra.callbacks`), reads every
job's metrics.json once all have returned and prints one line per run: the swept values and
the main metrics. Hydra calls it in the process that launched the sweep, whichever launcher
ran the jobs (this process, joblib's workers, or a cluster's); a sweep whose job failed ends
with that job's error instead.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from retrieval.percent import percent_text
from retrieval.report.board import SWEEP_FILE, main_metrics, swept_overrides

MAX_NAME = 80
"""Characters of a folder name before the job number; longer names end in a digest instead."""
UNSAFE = re.compile(r"[^A-Za-z0-9._,=+@-]+")
"""Characters some file system or shell treats specially (/, :, *, spaces, quotes...)."""
JOB_FILES = ".hydra/overrides.yaml"
"""What Hydra writes into every job's folder: the job's own overrides."""


def run_folder(overrides: str, number: int | str) -> str:
    """A job's folder name: its overrides (Hydra's `override_dirname`) made safe, then `-<job>`.
    Lists lose their brackets (`rerank=[verify,aqe]` -> `rerank=verify,aqe`, `[]` -> `none`)
    and quoted values their quotes; any other run of unsafe characters becomes one `_`; a
    name longer than `MAX_NAME` keeps its start and ends in a digest of the whole."""
    name = UNSAFE.sub("_", re.sub(r"['\"\[\]]", "", overrides.replace("[]", "none"))).strip("_")
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME - 9].rstrip('_,=')}~{digest}"
    return f"{name or 'run'}-{number}"


OmegaConf.register_new_resolver("run_folder", run_folder, replace=True)


def _key(override: str) -> str:
    """The key an override sets (`+model.pretrained=x` -> `model.pretrained`)."""
    return override.split("=", 1)[0].lstrip("+~")


def _value(override: str) -> str:
    return override.split("=", 1)[1] if "=" in override else ""


def _main_values(metrics: dict[str, Any]) -> dict[str, str]:
    """metrics.json's summary as leaderboard columns (`mAP`, `medium/mAP`), main metrics only."""
    flat = {
        metric if label == "all" else f"{label}/{metric}": value
        for label, values in (metrics.get("summary") or {}).items()
        for metric, value in values.items()
        if not metric.startswith("n_")
    }
    return {column: percent_text(flat[column]) for column in main_metrics(list(flat))}


def sweep_rows(sweep: Path) -> list[dict[str, str]]:
    """One row per job of the sweep in folder `sweep` that wrote metrics.json, in job order:
    the swept keys' values, the main metrics (in %) and the job's folder."""
    swept = [_key(override) for override in swept_overrides(sweep / SWEEP_FILE)]
    jobs = []
    for overrides_file in sweep.glob(f"**/{JOB_FILES}"):
        folder = overrides_file.parent.parent
        if not (folder / "metrics.json").is_file():
            continue
        given = {_key(o): _value(o) for o in yaml.safe_load(overrides_file.read_text()) or []}
        number = yaml.safe_load((folder / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["num"]
        row = {key: given.get(key, "") for key in swept}
        row.update(_main_values(json.loads((folder / "metrics.json").read_text())))
        row["folder"] = folder.relative_to(sweep).as_posix()
        jobs.append((number, row))
    return [row for _, row in sorted(jobs, key=lambda job: job[0])]


def table_text(rows: list[dict[str, str]]) -> str:
    """Rows as aligned columns under a header (a column a row lacks shows `-`)."""
    columns = list(dict.fromkeys(column for row in rows for column in row))
    columns.remove("folder")
    columns.append("folder")
    cells = [columns] + [[row.get(column, "-") for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)


class SweepTable(Callback):
    """Prints the table of a sweep's runs once every job has returned (nothing for a sweep
    whose jobs wrote no metrics, such as one of extract.py)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        rows = sweep_rows(sweep)
        if rows:
            print(f"sweep {sweep}: {len(rows)} runs (metrics in %)\n{table_text(rows)}", flush=True)
