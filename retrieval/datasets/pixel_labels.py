"""Pixel-retrieval ground truth for Revisited Oxford and Paris (PROxford / PRParis, An et al.,
ICCV 2023): where each query's landmark is in each of its positive images.

The release holds `<city>_pair2labelpath.npy`, a pickled dict "{query}_{gallery index}" ->
LabelMe JSON path (relative to the release folder), and those JSON files, whose polygons
(`shapes[*].points`, pixel [x, y]) together outline the landmark. Here each pair becomes an
`Instance` of the query's id in the gallery image, with the union of its polygons as mask,
so the localisation metrics (docs/formats.md sections 7 and 8) score region-level rankings on it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from retrieval.datasets.safe_pickle import REDOWNLOAD, load_npy
from retrieval.errors import brief, unreadable
from retrieval.images import open_image
from retrieval.masks import encode
from retrieval.records import Instance

PAIR_FILES = {"roxford5k": "oxford_pair2labelpath.npy", "rparis6k": "paris_pair2labelpath.npy"}


def read_pair_labels(path: Path) -> dict[str, str]:
    """The "{query}_{gallery index}" -> label path dict of a pair file: a pickled object array,
    read without running code (a label index has no reason to)."""
    index = load_npy(path)
    what = "pixel-label index"
    if index.dtype != np.dtype(object):
        raise unreadable(path, what, f"it holds a {index.dtype} array, not a pickled dict", REDOWNLOAD)
    labels = index.item() if index.size == 1 else index
    if not isinstance(labels, dict):
        raise unreadable(path, what, f"it holds a {type(labels).__name__}, not a dict of label paths", REDOWNLOAD)
    return {str(k): str(v) for k, v in labels.items()}


def labelme_polygons(path: Path) -> list[list[float]]:
    """Every shape of a LabelMe JSON as a flat COCO polygon [x1, y1, x2, y2, ...]."""
    try:
        shapes = json.loads(Path(path).read_text(encoding="utf-8")).get("shapes", [])
    except (OSError, ValueError) as error:  # missing, not UTF-8, not JSON
        raise unreadable(path, "LabelMe label file", brief(error), REDOWNLOAD) from None
    return [[float(v) for point in shape["points"] for v in point] for shape in shapes if len(shape.get("points", [])) >= 3]


def pixel_instances(release: Path, name: str, gallery_images: list[Path]) -> dict[int, list[Instance]]:
    """Gallery index -> the query instances outlined in it (id "q<query>", mask as RLE)."""
    if name not in PAIR_FILES:
        raise ValueError(f"pixel labels exist for {sorted(PAIR_FILES)}, not {name!r}")
    pair_file = Path(release) / PAIR_FILES[name]
    if not pair_file.is_file():
        raise FileNotFoundError(
            f"{pair_file} not found. dataset.pixel_labels must be the unpacked PROxford/PRParis "
            "release (pixel_retrieval_benchmarks/, from github.com/anguoyuan/"
            "Pixel_retrieval-Segmented_instance_retrieval), holding "
            f"{' and '.join(PAIR_FILES.values())} and the label JSON files"
        )
    found: dict[int, list[Instance]] = {}
    sizes: dict[int, tuple[int, int]] = {}  # an image is a positive of several queries: read its header once
    for pair, label in sorted(read_pair_labels(pair_file).items()):
        query, gallery = (int(part) for part in pair.split("_"))
        if not 0 <= gallery < len(gallery_images):
            raise ValueError(f"{pair_file}: pair {pair} names gallery image {gallery} of {len(gallery_images)}")
        if gallery not in sizes:
            with open_image(gallery_images[gallery]) as (image, _):
                sizes[gallery] = (image.height, image.width)
        mask = encode(labelme_polygons(Path(release) / label), sizes[gallery])
        found.setdefault(gallery, []).append(Instance(id=f"q{query}", mask=mask))
    return found
