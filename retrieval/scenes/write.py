"""Writing a composed set: the anns.pt entries (VoxDet's encodings), the images and
compose.json, built in a temporary folder and swapped into place whole."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from retrieval.artifacts import read_json, write_json
from retrieval.masks import tight_box
from retrieval.scenes.paste import Placed, query_image, scene_image
from retrieval.scenes.plan import ComposeSpec, Plan, plan, rng_for
from retrieval.scenes.sources import BackgroundSource, ObjectSource

GENERATOR_VERSION = 1
"""Bump when the same parameters would produce different files, so old sets are rebuilt."""

COMPOSE_JSON = "compose.json"
ANNS = "anns.pt"

# ---------------------------------------------------------------------------------------------
# Encoding


def _runs(flat: np.ndarray) -> list[int]:
    """Run lengths of a flat bool array, the first run counting zeros (0 if it starts set)."""
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat.size and flat[0] else runs


def builder_rle(mask: np.ndarray) -> dict[str, Any]:
    """The VoxDet builder's query RLE, row-major, always opening with a zero-run (the
    reference omits it when pixel (0, 0) is set; we write the unambiguous form)."""
    return {"counts": _runs(mask.ravel(order="C")), "size": tuple(mask.shape), "transpose": False}


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO uncompressed RLE (column-major, int counts), as VoxDet's gallery masks."""
    return {"counts": _runs(mask.ravel(order="F")), "size": list(mask.shape)}


def inclusive_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The builder's query box: the tight box with the last pixel included."""
    x1, y1, x2, y2 = tight_box(mask)
    return x1, y1, x2 - 1, y2 - 1


# ---------------------------------------------------------------------------------------------
# Writing


def set_params(objects: ObjectSource, backgrounds: BackgroundSource, spec: ComposeSpec) -> dict[str, Any]:
    """The JSON form of everything that determines the output, compared on re-runs."""
    params = {"generator": GENERATOR_VERSION, "objects": objects.label,
              "backgrounds": backgrounds.label, **asdict(spec)}
    return json.loads(json.dumps(params))


def save_image(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        Image.fromarray(image).save(path, quality=90)
    else:
        Image.fromarray(image).save(path, compress_level=1)


def _write_queries(objects: ObjectSource, backgrounds: BackgroundSource, spec: ComposeSpec,
                   layout: Plan, tmp: Path, anns: dict) -> list[dict]:
    records = []
    for instance, views in layout.query_views.items():
        ins = layout.ids[instance]
        for n, view in enumerate(views):
            rng = rng_for(spec, 2, ins, n)
            image, mask, info = query_image(objects, backgrounds, instance, view, spec, rng)
            key = f"queries/{instance}/{n:03d}.png"
            save_image(image, tmp / key)
            anns[key] = {"bbox": inclusive_box(mask), "mask": builder_rle(mask), "ins": ins,
                         "set": spec.set_name, "is_query": True}
            records.append({"file": key, "instance": instance, "ins": ins, "view": view, **info})
    return records


def _object_record(item: Placed, ins: int, area: int) -> dict[str, Any]:
    x1, y1, x2, y2 = tight_box(item.visible)
    full, visible = int(item.patch.mask.sum()), int(item.visible.sum())
    return {
        "instance": item.paste.instance, "ins": ins, "view": item.paste.view,
        "role": item.paste.role, "box": [x1, y1, x2, y2], "position": list(item.origin),
        "area_fraction": round(full / area, 6), "visible_fraction": round(visible / area, 6),
        "occluded_fraction": round(1 - visible / full, 6), "angle": round(item.patch.angle, 3),
        "scale": round(item.patch.scale, 5), "lighting": item.light,
    }


def _write_scenes(objects: ObjectSource, backgrounds: BackgroundSource, spec: ComposeSpec,
                  layout: Plan, tmp: Path, anns: dict) -> list[dict]:
    records = []
    area = spec.scene_size[0] * spec.scene_size[1]
    for n, pastes in enumerate(layout.scenes):
        image, placed, background, dropped = scene_image(objects, backgrounds, pastes, spec, rng_for(spec, 1, n))
        key = f"scenes/{n:06d}.{spec.scene_format}"
        save_image(image, tmp / key)
        found = [_object_record(item, layout.ids[item.paste.instance], area) for item in placed]
        anns[key] = {
            "bbox": [tuple(o["box"]) for o in found],
            "mask": [coco_rle(item.visible) for item in placed],
            "ins": [o["ins"] for o in found], "num_ins": [len(found)] * len(found),
            "set": spec.set_name, "is_query": False,
        }
        records.append({"file": key, "background": background, "objects": found, "dropped": dropped})
    return records


def is_current(out: Path, params: dict[str, Any]) -> bool:
    marker = out / COMPOSE_JSON
    return marker.exists() and (out / ANNS).exists() and read_json(marker).get("params") == params


def install_folder(tmp: Path, out: Path) -> None:
    """Swap the finished folder into place; an older composed set there is replaced."""
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def write_set(out: Path, what: str, current: Callable[[Path], bool], marker: str, build: Callable[[Path], None]) -> Path:
    """Write a generated set to `out` with `build(folder)`, and return `out`: built in a temporary
    sibling folder and renamed into place, so `out` is either the old set or the complete new
    one; a no-op when `current(out)` (its `marker` file holds the same parameters). A folder
    that is not such a set (no `marker`, not empty) is refused, never replaced."""
    out = Path(out).expanduser().resolve()
    if current(out):
        return out
    if out.exists() and not (out / marker).exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not {what}; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        build(tmp)
        if not current(out):  # else another process finished the same set meanwhile
            install_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def compose(objects: ObjectSource, backgrounds: BackgroundSource, spec: ComposeSpec, out: Path) -> Path:
    """Write a composed set to `out` (anns.pt, images, compose.json) and return `out`
    (`write_set`: atomic, a no-op when `out` holds the same set)."""
    params = set_params(objects, backgrounds, spec)

    def build(tmp: Path) -> None:
        layout = plan(objects, spec)
        anns: dict[str, dict] = {}
        queries = _write_queries(objects, backgrounds, spec, layout, tmp, anns)
        scenes = _write_scenes(objects, backgrounds, spec, layout, tmp, anns)
        torch.save(anns, tmp / ANNS)
        write_json(tmp / COMPOSE_JSON, _summary(objects, params, layout, queries, scenes))

    return write_set(out, "a composed set", lambda folder: is_current(folder, params), COMPOSE_JSON, build)


def _summary(objects: ObjectSource, params: dict, layout: Plan, queries: list, scenes: list) -> dict:
    instances = {
        name: {
            "ins": ins, "category": objects.category(name),
            "role": "query" if name in layout.query_views else "distractor",
            "query_views": sorted(set(layout.query_views.get(name, ()))),
        }
        for name, ins in layout.ids.items()
    }
    counts = {
        "queries": len(queries), "scenes": len(scenes),
        "objects": sum(len(s["objects"]) for s in scenes),
        "dropped": sum(len(s["dropped"]) for s in scenes),
        "query_instances": len(layout.query_views), "instances": len(instances),
    }
    return {"params": params, "counts": counts, "instances": instances, "queries": queries,
            "scenes": scenes}
