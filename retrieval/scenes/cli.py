"""`python -m retrieval.datasets compose ...`: write a composed set from the command line."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from retrieval.artifacts import read_json
from retrieval.scenes.write import COMPOSE_JSON, compose, is_current, set_params
from retrieval.scenes.plan import DEMO_SPEC, ComposeSpec
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
