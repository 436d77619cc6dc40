"""Region-level vs whole-image retrieval on a composed small-object benchmark.

    python bench/bench_regions.py                       # 500 ETH-80 scenes, effnet_lite0, CPU
    python bench/bench_regions.py --scenes 100 --skip-crop

Composes the set (or reuses it), runs each configuration through the stages (evaluate.main,
every artifact cached under --cache), and prints: mAP whole vs region, box and mask mAP@50
and mIoU, regions per image, index size, gallery extraction seconds (whole image, ROI-pooled
regions, per-crop regions) and the recall@k of the approximate indexes against exact search.
Timings are wall-clock on whatever machine this runs on; cached artifacts report the time
of the run that built them.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout without `pip install -e .`

from retrieval import artifacts
from retrieval.datasets.compose import ComposeSpec, compose, folder_objects, skimage_backgrounds
from retrieval.ranking import Ranking
from retrieval.stages import evaluate, extract
from retrieval.stages import regions as regions_stage

ETH80 = REPO.parent / "shared" / "data" / "eth80"
RECALL_KS = (10, 100)


def runs(crop_size: int | None, skip_crop: bool) -> dict[str, list[str]]:
    """Name -> overrides. Defaults of each config group are used unless named here."""
    table = {
        "whole image": ["regions=none"],
        "grid, ROI 640": ["regions=grid", "regions.input_sizes=[640]"],
        "grid, ROI 1280": ["regions=grid", "regions.input_sizes=[1280]"],
        "grid, ROI": ["regions=grid"],
        "grid+segments, ROI": ["regions=grid_segments"],
        "grid, ROI, ivfpq": ["regions=grid", "index=ivfpq"],
        "grid, ROI, hnsw": ["regions=grid", "index=hnsw"],
    }
    if not skip_crop:
        size = [f"regions.crop_size={crop_size or 'null'}"]
        table["grid, crop"] = ["regions=grid_crop", "extract.batch_size=64", *size]
        table["segments, crop"] = ["regions=segments", "regions.pooling=crop", "extract.batch_size=64", *size]
    return table


def config(root: Path, cache: Path, out: Path, overrides: list[str]):
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        return hydra_compose("config", overrides=[
            "dataset=anns", f"dataset.root={root}", "dataset.name=eth80_scenes", f"paths.cache={cache}",
            f"paths.leaderboard={out / 'leaderboard.csv'}", "eval.report=false", "extract.dtype=float16",
            "extract.batch_size=8", *overrides,
        ])


def overlap_at(approx: np.ndarray, exact: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k images that the approximate top-k also returns."""
    return float(np.mean([len(set(a[:k]) & set(e[:k]) - {-1}) / k for a, e in zip(approx, exact)]))


def measure(name: str, overrides: list[str], root: Path, cache: Path, out: Path) -> dict:
    cfg = config(root, cache, out, overrides)
    metrics = json.loads(evaluate.main(cfg, out / name.replace(", ", "-").replace(" ", "_")).read_text())
    summary, timings = metrics["summary"]["all"], metrics["timings"]
    row = {key: summary.get(key) for key in ("mAP", "box_mAP@50", "box_mIoU", "mask_mAP@50", "mask_mIoU")}
    if regions_stage.enabled(cfg):
        meta = artifacts.read_meta(regions_stage.extract_main(cfg))
        row.update(regions_per_image=meta["regions_per_image"]["mean"], extract_seconds=meta["seconds"],
                   index_mb=timings["index_bytes"] / 2**20)
    else:
        meta = artifacts.read_meta(extract.main(cfg, "gallery"))
        row.update(regions_per_image=1, extract_seconds=meta["seconds"],
                   index_mb=meta["dim"] * meta["count"] * np.dtype(cfg["extract"]["dtype"]).itemsize / 2**20)
    row.update(search_seconds=timings.get("search_seconds"), ranking=metrics["ranking"])
    return row


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=REPO / "cache" / "bench" / "eth80-500")
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--cache", type=Path, default=REPO / "cache")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_regions")
    parser.add_argument("--crop-size", type=int, default=160,
                        help="crop pooling: side each region is resized to (0 = the model's input size)")
    parser.add_argument("--skip-crop", action="store_true", help="leave out the (slow) per-crop runs")
    args = parser.parse_args()
    root = compose(folder_objects(ETH80), skimage_backgrounds(), replace(ComposeSpec(), scenes=args.scenes), args.root)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, overrides in runs(args.crop_size or None, args.skip_crop).items():
        rows[name] = measure(name, overrides, root, args.cache, args.out)
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    exact = Ranking.load(Path(rows["grid, ROI"]["ranking"])).indices
    for name in ("grid, ROI, ivfpq", "grid, ROI, hnsw"):
        approx = Ranking.load(Path(rows[name]["ranking"])).indices
        rows[name].update({f"recall@{k}": overlap_at(approx, exact, k) for k in RECALL_KS})
    whole = rows["whole image"]
    print(f"\n{root}: {args.scenes} scenes; model effnet_lite0 (default), query=box, float16 vectors; "
          f"ROI = the default pyramid (passes of longer side 640 and 1280) unless a size is named; "
          f"extraction seconds are wall-clock for the gallery; crop runs at crop_size={args.crop_size or 'model'}\n")
    header = ["run", "mAP", "vs whole", "box mAP@50", "box mIoU", "mask mAP@50", "mask mIoU", "regions/img", "index MB", "extract s", "x whole", "search s",
              *[f"recall@{k} vs exact" for k in RECALL_KS]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in rows.items():
        cells = [name, percent(row["mAP"]), f"{100 * (row['mAP'] - whole['mAP']):+.2f}",
                 percent(row["box_mAP@50"]), percent(row["box_mIoU"]), percent(row["mask_mAP@50"]),
                 percent(row["mask_mIoU"]),
                 f"{row['regions_per_image']:.0f}", f"{row['index_mb']:.1f}",
                 f"{row['extract_seconds']:.0f}", f"{row['extract_seconds'] / whole['extract_seconds']:.1f}",
                 f"{row['search_seconds'] or 0:.1f}",
                 *[percent(row.get(f"recall@{k}")) for k in RECALL_KS]]
        print("| " + " | ".join(cells) + " |")
    artifacts.write_json(args.out / "bench_regions.json", rows)


if __name__ == "__main__":
    main()
