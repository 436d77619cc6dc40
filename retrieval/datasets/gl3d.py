"""GL3D matchable-image retrieval (MIRorR benchmark): an image list plus a ground-truth pair list.

Every image is a query and the whole list is the gallery, the query included, as the reference
pipeline retrieves it (docs/formats.md section 5). The query itself is put in its own junk so it is
dropped before scoring. Pairs are directed: line `i j` makes j a positive of i only. A pair on
several lines is one positive; for images with such duplicated lines, `extra["listed_positives"]`
keeps how many lines list their positives, which the protocol's `ap=reference` divides by.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import numpy as np

from retrieval.config.rules import Rule
from retrieval.datasets import register
from retrieval.images import require_files
from retrieval.protocols import LISTED_POSITIVES
from retrieval.records import Dataset, Instance, QueryTruth, Record


def layout_help(root: Path, image_list: str, pairs: str) -> str:
    return (
        f"Expected layout:\n"
        f"  {root}/{image_list}   one image path per line (relative to the image root); id = line\n"
        f"  {root}/{pairs}   lines 'i j ...': image j is a positive of image i\n"
        f"  {root}/<paths listed>\n"
        f"For where to get GL3D: python -m retrieval.datasets prepare gl3d --root {root}"
    )


def read_image_list(path: Path) -> list[str]:
    """Relative image paths; an image's id is its 0-based line, so inner blank lines are errors."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    blank = [number + 1 for number, line in enumerate(lines) if not line]
    if blank:
        raise ValueError(f"{path}: blank line(s) {blank[:5]} would shift every later image id")
    return lines


def read_pairs(path: Path, n_images: int) -> tuple[list[set[int]], list[int]]:
    """Positives per image from `i j ...` lines (i == j skipped), and per image how many lines
    list a positive of it, duplicated lines included.

    The reference (MIRorR) keeps duplicate lines and divides by that count; the `reference` AP
    of the gl3d protocol does too, and the standard one divides by the distinct positives.
    """
    positives: list[set[int]] = [set() for _ in range(n_images)]
    listed = [0] * n_images
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise ValueError(f"{path}:{number}: expected 'i j ...', got {line!r}")
        i, j = int(tokens[0]), int(tokens[1])
        if not (0 <= i < n_images and 0 <= j < n_images):
            raise ValueError(f"{path}:{number}: pair ({i}, {j}) outside 0..{n_images - 1}")
        if i == j:
            continue
        positives[i].add(j)
        listed[i] += 1
    return positives, listed


@register("gl3d")
def load(
    root: str | os.PathLike,
    image_list: Annotated[str, Rule(path=True)] = "eval_img_list.txt",
    pairs: Annotated[str, Rule(path=True)] = "gl3d_gt_pairs",
    image_root: str | os.PathLike | None = None,
    name: str = "gl3d",
) -> Dataset:
    """GL3D (eval_img_list.txt + pair list): every image queries the whole set, itself as junk."""
    root = Path(root).expanduser()
    list_file, pair_file = root / image_list, root / pairs
    for path in (list_file, pair_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found.\n" + layout_help(root, image_list, pairs))
    images_at = Path(image_root).expanduser() if image_root is not None else root
    paths = [images_at / entry for entry in read_image_list(list_file)]
    require_files(paths, "listed images", layout_help(root, image_list, pairs))
    positives, listed = read_pairs(pair_file, len(paths))
    repeated = {i: n for i, (n, found) in enumerate(zip(listed, positives)) if n != len(found)}
    keys = [os.path.relpath(path, root) for path in paths]
    return Dataset(
        name=name,
        root=root,
        queries=[
            Record(path=p, key=k, instances=(Instance(id=f"q{i}"),))
            for i, (p, k) in enumerate(zip(paths, keys))
        ],
        gallery=[Record(path=p, key=k) for p, k in zip(paths, keys)],
        truth={
            "all": [
                QueryTruth(
                    positives=np.array(sorted(found), dtype=np.int64),
                    junk=np.array([i], dtype=np.int64),
                )
                for i, found in enumerate(positives)
            ]
        },
        protocol="gl3d",
        extra={
            "query_in_gallery": True,
            "duplicate_pairs": sum(n - len(positives[i]) for i, n in repeated.items()),
            "queries_without_positives": sum(not found for found in positives),
            **({LISTED_POSITIVES: {"all": repeated}} if repeated else {}),
        },
    )
