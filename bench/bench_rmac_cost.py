"""Per-image extraction cost of `representation=rmac` against `global`, both computed
alternately on the same images so that both see the same load of a shared machine.

    python bench/bench_rmac_cost.py "tests/data/eth80/images/*/*.png"
    python bench/bench_rmac_cost.py "data/eth80-scenes60/scenes/*.jpg" --images 30

global: the model's own descriptor at its input size; rmac: the image at --input-size px along
its longer side, its dense map, R-MAC (unwhitened: the whitening is one matrix product).
Decoding, the same for both, is left out. One torch thread, the offline default model.
"""
from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout without `pip install -e .`

from retrieval.aggregation.dense import dense_maps
from retrieval.aggregation.rmac import rmac
from retrieval.images import load_rgb
from retrieval.models import create_model
from retrieval.models.transform import normalise, prepare
from retrieval.representations.dense import scene_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", help="a glob of image files (quote it)")
    parser.add_argument("--images", dest="count", type=int, default=30, help="how many of them (the first, sorted)")
    parser.add_argument("--input-size", type=int, default=512, help="rmac's representation.input_size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = create_model("effnet_lite").eval()
    paths = sorted(glob.glob(args.images))[: args.count]
    if not paths:
        parser.error(f"no image matches {args.images}")
    whole = aggregated = 0.0
    with torch.inference_mode():
        for path in paths:
            image = load_rgb(path)
            started = time.perf_counter()
            pixels = torch.from_numpy(np.ascontiguousarray(prepare(image, model.preprocess).transpose(2, 0, 1)))[None]
            model(normalise(pixels, model.preprocess))
            whole += time.perf_counter() - started
            started = time.perf_counter()
            size = scene_size(*image.shape[:2], args.input_size / max(image.shape[:2]), model.patch_size)
            scene = np.asarray(Image.fromarray(image).resize(size[::-1], Image.BICUBIC))  # as DenseImages resizes
            rmac(dense_maps(model, torch.from_numpy(np.ascontiguousarray(scene.transpose(2, 0, 1)))[None])[0])
            aggregated += time.perf_counter() - started
    print(f"{len(paths)} images: global {whole:.2f} s, rmac {aggregated:.2f} s: {aggregated / whole:.2f}x")


if __name__ == "__main__":
    main()
