"""One CSV row per evaluation, appended under a file lock so parallel sweep jobs never clash."""
from __future__ import annotations

import csv
import logging
import os
import subprocess
from pathlib import Path
from typing import Any, BinaryIO

from filelock import FileLock

from retrieval.artifacts import atomic_path

log = logging.getLogger(__name__)

LEADING = ["date", "dataset", "model", "weights", "query_mode", "combination", "index", "search", "search_recall", "regions", "n_queries",
           "n_gallery", "n_distractors", "images_per_s", "commit", "run_dir"]


def git_commit(where: Path | None = None) -> str:
    """Short commit of the code that produced a result ("-dirty" if it had local changes)."""
    where = where or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True
        ).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def append_row(path: Path, row: dict[str, Any]) -> Path:
    """Append `row`; when it brings new columns the file is rewritten (atomically) with them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        rows: list[dict[str, Any]] = []
        columns: list[str] = []
        if path.exists() and path.stat().st_size:
            with open(path, newline="") as handle:
                reader = csv.DictReader(handle)
                columns = list(reader.fieldnames or [])
                rows = list(reader)
        new = [c for c in row if c not in columns]
        if columns and not new:
            with open(path, "a+b") as handle:
                _terminate_last_line(handle, path)
            with open(path, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=columns).writerow(row)
            return path
        leading = [c for c in LEADING if c in columns or c in row]
        columns = leading + [c for c in columns + new if c not in leading]
        with atomic_path(path) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows + [row])
    return path


def _terminate_last_line(handle: BinaryIO, path: Path) -> None:
    """End the file's last line if a killed writer left it without its line end, so the next
    row starts a line of its own instead of being glued to the cut one (kept, and reported)."""
    handle.seek(-1, os.SEEK_END)
    if handle.read(1) not in (b"\n", b"\r"):
        handle.write(b"\r\n")  # the csv module's own line end
        log.warning("%s: the last line had no line end (an interrupted write?); ended it before appending", path)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
