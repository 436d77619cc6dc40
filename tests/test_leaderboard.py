"""The leaderboard CSV under concurrent writers and growing metric columns."""
from __future__ import annotations

import csv
import multiprocessing
from pathlib import Path

from retrieval.leaderboard import LEADING, append_row, read_rows

PROCESSES, ROWS = 4, 10


def row_of(process: int, n: int) -> dict[str, object]:
    """Each writer brings its own metric column, so header rewrites race with plain appends."""
    return {
        "date": f"2026-01-01T00:00:{n:02d}",
        "dataset": f"set-{process}",
        "model": "m, with a comma",  # quoting must survive every rewrite
        "run_dir": f"/runs/{process}/{n}",
        "mAP": round(process + n / 100, 2),
        f"P@{process + 1}": n,
    }


def append_many(path: str, process: int) -> None:
    for n in range(ROWS):
        append_row(Path(path), row_of(process, n))


def test_concurrent_appends_keep_every_row(tmp_path: Path) -> None:
    path = tmp_path / "leaderboard.csv"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=append_many, args=(str(path), p)) for p in range(PROCESSES)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * PROCESSES

    with open(path, newline="") as handle:
        table = list(csv.reader(handle))
    header, body = table[0], table[1:]
    assert len(body) == PROCESSES * ROWS and all(len(line) == len(header) for line in body)
    assert header[:3] == ["date", "dataset", "model"] and header.count("mAP") == 1
    rows = read_rows(path)
    seen = {(r["dataset"], r["run_dir"]) for r in rows}
    assert seen == {(f"set-{p}", f"/runs/{p}/{n}") for p in range(PROCESSES) for n in range(ROWS)}
    for row in rows:
        process, n = (int(part) for part in row["run_dir"].split("/")[2:])
        expected = {k: str(v) for k, v in row_of(process, n).items()}
        assert {k: row[k] for k in expected} == expected
        assert all(row[f"P@{p + 1}"] == "" for p in range(PROCESSES) if p != process)
    assert not list(tmp_path.glob(".leaderboard.csv.*.tmp"))


def test_new_metric_columns_rewrite_the_header_without_losing_rows(tmp_path: Path) -> None:
    path = tmp_path / "board.csv"
    append_row(path, {"model": "a", "dataset": "d", "mAP": 50.0})
    append_row(path, {"model": "b", "dataset": "d", "mAP": 60.0})
    header_before = path.read_text().splitlines()[0]
    append_row(path, {"dataset": "d", "model": "c", "mAP": 70.0, "hit@1": 90.0, "date": "today"})
    append_row(path, {"model": "e", "dataset": "d", "hit@1": 10.0})  # known columns only: plain append

    with open(path, newline="") as handle:
        header = next(csv.reader(handle))
    assert header_before == "dataset,model,mAP"
    assert header == ["date", "dataset", "model", "mAP", "hit@1"]  # leading columns first, in LEADING order
    assert header[:3] == [c for c in LEADING if c in header]
    rows = read_rows(path)
    assert [(r["model"], r["mAP"], r["hit@1"], r["date"]) for r in rows] == [
        ("a", "50.0", "", ""),
        ("b", "60.0", "", ""),
        ("c", "70.0", "90.0", "today"),
        ("e", "", "10.0", ""),
    ]


def test_a_csv_from_before_the_weights_column_reads_and_takes_it_beside_the_model(tmp_path: Path) -> None:
    """Rows written before runs named their weights keep their values (an empty `weights`);
    the first row with weights puts the column after `model`, where the page reads it."""
    from retrieval.report.board import read_leaderboard

    path = tmp_path / "leaderboard.csv"
    old = {"date": "2026-01-01T00:00:00", "dataset": "d", "model": "dinov2_vits14", "query_mode": "box", "run_dir": "", "mAP": 40.0}
    append_row(path, old)
    append_row(path, {**old, "date": "2026-02-01T00:00:00", "weights": "random", "mAP": 2.0})

    with open(path, newline="") as handle:
        header = next(csv.reader(handle))
    assert header[:5] == ["date", "dataset", "model", "weights", "query_mode"]
    assert [(r["weights"], r["mAP"]) for r in read_rows(path)] == [("", "40.0"), ("random", "2.0")]
    board = read_leaderboard(path).datasets[0]
    assert board.varying == ["weights"] and len(board.latest()) == 2  # told apart by their weights
