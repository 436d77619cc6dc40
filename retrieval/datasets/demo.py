"""The built-in demo set: composed from scikit-image's photos on first use, read as anns.pt."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

from retrieval.artifacts import config_key, writable
from retrieval.config.rules import Rule
from retrieval.datasets import load_dataset, register
from retrieval.records import Dataset
from retrieval.scenes.write import compose, is_current, set_params
from retrieval.scenes.plan import DEMO_SPEC
from retrieval.scenes.sources import skimage_backgrounds, skimage_objects


def demo_dataset_root(cache: Path, seed: int = 0) -> Path:
    """Root of the built-in demo set under `cache` (generated there on first use, ~2 s)."""
    objects, backgrounds = skimage_objects(), skimage_backgrounds()
    spec = replace(DEMO_SPEC, seed=seed)
    params = set_params(objects, backgrounds, spec)
    out = Path(cache).expanduser() / "demo" / config_key(params)
    if not is_current(out, params):
        writable(out.parent)  # generated into the cache: a read-only one is one line
    return compose(objects, backgrounds, spec, out)


@register("demo")
def load(root: str | Path | None = None, cache: str | Path = "cache/datasets", seed: Annotated[int, Rule(low=0)] = 0,
         name: str = "demo") -> Dataset:
    """The built-in demo set: 8 objects cut from scikit-image photos, 40 composed scenes.

    Generated on first use into `root`, or else into `<cache>/demo/<key>/`; read back with the
    "anns" adapter like any composed set."""
    if root is None:
        folder = demo_dataset_root(Path(cache), seed)
    else:
        spec = replace(DEMO_SPEC, seed=seed)
        folder = compose(skimage_objects(), skimage_backgrounds(), spec, Path(root))
    return load_dataset("anns", root=folder, name=name)
