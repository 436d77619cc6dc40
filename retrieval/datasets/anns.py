"""VoxDet-SoIR `anns.pt` reader (docs/formats.md section 1).

The file is a pickle written by the reference builder: paths are absolute on the machine that
built it, query masks use the builder's own (sometimes inverted) row-major RLE, query boxes are
inclusive, and instance ids collide across the OWID and RoboTools sets. This adapter loads it
without executing arbitrary pickled code, repairs what it can, and reports the rest.
"""
from __future__ import annotations

import logging
import math
import os
import pickle
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from retrieval import masks
from retrieval.datasets import register
from retrieval.datasets.safe_pickle import UnsafePickleError, torch_safe_globals
from retrieval.errors import UserError, brief, unreadable
from retrieval.images import ImageError, open_image
from retrieval.records import Box, Dataset, Instance, Record, truth_by_instance

log = logging.getLogger(__name__)

LAYOUT = """\
  <root>/anns.pt                                  (or set dataset.anns=<file>)
  <root>/OWID/P1/<cat_id>/{rgb,mask}/*            OWID queries
  <root>/OWID/P2/images/*                         OWID gallery
  <root>/RoboTools/test_video/<name>_<cat_id>/{rgb,mask}/*   RoboTools queries
  <root>/RoboTools/test/<scene>/rgb/*             RoboTools gallery"""

REBUILD = "rebuild it with VoxDet-SoIR's create_dataset.py"
WHAT = "VoxDet annotation file"


class NoUsableEntry(UserError, ValueError):
    """An annotation file none of whose entries gives an image: nothing to rank, and no
    model should be loaded to find that out."""


@register("anns")
def load(
    root: str | Path,
    anns: str | Path | None = None,
    trusted: bool = False,
    sets: str | Iterable[str] | None = None,
    name: str = "voxdet",
) -> Dataset:
    """VoxDet-SoIR anns.pt instance retrieval (OWID / RoboTools; ids per set, boxes and masks).

    `root` is the folder holding OWID/ and RoboTools/; `anns` defaults to `<root>/anns.pt` and
    is read relative to `root` unless absolute; `trusted=True` allows full pickle loading;
    `sets` keeps only the named sets (e.g. ["RoboTools"]).
    """
    root = Path(os.path.normpath(Path(root).expanduser().absolute()))
    if not root.is_dir():
        raise FileNotFoundError(
            f"VoxDet root not found: {root}\nExpected layout:\n{LAYOUT}\n"
            "Set dataset.root=<folder containing OWID/ and RoboTools/>."
        )
    anns_path = root / "anns.pt" if anns is None else Path(anns).expanduser()
    if not anns_path.is_absolute():
        anns_path = root / anns_path
    if not anns_path.is_file():
        raise FileNotFoundError(
            f"VoxDet annotation file not found: {anns_path}\n"
            "It is written by VoxDet-SoIR's create_dataset.py; set dataset.anns=<file> "
            "(absolute, or relative to dataset.root)."
        )
    entries = read_anns(anns_path, trusted=trusted)
    if not isinstance(entries, dict):
        raise unreadable(anns_path, WHAT, f"it holds a {type(entries).__name__}, not a dict of image path -> annotation",
                         REBUILD)
    if not entries:
        raise unreadable(anns_path, WHAT, "it holds no annotations (an empty dict)", REBUILD)

    wanted = _select_sets(entries, sets, anns_path)
    reroot = _Rerooter(root)
    queries: list[Record] = []
    gallery: list[Record] = []
    skipped: list[tuple[str, str]] = []
    dropped: list[tuple[str, str]] = []
    report: dict[str, list[str]] = {"repaired": [], "mismatched": [], "empty": []}
    seen: set[str] = set()
    for raw_key, entry in entries.items():
        if not isinstance(entry, dict):
            skipped.append((str(raw_key), f"annotation is a {type(entry).__name__}, not a dict"))
            continue
        if entry.get("set") not in wanted:
            continue
        path = reroot(str(raw_key))
        if path is None:
            skipped.append((str(raw_key), reroot.why_not(str(raw_key))))
            continue
        key = _key(path, root)
        if key in seen:
            skipped.append((str(raw_key), f"duplicate of {key}"))
            continue
        seen.add(key)
        try:
            if entry["is_query"]:
                queries.append(_query(path, key, entry, report))
            else:
                gallery.append(_gallery(path, key, entry, dropped))
        except ImageError as error:  # polygons need the image's size, from its header
            skipped.append((str(raw_key), str(error)))
        except (KeyError, TypeError, ValueError) as error:
            skipped.append((str(raw_key), f"malformed annotation: {type(error).__name__}: {error}"))

    if not queries and not gallery:
        raise _no_usable_entry(anns_path, root, skipped)
    queries.sort(key=lambda record: record.key)
    gallery.sort(key=lambda record: record.key)
    extra = _summary(anns_path, queries, gallery, reroot.rerooted, report, skipped)
    extra["dropped_annotations"] = len(dropped)
    _log(anns_path, extra, skipped + dropped)
    return Dataset(
        name=name,
        root=root,
        queries=queries,
        gallery=gallery,
        truth={"all": truth_by_instance(queries, gallery)},
        protocol="instance",
        skipped=skipped + dropped,
        extra=extra,
    )


def read_anns(path: Path, trusted: bool = False) -> Any:
    """Unpickle an anns.pt; unless `trusted`, only plain containers and numpy values may occur.

    A file that is not a torch file at all, or a damaged one, is called corrupt: `trusted`
    would not help there, and suggesting it would invite loading a file nobody checked."""
    import torch

    _check_torch_file(path)
    try:
        if trusted:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(torch_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's refusals of a type, as opposed to its reports of a broken stream
        refusal = re.search(r"[^\n]*(?:GLOBAL|allowlist|unrecognized function)[^\n]*", str(error))
        if refusal and not trusted:
            raise UnsafePickleError(
                f"refused to load {path}: it contains objects outside the safe list (plain "
                f"containers, numbers, strings, numpy scalars and arrays). "
                f"{refusal[0].removeprefix('WeightsUnpickler error: ').rstrip('.')}. "
                "Only if you trust this file, set dataset.trusted=true to load it with full pickle."
            ) from error
        detail = re.search(r"WeightsUnpickler error: ([^\n]+)", str(error))
        reason = detail[1] if detail else type(error).__name__
        raise unreadable(path, WHAT, f"corrupt ({reason})", REBUILD) from error
    except Exception as error:  # truncated zip, bad magic number, cut-off pickle
        raise unreadable(path, WHAT, f"corrupt ({brief(error)})", REBUILD) from error


def _check_torch_file(path: Path) -> None:
    """torch.save writes a zip archive, or (legacy format) a pickle stream; anything else is
    not an anns.pt, whatever torch would make of it."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise unreadable(path, WHAT, "it is empty (0 bytes)", REBUILD)
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        raise unreadable(
            path, WHAT, f"not a torch file (neither a torch.save zip archive nor a pickle: it starts with {head!r}), "
            "so corrupt or another kind of file", REBUILD,
        )


def _no_usable_entry(anns_path: Path, root: Path, skipped: list[tuple[str, str]]) -> NoUsableEntry:
    """The error for an annotation file that gives neither a query nor a gallery image (each
    entry of the selected sets was skipped, so `skipped` is not empty)."""
    recorded, reason = skipped[0]
    return NoUsableEntry(
        f"{anns_path} gives no usable image: every one of its {len(skipped)} entries was skipped "
        f"(first: {recorded}: {reason}); set dataset.root (now {root}) to the folder its image paths lead to, or {REBUILD}"
    )


def _select_sets(entries: dict, sets: str | Iterable[str] | None, anns_path: Path) -> set[Any]:
    present = {entry.get("set") for entry in entries.values() if isinstance(entry, dict)}
    if sets is None:
        return present
    # A single name (`dataset.sets=RoboTools` on the command line) is one set, not its letters.
    wanted = {sets} if isinstance(sets, str) else {str(s) for s in sets}
    unknown = wanted - present
    if unknown:
        names = ", ".join(sorted(str(s) for s in present))
        raise ValueError(f"dataset.sets: {sorted(unknown)} not in {anns_path} (it has: {names})")
    return wanted


class _Rerooter:
    """Maps recorded image paths to files under the dataset root.

    A path that does not exist, or lies outside the root, is re-rooted by its longest suffix
    that exists under the root; the foreign prefix that worked is tried first for the next
    paths, so a whole file of paths from another machine costs one extra lookup each. No path
    leads out of the root (a downloaded file must not make the toolkit read elsewhere).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.prefixes: list[tuple[str, ...]] = []
        self.rerooted = 0

    def _recorded(self, recorded: str) -> Path:
        """The recorded path as it stands, relative ones under the root, ".." resolved."""
        return Path(os.path.normpath(self.root / recorded))

    def _inside(self, path: Path) -> bool:
        """Under the root by name (symlinks inside it may point anywhere: the user made them)."""
        return path.is_relative_to(self.root)

    def __call__(self, recorded: str) -> Path | None:
        path = self._recorded(recorded)
        if self._inside(path) and path.is_file():
            return path
        parts = tuple(part for part in re.split(r"[\\/]+", recorded) if part)
        known = [len(prefix) for prefix in self.prefixes if parts[: len(prefix)] == prefix]
        for start in known + list(range(1, len(parts))):
            candidate = Path(os.path.normpath(self.root.joinpath(*parts[start:])))
            if self._inside(candidate) and candidate.is_file():
                self.rerooted += 1
                if parts[:start] not in self.prefixes:
                    self.prefixes.append(parts[:start])
                return candidate
        return None

    def why_not(self, recorded: str) -> str:
        """Why `recorded` gave no image, for the skip list."""
        path = self._recorded(recorded)
        if not self._inside(path) and path.exists():
            return (
                f"outside dataset.root ({self.root}), and no file under the root matches the end "
                "of its path; not read"
            )
        return "image not found, not even re-rooted under the root"


def _key(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _instance_id(entry: dict, ins: Any) -> str:
    return f"{entry['set']}/{int(ins)}"


def _query(path: Path, key: str, entry: dict, report: dict[str, list[str]]) -> Record:
    """One query: the builder's inclusive bbox becomes exclusive, and its mask is read the way
    that agrees with that bbox (which repairs the builder's missing leading zero-run)."""
    x1, y1, x2, y2 = _box(entry["bbox"])
    box: Box = (x1, y1, x2 + 1, y2 + 1)
    instance_id = _instance_id(entry, entry["ins"])
    ref = entry.get("mask")
    if not _has_mask(ref):
        return Record(path, key, (Instance(instance_id, box),), entry["set"])
    if isinstance(ref, dict) and "transpose" in ref and isinstance(ref.get("counts"), list):
        size = (int(ref["size"][0]), int(ref["size"][1]))
        column_major = bool(ref["transpose"])
        mask = masks.decode_runs(ref["counts"], size, column_major)
        if masks.tight_box(mask) != box:
            inverted = masks.decode_runs(ref["counts"], size, column_major, first_value=True)
            if masks.tight_box(inverted) == box:
                mask = inverted
                report["repaired"].append(key)
    else:
        mask = masks.decode(ref, _image_size(path) if isinstance(ref, list) else None)
    found = masks.tight_box(mask)
    if found is None:
        # The builder writes (0, 0, W, H) for an empty mask: there is nothing to point at, so
        # the query is the whole image, without a mask.
        report["empty"].append(key)
        height, width = mask.shape
        return Record(path, key, (Instance(instance_id, (0, 0, width, height)),), entry["set"])
    if found != box:
        report["mismatched"].append(key)
    return Record(path, key, (Instance(instance_id, box, masks.encode(mask)),), entry["set"])


def _gallery(path: Path, key: str, entry: dict, dropped: list[tuple[str, str]]) -> Record:
    """One gallery image: one instance per annotation, boxes already exclusive, masks if any.

    A malformed annotation (a NaN box, an undecodable mask) costs only itself: it is added to
    `dropped` with its reason, and the image keeps its other objects."""
    boxes, ids = list(entry["bbox"]), list(entry["ins"])
    refs = [] if entry.get("mask") is None else list(entry["mask"])
    if len(boxes) != len(ids):
        raise ValueError(f"{len(boxes)} boxes but {len(ids)} instance ids")
    if refs and len(refs) != len(boxes):
        raise ValueError(f"{len(refs)} masks but {len(boxes)} boxes")
    polygons = any(isinstance(ref, list) and _has_mask(ref) for ref in refs)
    size = _image_size(path) if polygons else None
    instances = []
    for index, (box, ins) in enumerate(zip(boxes, ids)):
        ref = refs[index] if refs else None
        try:
            # Stored as compressed COCO RLE: small, and the same form as every other mask.
            mask = masks.encode(ref, size) if _has_mask(ref) else None
            instances.append(Instance(_instance_id(entry, ins), _box(box), mask))
        except (KeyError, TypeError, ValueError) as error:
            dropped.append((key, f"annotation {index} dropped: {error}"))
    return Record(path, key, tuple(instances), entry["set"])


def _box(raw: Any) -> tuple[int, int, int, int]:
    """Four finite, ordered pixel coordinates, or a ValueError that says which rule fails."""
    values = [float(v) for v in raw]
    shown = "(" + ", ".join(f"{v:g}" for v in values) + ")"
    if len(values) != 4:
        raise ValueError(f"box {shown} does not have 4 coordinates")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"box {shown} is not finite")
    x1, y1, x2, y2 = values
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box {shown} is inverted (x2 < x1 or y2 < y1)")
    return int(x1), int(y1), int(x2), int(y2)


def _has_mask(ref: Any) -> bool:
    """The builder writes `[]` (RoboTools) or nothing where an annotation has no mask."""
    return ref is not None and not (isinstance(ref, list) and not ref)


def _image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the image header; polygons need it to be rasterised."""
    with open_image(path) as (image, _):
        return image.height, image.width


def _summary(
    anns_path: Path,
    queries: list[Record],
    gallery: list[Record],
    rerooted: int,
    report: dict[str, list[str]],
    skipped: list[tuple[str, str]],
) -> dict[str, Any]:
    query_sets = Counter(record.group for record in queries)
    gallery_sets = Counter(record.group for record in gallery)
    return {
        "anns": str(anns_path),
        "sets": {
            group: {"queries": query_sets[group], "gallery": gallery_sets[group]}
            for group in sorted(set(query_sets) | set(gallery_sets))
        },
        "rerooted_paths": rerooted,
        "mask_repairs": len(report["repaired"]),
        "repaired_queries": sorted(report["repaired"]),
        "mask_box_mismatches": sorted(report["mismatched"]),
        "empty_query_masks": sorted(report["empty"]),
        "skipped_entries": len(skipped),
    }


def _log(anns_path: Path, extra: dict[str, Any], skipped: list[tuple[str, str]]) -> None:
    counts = ", ".join(
        f"{group}: {n['queries']} queries / {n['gallery']} gallery"
        for group, n in extra["sets"].items()
    )
    log.info("%s: %s; %d paths re-rooted", anns_path, counts, extra["rerooted_paths"])
    if extra["mask_repairs"]:
        log.info(
            "repaired %d query masks with the builder's missing leading zero-run: %s",
            extra["mask_repairs"],
            ", ".join(extra["repaired_queries"]),
        )
    if extra["mask_box_mismatches"]:
        log.warning(
            "%d query masks match their bbox in neither reading: %s",
            len(extra["mask_box_mismatches"]),
            ", ".join(extra["mask_box_mismatches"][:5]),
        )
    if extra["empty_query_masks"]:
        log.warning(
            "%d queries have an empty mask; they use the whole image: %s",
            len(extra["empty_query_masks"]),
            ", ".join(extra["empty_query_masks"][:5]),
        )
    if skipped:
        shown = "; ".join(f"{recorded}: {reason}" for recorded, reason in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        log.warning("skipped %d entries or annotations of %s: %s%s", len(skipped), anns_path, shown, more)
