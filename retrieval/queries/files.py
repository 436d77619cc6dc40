"""Query files (CSV or JSON, `query.file`): queries in words, with their truth, that replace
a dataset's own queries and truth; `with_query_file` is where that replacement happens.
"""
from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import UserError, unreadable
from retrieval.records import Box, Dataset, Instance, QueryTruth, Record
from retrieval.text_files import read_utf8

NO_IMAGE = Path()
"""The `path` of a query that has only words (a text-only row of a query file)."""


class QueryFileError(UserError, ValueError):
    """A query file that cannot be read into queries and truth."""


WHAT = "query file"


QUERY_FILE_COLUMNS = ("id", "text", "image", "box", "group", "instance", "positives")
"""id and text are required, and exactly one of instance and positives; image (a path under the
dataset root, or absolute) and box ("x1 y1 x2 y2" in a CSV, a list in JSON) are composed
queries' image part; group reports the query in a subset of its own."""


def _rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV (with a header) or JSON (a list of objects) query file."""
    if path.suffix.lower() not in (".csv", ".json"):
        raise QueryFileError(f"query.file={path} is neither .csv nor .json: use one of them")
    text = read_utf8(path, WHAT)
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise QueryFileError(f"query.file={path} is not valid JSON ({error})") from None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise QueryFileError(f"query.file={path} must hold a JSON list of objects, one per query")
        return rows
    rows = _csv_rows(path, text)
    for row in rows:
        row.pop(None, None)  # cells past the header: reported as no column at all
        if row.get("positives") is not None:
            row["positives"] = [p.strip() for p in row["positives"].split(";") if p.strip()] if row["positives"].strip() else None
        if row.get("box"):
            row["box"] = row["box"].replace(",", " ").split()
        for key in ("image", "box", "group", "instance"):
            if row.get(key) == "":
                row[key] = None
    return rows


def _csv_rows(path: Path, text: str) -> list[dict[str, Any]]:
    """The rows of a CSV query file; a row the csv module cannot split is named by the line it
    starts on (a cell over csv's size limit is most often a quote left open)."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[dict[str, Any]] = []
    start = 1  # the line the next row (the header, first) starts on
    try:
        if reader.fieldnames is not None:  # reading them reads the header
            start = reader.line_num + 1
        for row in reader:
            rows.append(row)
            start = reader.line_num + 1
    except csv.Error as error:
        if "field larger than field limit" in str(error):
            reason = f"the row from line {start} has a cell over {csv.field_size_limit():,} characters"
            raise unreadable(path, WHAT, reason, "a quote left open runs on to the end of the file: close it, "
                             "or shorten the cell") from None
        raise unreadable(path, WHAT, f"the row from line {start} cannot be read ({error})", "fix that row") from None
    return rows


def _box(value: Any, where: str) -> Box | None:
    if value is None:
        return None
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        box = ()
    if len(box) != 4:
        raise QueryFileError(f"{where}: box must be 4 numbers x1 y1 x2 y2, not {value!r}")
    return box  # type: ignore[return-value]


def with_query_file(dataset: Dataset, path: Path) -> Dataset:
    """`dataset` with the queries and truth of a query file (scored by the `instance` protocol,
    in the one setup `all`): a row's positives are the gallery images holding its `instance`
    id, or its `positives` (gallery paths relative to the dataset root, or absolute), and
    nothing is junk. Rows with only words get the path `NO_IMAGE`."""
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise QueryFileError(f"query.file={path} holds no queries")
    by_path = {record.key: index for index, record in enumerate(dataset.gallery)}
    by_path.update({str(Path(record.path).resolve()): index for index, record in enumerate(dataset.gallery)})
    holders: dict[str, set[int]] = defaultdict(set)
    for index, record in enumerate(dataset.gallery):
        for instance_id in record.instance_ids:
            holders[instance_id].add(index)
    queries, truths, seen = [], [], set()
    for number, row in enumerate(rows, start=1):
        where = f"query.file={path} query {number}"
        unknown = sorted(set(row) - set(QUERY_FILE_COLUMNS))
        if unknown:
            raise QueryFileError(f"{where}: unknown column {unknown[0]!r}; the columns are {', '.join(QUERY_FILE_COLUMNS)}")
        query_id, text = str(row.get("id") or ""), row.get("text")
        if not query_id or not isinstance(text, str) or not text.strip():
            raise QueryFileError(f"{where}: every query needs an id and a text")
        if query_id in seen:
            raise QueryFileError(f"{where}: id {query_id!r} is used twice")
        seen.add(query_id)
        instance, positives = row.get("instance"), row.get("positives")
        if (instance is None) == (positives is None):
            raise QueryFileError(f"{where}: give exactly one of instance (an instance id) and positives (gallery paths)")
        if positives is None:
            found = holders.get(str(instance), set())
        elif not isinstance(positives, list) or not all(isinstance(p, str) for p in positives):
            raise QueryFileError(f"{where}: positives must be a list of gallery paths")
        else:
            indices = {p: _gallery_index(by_path, dataset.root, p) for p in positives}
            missing = [p for p, index in indices.items() if index is None]
            if missing:
                raise QueryFileError(f"{where}: positive {missing[0]!r} is not an image of the gallery of {dataset.name}")
            found = set(indices.values())
        box = _box(row.get("box"), where)
        image = row.get("image")
        parts = (Instance(id=str(instance or ""), box=box),) if instance is not None or box is not None else ()
        queries.append(Record(
            path=_under(dataset.root, image) if image else NO_IMAGE,
            key=query_id,
            instances=parts,
            group=str(row.get("group") or ""),
            text=text,
        ))
        truths.append(QueryTruth(positives=np.array(sorted(found), dtype=np.int64)))
    note = f"queries and truth from query file {path}"
    return replace(dataset, queries=queries, truth={"all": truths}, protocol="instance",
                               extra={**dataset.extra, "queries": note})


def _gallery_index(by_path: dict[str, int], root: Path, name: str) -> int | None:
    """The gallery index of a positive named as its key or its path (resolved only when the key
    does not match: once per name, it touches the file system)."""
    return by_path[name] if name in by_path else by_path.get(str(_under(root, name)))


def _under(root: Path, name: str) -> Path:
    """A file named in a query file: relative to the dataset root unless absolute."""
    path = Path(name)
    return (path if path.is_absolute() else Path(root) / path).resolve()
