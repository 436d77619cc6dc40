"""Composed instance-retrieval sets: real object cut-outs pasted into scenes, saved as anns.pt.

One generator serves two needs. The built-in demo set cuts 8 objects out of scikit-image's
sample photos (so it needs no download) and pastes them large into 40 scenes. Benchmarks use
any masked object folder (e.g. ETH-80, `images/<instance>/` + `masks/<instance>/`) and paste
small objects (0.5-5 % of the image) with same-category distractors and partial occlusion.

Output (keys of `anns.pt` are paths relative to `<out>`; VoxDet format, docs/formats.md section 1):

    <out>/anns.pt                    queries and gallery entries
    <out>/queries/<instance>/<n>.png one object on a plain or textured background
    <out>/scenes/<n>.jpg             2-4 objects (plus distractors) on a background crop
    <out>/compose.json               parameters, then what was pasted where (provenance)

Everything is drawn from random generators seeded by (seed, purpose, index), so a set is a
pure function of its parameters, and re-running with the same parameters does nothing.

Modules: `sources` (object cut-outs and backgrounds: scikit-image's photos or a folder), `plan`
(the parameters, and which instances and views go where), `paste` (lighting, warps and
placement with bounded occlusion: the scene and query images), `write` (the set written to
disk: anns.pt, images, compose.json), `cli` (`python -m retrieval.datasets compose` and `route`).

`route` makes the other kind of set: a place-recognition route of overlapping crops cut from
scikit-image's photos, with viewpoint and lighting change, read back by `dataset=vpr`.
"""
from retrieval.scenes.write import ANNS, COMPOSE_JSON, compose
from retrieval.scenes.plan import DEMO_SPEC, ComposeSpec
from retrieval.scenes.route import ROUTE_JSON, RouteSpec, build_route
from retrieval.scenes.sources import (
    BackgroundSource,
    Cutout,
    ObjectSource,
    folder_backgrounds,
    folder_objects,
    skimage_backgrounds,
    skimage_objects,
)

__all__ = [
    "ANNS", "COMPOSE_JSON", "DEMO_SPEC", "ROUTE_JSON", "BackgroundSource", "ComposeSpec", "Cutout", "ObjectSource",
    "RouteSpec", "build_route", "compose", "folder_backgrounds", "folder_objects", "skimage_backgrounds",
    "skimage_objects",
]
