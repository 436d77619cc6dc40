"""Your own photos: `root/images/<instance_id>/*.jpg|png`, optional `root/masks/<instance_id>/<stem>.png`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from retrieval.config.rules import Rule
from retrieval.datasets import register
from retrieval.datasets.listing import is_image_name, visible_entries
from retrieval.errors import unreadable
from retrieval.images import ImageError, not_regular, open_image
from retrieval.records import Dataset, Instance, Record, truth_by_instance
from retrieval.text_files import read_utf8

log = logging.getLogger(__name__)

LAYOUT = """expected layout:
  <root>/images/<instance_id>/<name>.jpg|png     one folder per object instance
  <root>/masks/<instance_id>/<name>.png          optional: the object's mask, same stem
  <root>/queries.txt                              optional: query images, one relative path per line"""
QUERY_LIST = ("dataset.queries names a text file (under dataset.root unless absolute) listing query images as "
              "images/<instance_id>/<name>, one per line")


def _check_root(root: Path) -> None:
    if not (root / "images").is_dir():
        raise FileNotFoundError(
            f"dataset.root={root} has no images/ folder.\n{LAYOUT}\n"
            "Set it with: python evaluate.py dataset=folder dataset.root=/path/to/photos"
        )


def _find_mask(root: Path, image: Path, skipped: list[tuple[str, str]]) -> Path | None:
    """The image's mask file, if there is one that opens as an image; an unreadable one is a
    counted skip, and the image goes on without a mask."""
    relative = image.relative_to(root / "images")
    for suffix in (".png", image.suffix):
        candidate = (root / "masks" / relative).with_suffix(suffix)
        if not candidate.exists():
            continue
        try:
            with open_image(candidate):
                return candidate
        except ImageError as error:
            skipped.append((
                candidate.relative_to(root).as_posix(),
                f"unreadable mask ({error}); the image is used without a mask "
                "(query=box: the whole image; query=mask: the query is skipped)",
            ))
            return None
    return None


@register("folder")
def load_folder(
    root: str | Path,
    queries: Annotated[str | None, Rule(path=True)] = None,
    name: str = "folder",
    use_masks: bool = True,
) -> Dataset:
    """Folder of images grouped by instance; leave-one-out queries unless a query list is given."""
    root = Path(root).expanduser().resolve()
    _check_root(root)
    gallery: list[Record] = []
    skipped: list[tuple[str, str]] = []
    for folder in (p for p in visible_entries(root / "images") if p.is_dir()):
        for image in (p for p in visible_entries(folder) if is_image_name(p)):
            problem = not_regular(image)
            if problem:
                skipped.append((image.relative_to(root).as_posix(), f"{problem}, not an image file"))
                continue
            mask = _find_mask(root, image, skipped) if use_masks else None
            instance = Instance(id=folder.name, mask=str(mask) if mask else None)
            gallery.append(Record(path=image, key=image.relative_to(root).as_posix(), instances=(instance,)))
    if not gallery:
        raise FileNotFoundError(f"no images found under {root / 'images'}.\n{LAYOUT}")
    by_key = {record.key: index for index, record in enumerate(gallery)}
    if queries is None:
        query_records = gallery
        self_matches = list(range(len(gallery)))
        protocol_note = "leave-one-out: every image queries all others"
    else:
        given = Path(queries).expanduser()
        list_file = given if given.is_absolute() else root / given
        problem = not_regular(list_file)
        if problem:
            where = f"no file at {list_file}" if problem == "missing file" else f"{list_file} {problem}"
            raise FileNotFoundError(f"dataset.queries={queries}: {where}; {QUERY_LIST}")
        keys = [line.strip() for line in read_utf8(list_file, "query list").splitlines() if line.strip()]
        unknown = [key for key in keys if key not in by_key]
        if unknown:
            reason = f"{len(unknown)} of its {len(keys)} paths are not images under images/ (first: {unknown[0]})"
            raise unreadable(list_file, "query list", reason, QUERY_LIST)
        query_records = [gallery[by_key[key]] for key in keys]
        self_matches = [by_key[key] for key in keys]
        protocol_note = f"queries from {list_file.name}; each excluded from its own results"
    truth = truth_by_instance(query_records, gallery, self_matches)
    log.info("%s: %d images, %d instances (%s)", name, len(gallery), len({r.instances[0].id for r in gallery}), protocol_note)
    if skipped:
        shown = "; ".join(f"{path}: {reason}" for path, reason in skipped[:5])
        log.warning("%s: %d inputs skipped, e.g. %s", name, len(skipped), shown)
    return Dataset(name, root, query_records, gallery, {"all": truth}, skipped=skipped, extra={"queries": protocol_note})
