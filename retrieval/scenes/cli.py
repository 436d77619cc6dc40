"""`python -m retrieval.datasets compose|route ...`: write a composed set or a route set from the
command line."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from retrieval.artifacts import read_json
from retrieval.scenes.write import COMPOSE_JSON, compose, is_current, set_params
from retrieval.scenes.plan import DEMO_SPEC, ComposeSpec
from retrieval.scenes.route import PHOTOS, ROUTE_JSON, RouteSpec, build_route, route_params
from retrieval.scenes.route import is_current as is_route_current
from retrieval.scenes.sources import folder_backgrounds, folder_objects, skimage_backgrounds, skimage_objects


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.datasets compose",
        description="Paste masked objects into scenes; write a VoxDet-format anns.pt set.",
    )
    parser.add_argument(
        "--objects", required=True, help='"skimage" (demo objects) or a folder with images/ and masks/'
    )
    parser.add_argument("--backgrounds", default="skimage", help='"skimage" or a folder of images')
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--scenes", type=int)
    parser.add_argument("--instances", type=int, help="instances with queries (default: all)")
    parser.add_argument("--queries-per-instance", type=int)
    parser.add_argument("--objects-per-scene", type=int, nargs=2, metavar=("MIN", "MAX"))
    parser.add_argument(
        "--distractors", type=int, nargs=2, metavar=("MIN", "MAX"), dest="distractors_per_scene"
    )
    parser.add_argument("--size", type=int, nargs=2, metavar=("W", "H"), dest="scene_size")
    parser.add_argument("--query-size", type=int)
    parser.add_argument("--area", type=float, nargs=2, metavar=("MIN", "MAX"))
    parser.add_argument("--max-occlusion", type=float)
    parser.add_argument("--rotation", type=float)
    parser.add_argument("--lighting", type=float)
    parser.add_argument("--format", choices=("jpg", "png"), dest="scene_format")
    parser.add_argument("--set", dest="set_name")
    parser.add_argument("--seed", type=int)
    return parser


def cli(argv: list[str]) -> int:
    """`compose` command: defaults are the demo set's for skimage objects, else ComposeSpec's."""
    args = vars(_parser().parse_args(argv))
    source, background, out = args.pop("objects"), args.pop("backgrounds"), args.pop("out")
    skimage = source == "skimage"
    objects = skimage_objects() if skimage else folder_objects(Path(source))
    if background == "skimage":
        backgrounds = skimage_backgrounds()
    else:
        backgrounds = folder_backgrounds(Path(background))
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if v is not None}
    spec = replace(DEMO_SPEC if skimage else ComposeSpec(), **given)
    start = time.perf_counter()
    current = is_current(Path(out).expanduser().resolve(), set_params(objects, backgrounds, spec))
    root = compose(objects, backgrounds, spec, out)
    counts = read_json(root / COMPOSE_JSON)["counts"]
    state = "up to date" if current else f"wrote in {time.perf_counter() - start:.1f} s"
    print(f"{root} ({state}): {counts['queries']} queries of {counts['query_instances']} instances, "
          f"{counts['scenes']} scenes with {counts['objects']} objects ({counts['dropped']} dropped)")
    return 0


def _route_parser() -> argparse.ArgumentParser:
    defaults = RouteSpec()
    parser = argparse.ArgumentParser(
        prog="python -m retrieval.datasets route",
        description="Cut a place-recognition route from scikit-image's photos: overlapping database crops "
                    "along a path across each photo, queries near them from another viewpoint and under "
                    "other light; positions in the file names (read with dataset=vpr dataset.root=OUT).",
    )
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--photos", nargs="+", help=f"default: all of {' '.join(PHOTOS)}")
    parser.add_argument("--photo-height", type=int, help=f"each photo's height in pixels = metres (default {defaults.photo_height})")
    parser.add_argument("--crop", type=int, help=f"crop side, metres (default {defaults.crop})")
    parser.add_argument("--step", type=float, help=f"database spacing along the path, metres (default {defaults.step:g})")
    parser.add_argument("--queries-per-photo", type=int, help=f"default {defaults.queries_per_photo}")
    parser.add_argument("--lateral", type=float, help=f"largest query offset across the path, metres (default {defaults.lateral:g})")
    parser.add_argument("--rotation", type=float, help=f"largest query rotation, degrees (default {defaults.rotation:g})")
    parser.add_argument("--zoom", type=float, help=f"largest query zoom factor (default {defaults.zoom:g})")
    parser.add_argument("--tilt", type=float, help=f"query perspective corner jitter, fraction of the side (default {defaults.tilt:g})")
    parser.add_argument("--gamma", type=float, help=f"largest query gamma factor (default {defaults.gamma:g})")
    parser.add_argument("--lighting", type=float, help=f"query brightness/contrast/colour jitter (default {defaults.lighting:g})")
    parser.add_argument("--format", choices=("jpg", "png"), dest="image_format")
    parser.add_argument("--seed", type=int)
    return parser


def route_cli(argv: list[str]) -> int:
    """`route` command: RouteSpec's defaults for whatever is not given."""
    parser = _route_parser()
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items() if v is not None}
    try:
        spec = RouteSpec(**given)
    except ValueError as error:
        parser.error(str(error))
    start = time.perf_counter()
    current = is_route_current(Path(out).expanduser().resolve(), route_params(spec))
    root = build_route(spec, out)
    counts = read_json(root / ROUTE_JSON)["counts"]
    state = "up to date" if current else f"wrote in {time.perf_counter() - start:.1f} s"
    print(f"{root} ({state}): {counts['database']} database and {counts['queries']} query crops of "
          f"{counts['photos']} photos; evaluate with: python evaluate.py dataset=vpr dataset.root={root}")
    return 0
