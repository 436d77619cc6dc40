"""Query modes: which pixels of a query image describe the object asked for, and what else a
query may say in words.

Each image mode is a function `(image, instance) -> image` registered by name; gallery images
are always embedded whole (`full`). A mode that cannot apply (an empty mask, a box entirely
outside the image) raises `QueryError`, which extraction counts and skips.

Two query kinds are not image modes (`TEXT_KINDS`): `text` (the query's words alone) and
`composed` (an image part, cut out by the image mode `query.cut`, plus words). `query_spec`
reads a `query` config node into those parts. Their words come from the dataset's query
records (`Record.text`) or from a query file (`query.file`), which also brings the truth of
its queries: `with_query_file` is where a dataset's queries and truth are replaced.
"""
from __future__ import annotations

import csv
import inspect
import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import UserError
from retrieval.records import Box, Dataset, Instance, QueryTruth, Record
from retrieval.registry import Registry

log = logging.getLogger(__name__)


class QueryError(Exception):
    """A query whose object cannot be cut out as asked."""


QueryFn = Callable[..., np.ndarray]
"""(image HxWx3 uint8, the query's instance or None, **options) -> the pixels to embed."""

FILLS = ("mean", "blur")
"""query.fill of the mask mode, besides a constant 0..255."""

MODES: Registry[QueryFn] = Registry("query mode", __name__)
register = MODES.register


def reads(*annotations: str, requires: bool = False) -> Callable[[QueryFn], QueryFn]:
    """Declare which of the instance's annotations ("box", "mask") a mode cuts out with, and
    whether it cannot work without them; see `returns_whole_image`."""

    def mark(mode: QueryFn) -> QueryFn:
        mode.reads, mode.requires = annotations, requires  # type: ignore[attr-defined]
        return mode

    return mark


def returns_whole_image(mode: QueryFn, instance: Instance | None) -> bool:
    """Whether `mode` gives the image unchanged for this instance (it reads no annotation the
    instance has), so the query's vector is the gallery's vector of the same image."""
    if getattr(mode, "requires", True):
        return False
    present = {"box": instance is not None and instance.box is not None,
               "mask": instance is not None and instance.mask is not None}
    return not any(present[name] for name in getattr(mode, "reads", ("box", "mask")))
available = MODES.available
get_query_mode = MODES.get


class UnreadableMaskError(QueryError):
    """The instance's mask cannot be decoded for this image (a mask file that is missing or not
    an image, or a mask of another size): `box` falls back as if there were no mask."""


def _checked_box(box: Box) -> tuple[float, float, float, float]:
    """The box as floats, or a QueryError that says what is wrong with it."""
    x1, y1, x2, y2 = (float(v) for v in box)
    shown = "(" + ", ".join(f"{v:g}" for v in (x1, y1, x2, y2)) + ")"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise QueryError(f"box {shown} has a non-finite coordinate")
    if x2 < x1 or y2 < y1:
        raise QueryError(f"box {shown} is inverted (x2 < x1 or y2 < y1); boxes are (x1, y1, x2, y2)")
    if x2 == x1 or y2 == y1:
        raise QueryError(f"box {shown} is empty (zero width or height)")
    return x1, y1, x2, y2


def _pixel_box(box: Box, shape: tuple[int, ...], margin: float = 0.0) -> tuple[int, int, int, int]:
    """Round like Pillow's `crop` (half to even), after growing by `margin` x box size; clip."""
    x1, y1, x2, y2 = _checked_box(box)
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    height, width = shape[:2]
    left, top = max(round(x1 - dx), 0), max(round(y1 - dy), 0)
    right, bottom = min(round(x2 + dx), width), min(round(y2 + dy), height)
    if right <= left or bottom <= top:
        raise QueryError(f"box {tuple(box)} lies outside the {width}x{height} image")
    return left, top, right, bottom


def _object_mask(image: np.ndarray, instance: Instance | None) -> np.ndarray:
    from retrieval.masks import decode

    if instance is None or instance.mask is None:
        raise QueryError("query mode 'mask' needs a mask; this query has none (use query=box)")
    try:
        mask = decode(instance.mask, image.shape[:2])
    except OSError as error:  # masks.MaskFileError, or a mask file gone since loading
        raise UnreadableMaskError(str(error)) from error
    except ValueError as error:  # a mask of another size than its image, or a corrupt RLE
        raise UnreadableMaskError(f"unusable mask: {error}") from error
    if not mask.any():
        raise QueryError("empty mask")
    return mask


def _box_of(image: np.ndarray, instance: Instance | None) -> Box | None:
    if instance is None:
        return None
    if instance.box is not None:
        return instance.box
    if instance.mask is not None:
        from retrieval.masks import tight_box

        try:
            return tight_box(_object_mask(image, instance))
        except UnreadableMaskError as error:
            log.warning("%s; the query uses the whole image, as without a mask", error)
    return None


@register("full")
@reads()
def full_image(image: np.ndarray, instance: Instance | None, **_: Any) -> np.ndarray:
    """The whole image, as the gallery is embedded."""
    return image


@register("box")
@reads("box", "mask")
def box_crop(image: np.ndarray, instance: Instance | None, margin: float = 0.0, **_: Any) -> np.ndarray:
    """Crop to the object's box grown by `margin` x its size (whole image if it has no box)."""
    box = _box_of(image, instance)
    if box is None:
        return image
    left, top, right, bottom = _pixel_box(box, image.shape, margin)
    return image[top:bottom, left:right]


@register("mask")
@reads("mask", "box", requires=True)
def masked_crop(
    image: np.ndarray,
    instance: Instance | None,
    margin: float = 0.0,
    fill: str | float = "mean",
    blur_sigma: float = 8.0,
    **_: Any,
) -> np.ndarray:
    """Crop to the box and replace the background: a constant, the image mean, or a blur."""
    mask = _object_mask(image, instance)
    if fill == "mean":
        background = np.broadcast_to(image.reshape(-1, 3).mean(0).round().astype(np.uint8), image.shape)
    elif fill == "blur":
        import cv2

        background = cv2.GaussianBlur(image, (0, 0), sigmaX=blur_sigma)
    else:
        background = np.full_like(image, int(fill))
    filled = np.where(mask[..., None], image, background)
    left, top, right, bottom = _pixel_box(_box_of(image, instance), image.shape, margin)
    return filled[top:bottom, left:right]


@register("square")
@reads("box", "mask")
def square_crop(image: np.ndarray, instance: Instance | None, **_: Any) -> np.ndarray:
    """Find-your-Needle reference: square of side max(w, h) centred on the box, zero padding."""
    box = _box_of(image, instance)
    if box is None:
        return image
    x1, y1, x2, y2 = _checked_box(box)
    side = max(x2 - x1, y2 - y1)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    # floor, not int(): truncation toward zero would shrink the square where it leaves the image
    left, top = math.floor(cx - side / 2), math.floor(cy - side / 2)
    right, bottom = math.floor(cx + side / 2), math.floor(cy + side / 2)
    height, width = image.shape[:2]
    canvas = np.zeros((bottom - top, right - left, 3), dtype=image.dtype)
    sx1, sy1, sx2, sy2 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    if sx2 <= sx1 or sy2 <= sy1:
        raise QueryError(f"box {tuple(box)} lies outside the {width}x{height} image")
    canvas[sy1 - top : sy2 - top, sx1 - left : sx2 - left] = image[sy1:sy2, sx1:sx2]
    return canvas


# ---------------------------------------------------------------- words: text and composed queries

TEXT_KINDS = ("text", "composed")
"""query.name values that are not image modes: the words alone (embedded by the text tower of
the model that embedded the gallery), or an image part (cut out by the image mode
`query.cut`) and words, whose similarities `query.combine` combines."""
COMPOSED_KEYS = ("cut", "combine", "lambda")
"""Keys of query=composed besides name, file and the cut mode's own options."""
NO_IMAGE = Path()
"""The `path` of a query that has only words (a text-only row of a query file)."""


@dataclass(frozen=True)
class QuerySpec:
    """A `query` config node, read into the parts of a query."""

    name: str
    image_mode: str | None
    """The image mode that cuts out the image part; None when the query has no image."""
    image_options: dict[str, Any]
    """That mode's options."""
    text: bool
    """Whether the query has words, embedded by the model's text tower."""
    combine: str | None = None
    """composed: the name of the combination method (`retrieval.composed.COMBINATIONS`)."""
    weight: float | None = None
    """composed: `query.lambda`, the weight of the text similarity."""
    file: str | None = None
    """text, composed: the query file that replaces the dataset's queries and truth."""

    @property
    def composed(self) -> bool:
        """An image part and words: two query vectors, combined at search time."""
        return self.text and self.image_mode is not None


def query_spec(node: Mapping[str, Any]) -> QuerySpec:
    """The parts a `query` node asks for: an image mode alone, words alone, or both."""
    options = {key: value for key, value in node.items() if key != "name"}
    name = node["name"]
    if name not in TEXT_KINDS:
        return QuerySpec(name, name, _with_defaults(name, options), text=False)
    file = options.pop("file", None)
    if name == "text":
        return QuerySpec(name, None, {}, text=True, file=file)
    cut, combine, weight = (options.pop(key) for key in COMPOSED_KEYS)
    return QuerySpec(name, cut, _with_defaults(cut, options), text=True, combine=combine, weight=float(weight), file=file)


def _with_defaults(mode: str, options: dict[str, Any]) -> dict[str, Any]:
    """A mode's options with its own defaults filled in, so that the same cut-out has the same
    item key whether an option was left out (query.cut=box) or stated (query=box margin=0)."""
    parameters = inspect.signature(get_query_mode(mode)).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not p.empty and p.name not in ("image", "instance")}
    return {**defaults, **options}


class QueryFileError(UserError, ValueError):
    """A query file that cannot be read into queries and truth."""


QUERY_FILE_COLUMNS = ("id", "text", "image", "box", "group", "instance", "positives")
"""id and text are required, and exactly one of instance and positives; image (a path under the
dataset root, or absolute) and box ("x1 y1 x2 y2" in a CSV, a list in JSON) are composed
queries' image part; group reports the query in a subset of its own."""


def _rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV (with a header) or JSON (a list of objects) query file."""
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise QueryFileError(f"query.file={path} is not valid JSON ({error})") from None
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise QueryFileError(f"query.file={path} must hold a JSON list of objects, one per query")
        return rows
    if path.suffix.lower() != ".csv":
        raise QueryFileError(f"query.file={path} is neither .csv nor .json: use one of them")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
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
            missing = [p for p in positives if p not in by_path and str(_under(dataset.root, p)) not in by_path]
            if missing:
                raise QueryFileError(f"{where}: positive {missing[0]!r} is not an image of the gallery of {dataset.name}")
            found = {by_path.get(p, by_path.get(str(_under(dataset.root, p)))) for p in positives}
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


def _under(root: Path, name: str) -> Path:
    """A file named in a query file: relative to the dataset root unless absolute."""
    path = Path(name)
    return (path if path.is_absolute() else Path(root) / path).resolve()
