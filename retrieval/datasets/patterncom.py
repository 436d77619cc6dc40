"""PatternCom composed image + text retrieval (docs/formats.md section 6): PatternNet + six attribute files.

Layout, as the rscir reference (`evaluate.py`, IGARSS 2024) reads it, `<root>` being its
`PatternNet/` folder (or a folder holding `PatternNet/`, with `PatternCom/` inside it or beside it):

    <root>/images/<class>/<name>.jpg              PatternNet: 38 classes x 800 images
    <root>/patternnet.csv                         'path unused class' per line: the database, in order
    <root>/PatternCom/<attribute>.csv             rows 'filename,attribute,value'

Gallery: the database the reference searches, every image `patternnet.csv` lists, in its
order (without the file, every image under `images/<class>/`, sorted by path).

Queries, for each attribute file (color, context, density, existence, quantity, shape):
every row is a query image, found in the gallery by file name (the reference matches the
row's filename to the database paths' base names). Its *attribute group* is the row's
attribute text plus the class read from the file name (the part before the first digit,
`closedroad001.jpg` -> `closedroad`), with the classes this attribute file merges
(`GROUP_MERGES`) merged. For every value of the group other than the row's own (values of
every row of the file count, also rows whose image is not in the gallery), one composed
query: `Record(path=<query image>, text=<the other value>)`, the raw value without any
prompt template.

Relevant images of a composed query: images of that attribute file whose value equals the
text and whose class equals the query's class, both merged with `CLASS_MERGES` (all ten
merges, whatever the attribute: the reference merges classes for relevance in every file,
but for grouping only as `GROUP_MERGES` says). The query image itself stays in the gallery
and is never junk, as in the reference.

Reference differences, all named:
- An image listed twice in one file: `relevance="any"` (default) makes it relevant to each
  of its values; `relevance="reference"` keeps only its last row's value, as the reference's
  filename -> row dict does. Counted per file in `extra["attributes"]`.
- A row whose image is not in the gallery is skipped (and listed in `skipped`); the reference
  drops it from its query list but keeps indexing its per-row lists by the new position, so
  every later row of that file would get another row's texts and class.

One truth setup, "all"; query groups are the attribute names, so the protocol reports each
attribute ("all/<attribute>") and their mean ("all"). A query's key is
`<attribute>:<csv line>:<file name>:<text>`; its one instance is `<attribute>/<merged class>/<text>`
(what it asks for; no box, so every image query mode keeps the whole image).
"""
from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.datasets import register
from retrieval.datasets.listing import is_hidden, is_image_name
from retrieval.images import not_regular, require_files
from retrieval.records import Dataset, Instance, QueryTruth, Record

ATTRIBUTES = ("color", "context", "density", "existence", "quantity", "shape")
GALLERY_LIST = "patternnet.csv"
ATTRIBUTE_FOLDER = "PatternCom"
RELEVANCE_MODES = ("any", "reference")
"""How an image listed several times in one attribute file counts (module docstring)."""

CLASS_MERGES = {
    "denseresidential": "residential",
    "sparseresidential": "residential",
    "closedroad": "road",
    "intersection": "road",
    "bridge": "roadpass",
    "overpass": "roadpass",
    "ferryterminal": "pier",
    "harbor": "pier",
    "parkingspace": "parking",
    "parkinglot": "parking",
}
"""Classes merged when deciding relevance, in every attribute file (rscir `utils.class_mapping`)."""

GROUP_MERGES = {
    "density": ("denseresidential", "sparseresidential"),
    "shape": ("closedroad", "intersection"),
    "context": ("bridge", "overpass"),
    "existence": ("ferryterminal", "harbor", "parkingspace", "parkinglot"),
}
"""Attribute file -> the classes merged (as in `CLASS_MERGES`) when grouping its rows into
attribute groups (rscir `utils.fix_query_attributelabels`); other files merge none."""


def layout_help(root: Path) -> str:
    return (
        "Expected layout (the rscir reference's PatternNet/ folder):\n"
        f"  {root}/images/<class>/<name>.jpg            PatternNet images (38 classes x 800)\n"
        f"  {root}/{GALLERY_LIST}                       optional: 'path unused class' per line, the database order\n"
        f"  {root}/{ATTRIBUTE_FOLDER}/<attribute>.csv   rows 'filename,attribute,value' for "
        f"{', '.join(ATTRIBUTES)}\n"
        f"  ({root}/PatternNet/ holding images/, with {ATTRIBUTE_FOLDER}/ inside it or beside it, works too)\n"
        "Downloads (PatternNet, patternnet.csv, PatternCom): the Datasets section of "
        "https://github.com/billpsomas/rscir"
    )


def class_of(filename: str) -> str:
    """PatternNet class of a file name, as the reference reads it: the part before the first
    digit (`baseballfield012.jpg` -> `baseballfield`; folder names keep their underscores)."""
    return re.split(r"\d", filename)[0]


def merged_class(name: str) -> str:
    return CLASS_MERGES.get(name, name)


@dataclass(frozen=True)
class Row:
    line: int
    filename: str
    attribute: str
    value: str


def _base_folder(root: Path) -> Path:
    for base in (root, root / "PatternNet"):
        if (base / "images").is_dir() or (base / GALLERY_LIST).is_file():
            return base
    raise FileNotFoundError(f"dataset.root={root} has neither images/ nor {GALLERY_LIST}.\n" + layout_help(root))


def _attribute_folder(root: Path, base: Path) -> Path:
    for folder in dict.fromkeys((base / ATTRIBUTE_FOLDER, root / ATTRIBUTE_FOLDER)):
        if folder.is_dir():
            return folder
    raise FileNotFoundError(f"{base / ATTRIBUTE_FOLDER} not found.\n" + layout_help(base))


def _regular_text_file(path: Path, base: Path) -> None:
    problem = not_regular(path)
    if problem:
        raise FileNotFoundError(f"{path}: {problem}, not a text file.\n" + layout_help(base))


def read_gallery_list(path: Path) -> list[str]:
    """Relative image paths of `patternnet.csv`: the first of the space-separated fields
    (path, unused, class) of each non-blank line."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3:
            raise ValueError(f"{path}:{number}: expected 'path unused class', got {line!r}")
        entries.append(fields[0])
    seen: set[str] = set()
    repeated = [entry for entry in entries if entry in seen or seen.add(entry)]
    if repeated:
        raise ValueError(f"{path}: {len(repeated)} paths listed more than once, e.g. {repeated[:3]}")
    if not entries:
        raise ValueError(f"{path} lists no images")
    return entries


def _scan_images(base: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """`images/<class>/<name>` image files sorted by path; hidden entries ignored, anything
    that is not a regular file skipped."""
    folder = base / "images"
    found = []
    for path in sorted(folder.glob("*/*"), key=lambda p: p.relative_to(folder).as_posix()):
        if not is_image_name(path) or is_hidden(path, folder):
            continue
        problem = not_regular(path)
        if problem:
            skipped.append((path.relative_to(base).as_posix(), f"{problem}, not an image file"))
            continue
        found.append(path)
    return found


def gallery_paths(base: Path, skipped: list[tuple[str, str]]) -> tuple[list[Path], str]:
    """The database images and where their list came from."""
    listing = base / GALLERY_LIST
    if listing.exists():
        _regular_text_file(listing, base)
        paths = [base / entry for entry in read_gallery_list(listing)]
        require_files(paths, f"images listed in {listing}", layout_help(base))
        return paths, GALLERY_LIST
    if not (base / "images").is_dir():
        raise FileNotFoundError(f"{base / 'images'} not found.\n" + layout_help(base))
    paths = _scan_images(base, skipped)
    if not paths:
        raise FileNotFoundError(f"no images found under {base / 'images'}/<class>/.\n" + layout_help(base))
    return paths, "images/<class>/ sorted by path"


def read_attribute_file(path: Path) -> list[Row]:
    """Rows `filename,attribute,value` (csv quoting; further fields ignored, blank lines
    skipped); values are kept exactly as written, as the reference compares them."""
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            for number, fields in enumerate(csv.reader(handle), start=1):
                if not fields or not any(field.strip() for field in fields):
                    continue
                if len(fields) < 3:
                    raise ValueError(f"{path}:{number}: expected 'filename,attribute,value', got {fields!r}")
                rows.append(Row(number, fields[0], fields[1], fields[2]))
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error})") from None
    return rows


def _group_class(attribute: str, row: Row) -> str:
    name = class_of(row.filename)
    if row.attribute == attribute and name in GROUP_MERGES.get(attribute, ()):
        return merged_class(name)
    return name


def _targets(rows: list[Row], by_name: dict[str, list[int]], relevance: str) -> dict[tuple[str, str], np.ndarray]:
    """(merged class, value) -> gallery indices of the images with that value."""
    if relevance == "reference":
        last = {row.filename: row.value for row in rows}
        labelled = set(last.items())
    else:
        labelled = {(row.filename, row.value) for row in rows}
    found: dict[tuple[str, str], set[int]] = defaultdict(set)
    for filename, value in labelled:
        found[(merged_class(class_of(filename)), value)].update(by_name.get(filename, ()))
    return {key: np.array(sorted(indices), dtype=np.int64) for key, indices in found.items()}


def _check_attributes(attributes: Sequence[str]) -> list[str]:
    names = list(attributes)
    if not names:
        raise ValueError("dataset.attributes is empty: give at least one of " + ", ".join(ATTRIBUTES))
    bad = [name for name in names if not name or name.startswith(".") or "/" in name or os.sep in name]
    if bad:
        raise ValueError(f"dataset.attributes: {bad} are not attribute file names (e.g. {ATTRIBUTES[0]})")
    if len(set(names)) != len(names):
        raise ValueError(f"dataset.attributes lists a name twice: {names}")
    return names


@register("patterncom")
def load(
    root: str | os.PathLike,
    attributes: Sequence[str] = ATTRIBUTES,
    relevance: str = "any",
    name: str = "patterncom",
) -> Dataset:
    """PatternCom (PatternNet + PatternCom/<attribute>.csv): composed image + text queries per attribute."""
    if relevance not in RELEVANCE_MODES:
        raise ValueError(f"relevance must be one of {RELEVANCE_MODES}, not {relevance!r}")
    names = _check_attributes(attributes)
    root = Path(root).expanduser()
    base = _base_folder(root)
    folder = _attribute_folder(root, base)
    files = {attribute: folder / f"{attribute}.csv" for attribute in names}
    absent = [path for path in files.values() if not path.exists()]
    if absent:
        raise FileNotFoundError(
            f"{len(absent)} attribute file(s) not found: {', '.join(map(str, absent))}\n" + layout_help(base)
        )
    for path in files.values():
        _regular_text_file(path, base)
    skipped: list[tuple[str, str]] = []
    paths, listed_by = gallery_paths(base, skipped)
    gallery = [Record(path=path, key=path.relative_to(base).as_posix()) for path in paths]
    by_name: dict[str, list[int]] = defaultdict(list)
    for index, path in enumerate(paths):
        by_name[path.name].append(index)

    queries: list[Record] = []
    truths: list[QueryTruth] = []
    notes: dict[str, dict[str, int]] = {}
    for attribute, path in files.items():
        rows = read_attribute_file(path)
        if not rows:
            raise ValueError(f"{path} has no rows.\n" + layout_help(base))
        groups: dict[tuple[str, str], dict[str, None]] = defaultdict(dict)
        for row in rows:
            groups[(row.attribute, _group_class(attribute, row))][row.value] = None
        targets = _targets(rows, by_name, relevance)
        empty = np.empty(0, dtype=np.int64)
        found_rows = pairs = 0
        for row in rows:
            where = by_name.get(row.filename)
            if not where:
                skipped.append((
                    f"{ATTRIBUTE_FOLDER}/{path.name}:{row.line}",
                    f"query image {row.filename!r} is not in the database ({listed_by}); its texts are not asked",
                ))
                continue
            found_rows += 1
            image = gallery[where[-1]].path  # the reference's basename -> path dict keeps the last
            target_class = merged_class(class_of(row.filename))
            for text in groups[(row.attribute, _group_class(attribute, row))]:
                if text == row.value:
                    continue
                pairs += 1
                queries.append(Record(
                    path=image,
                    key=f"{attribute}:{row.line}:{row.filename}:{text}",
                    instances=(Instance(id=f"{attribute}/{target_class}/{text}"),),
                    group=attribute,
                    text=text,
                ))
                truths.append(QueryTruth(positives=targets.get((target_class, text), empty)))
        if not found_rows:
            raise ValueError(
                f"none of the {len(rows)} file names in {path} is an image of the database "
                f"({listed_by}); the first column must be a bare file name such as "
                f"airplane001.jpg.\n" + layout_help(base)
            )
        duplicates = len(rows) - len({row.filename for row in rows})
        notes[attribute] = {"rows": len(rows), "queries": pairs, "duplicate_rows": duplicates}
    return Dataset(
        name=name,
        root=base,
        queries=queries,
        gallery=gallery,
        truth={"all": truths},
        protocol="patterncom",
        skipped=skipped,
        extra={
            "gallery_list": listed_by,
            "relevance": relevance,
            "text": "the raw attribute value, no prompt template",
            "attributes": notes,
            "queries_without_positives": sum(not len(truth.positives) for truth in truths),
        },
    )
