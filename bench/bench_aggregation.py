"""ETH-80 instance retrieval with the aggregations of `retrieval.aggregation` beside the model's
own descriptor, straight from the library (no pipeline): leave-one-out mAP over six views of
every object, with the vocabulary and the whitenings fitted on four other views of every
object (held out), and the seconds each encoding adds per image to the backbone pass.

    python bench/bench_aggregation.py --data /path/to/eth80 [--input-size 224] [--words 32]
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from retrieval.aggregation.dense import dense_maps, sample_descriptors
from retrieval.aggregation.rmac import regional_vectors, rmac
from retrieval.aggregation.vlad import fit_vocabulary, vlad_map
from retrieval.aggregation.whitening import fit_whitening, whiten
from retrieval.metrics import average_precision
from retrieval.models import create_model
from retrieval.models.transform import prepare

EVAL_VIEWS = ("000-000", "022-270", "045-180", "066-117", "090-068", "090-292")
FIT_VIEWS = ("022-090", "035-135", "066-297", "090-202")


def load_maps(model, folder: Path, views: tuple[str, ...], batch: int = 32) -> tuple[list[torch.Tensor], list[str], float]:
    """Each instance's `views` as dense maps, their instance names, and backbone seconds per image."""
    paths = sorted(p for instance in sorted((folder / "images").iterdir()) for p in instance.glob("*.png")
                   if p.stem.split("-", 1)[1] in views)
    pixels = [torch.from_numpy(prepare(np.asarray(Image.open(p).convert("RGB")), model.preprocess).transpose(2, 0, 1).copy()) for p in paths]
    started, maps = time.perf_counter(), []
    for start in range(0, len(pixels), batch):
        maps += list(dense_maps(model, torch.stack(pixels[start : start + batch])))
    return maps, [p.parent.name for p in paths], (time.perf_counter() - started) / len(paths)


def leave_one_out_map(vectors: torch.Tensor, labels: list[str]) -> float:
    vectors = F.normalize(vectors.float(), dim=1)
    similarity = vectors @ vectors.T
    similarity.fill_diagonal_(-float("inf"))
    aps = []
    for query, row in enumerate(similarity):
        ranked = torch.argsort(row, descending=True)[:-1].numpy()
        positives = [i for i, label in enumerate(labels) if label == labels[query] and i != query]
        aps.append(average_precision(ranked, positives))
    return float(np.mean(aps))


def encode(maps: list[torch.Tensor], encoder: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    vectors = torch.stack([encoder(m) for m in maps])
    return vectors, (time.perf_counter() - started) / len(maps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="ETH-80: images/<instance>/<instance>-<a>-<b>.png")
    parser.add_argument("--input-size", type=int, default=224)
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = create_model("effnet_lite", input_size=args.input_size)
    maps, labels, backbone = load_maps(model, args.data, EVAL_VIEWS)
    fit_maps, _, _ = load_maps(model, args.data, FIT_VIEWS)
    vocabulary = fit_vocabulary(sample_descriptors(fit_maps, 16, args.seed), args.words, seed=args.seed)
    region_whitening = fit_whitening(torch.cat([regional_vectors(m) for m in fit_maps]), 256)
    vlads = torch.stack([vlad_map(m, vocabulary) for m in fit_maps])
    vlad_whitening = fit_whitening(vlads, min(256, len(vlads) - 1))
    methods: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "gem (model's own)": lambda m: model.pool(m[None])[0],
        "mac": lambda m: m.amax(dim=(1, 2)),
        f"vlad K={args.words}": lambda m: vlad_map(m, vocabulary),
        f"vlad K={args.words} + pca-w 256": lambda m: whiten(vlad_map(m, vocabulary)[None], vlad_whitening)[0],
        "rmac (no whitening)": rmac,
        "rmac + pca-w 256": lambda m: rmac(m, region_whitening),
    }
    print(f"{len(maps)} images, {len(set(labels))} objects; maps {tuple(maps[0].shape)}; backbone {backbone * 1000:.1f} ms/image")
    print(f"{'method':32s} {'mAP':>6s} {'dim':>6s} {'ms/image':>9s}")
    for name, encoder in methods.items():
        vectors, seconds = encode(maps, encoder)
        print(f"{name:32s} {100 * leave_one_out_map(vectors, labels):6.2f} {vectors.shape[1]:6d} {seconds * 1000:9.2f}")


if __name__ == "__main__":
    main()
