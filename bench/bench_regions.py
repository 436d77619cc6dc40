"""Region-level vs whole-image retrieval on a composed small-object benchmark.

    python bench/bench_regions.py --data ~/eth80                       # 500 ETH-80 scenes, effnet_lite0, CPU
    python bench/bench_regions.py --data ~/eth80 --scenes 100 --skip-crop
    python bench/bench_regions.py --data ~/eth80 --ablations          # + ROI per pass size, grid+segments, ivfpq/hnsw recall

--data is the ETH-80 photos and masks the scenes are composed of; --help says how to get them.
Composes the set (or reuses it), runs each configuration through the pipeline (extraction,
search: `retrieval.pipeline.ranking`; then the evaluate stage; every artifact cached under
--cache), each in a fresh subprocess of this script, and prints: mAP whole vs region, box and
mask mAP@50 and mIoU, rows (regions) per image, index size, gallery extraction seconds (whole
image, ROI-pooled regions, per-crop regions), the recall@k of the approximate indexes against
exact search, and the peak resident memory of the configuration's extraction + search
(ru_maxrss of its process, and of the largest DataLoader worker it ran: a forked worker counts
the pages it shares with its parent). Timings are wall-clock on whatever machine this runs
on; cached artifacts report the time of the run that built them, but the memory peaks are of
this run's work only: a configuration whose gallery rows were already extracted (by an
earlier run, or an earlier configuration with the same rows) only loads and searches them,
and its peak is marked with *.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout without `pip install -e .`

from bench.common import extraction_seconds, mib, peak_mib, ratio, seconds
from bench.eth80 import add_data_option
from retrieval import artifacts, pipeline
from retrieval.scenes import ComposeSpec, compose, folder_objects, skimage_backgrounds
from retrieval.features.store import Store
from retrieval.percent import percent_text
from retrieval.ranking import Ranking
from retrieval.stages import evaluate
from retrieval.plan import RunPlan

RECALL_KS = (10, 100)


def runs(crop_size: int | None, skip_crop: bool, ablations: bool) -> dict[str, list[str]]:
    """Name -> overrides. Defaults of each config group are used unless named here."""
    roi = ["regions=grid", "representation=roi"]
    table = {"whole image": ["regions=none"], "grid, ROI": roi}
    if ablations:
        table.update({
            "grid, ROI 640": [*roi, "representation.input_sizes=[640]"],
            "grid, ROI 1280": [*roi, "representation.input_sizes=[1280]"],
            "grid+segments, ROI": ["regions=grid_segments", "representation=roi"],
            "grid, ROI, ivfpq": [*roi, "index=ivfpq"],
            "grid, ROI, hnsw": [*roi, "index=hnsw"],
        })
    if not skip_crop:
        size = [f"representation.crop_size={crop_size or 'null'}"]
        table["grid, crop"] = ["regions=grid_crop", "extract.batch_size=64", *size]
        table["segments, crop"] = ["regions=segments", "extract.batch_size=64", *size]
        table["grid, crop (default)"] = ["regions=grid", "extract.batch_size=64"]
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


def measure(name: str, overrides: list[str], root: Path, cache: Path, out: Path) -> dict[str, Any]:
    """One configuration: extraction + search (their peak memory taken right after), then its
    evaluation and the statistics of its gallery rows. Run it in a process of its own."""
    plan = RunPlan.from_config(config(root, cache, out, overrides))
    gallery_store = plan.stores["gallery"]
    gallery_keys, store = gallery_store.item_keys, gallery_store.folder
    cached = not Store(store).missing(gallery_keys)
    _, before = peak_mib()  # children so far: helpers forked while importing (torch), not workers
    ranking = pipeline.ranking(plan)
    peak, workers_peak = peak_mib()
    # The table compares with the "whole image" row: no baseline ranking per run (an approximate
    # index's whole-image baseline would also need as many gallery images as the index trains on).
    metrics = json.loads(evaluate.main(plan, ranking, out / name.replace(", ", "-").replace(" ", "_")).read_text())
    summary, timings = metrics["summary"]["all"], metrics["timings"]
    row = {key: summary.get(key) for key in ("mAP", "box_mAP@50", "box_mIoU", "mask_mAP@50", "mask_mIoU")}
    gallery = gallery_store.load()
    counts = np.bincount(gallery.row_image, minlength=len(gallery.keys))[gallery.valid]
    row.update(
        regions_per_image=float(counts.mean()) if counts.size else 0.0,
        extract_seconds=extraction_seconds(store, gallery_keys),
        index_mb=timings["index_bytes"] / 2**20,
        search_seconds=timings.get("search_seconds"),
        peak_mib=peak,
        workers_peak_mib=workers_peak if workers_peak > before else None,  # None: no worker outgrew them
        cached=cached,
        ranking=metrics["ranking"],
    )
    return row


def measure_apart(name: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """`measure` in a fresh process of this script, so each configuration's peaks are its own."""
    row_file = args.out / "rows" / (name.replace(", ", "-").replace(" ", "_") + ".json")
    row_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--run", name, "--row-file", str(row_file),
               "--data", str(args.data), "--root", str(root), "--scenes", str(args.scenes), "--cache", str(args.cache),
               "--out", str(args.out), "--crop-size", str(args.crop_size)]
    subprocess.run(command, check=True)
    return artifacts.read_json(row_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_option(parser)
    parser.add_argument("--root", type=Path, default=REPO / "cache" / "bench" / "eth80-500", help="the composed scenes")
    parser.add_argument("--scenes", type=int, default=500)
    parser.add_argument("--cache", type=Path, default=REPO / "cache")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_regions")
    parser.add_argument("--crop-size", type=int, default=160,
                        help="crop pooling: side each region is resized to (0 = the model's input size)")
    parser.add_argument("--skip-crop", action="store_true", help="leave out the (slow) per-crop runs")
    parser.add_argument("--ablations", action="store_true",
                        help="also ROI at one pass size, grid+segments, and the approximate indexes (recall vs exact)")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: measure this one configuration
    parser.add_argument("--row-file", type=Path, help=argparse.SUPPRESS)  # internal: where --run writes its row
    args = parser.parse_args()
    if args.run:
        overrides = runs(args.crop_size or None, skip_crop=False, ablations=True)[args.run]
        artifacts.write_json(args.row_file, measure(args.run, overrides, args.root, args.cache, args.out))
        return
    root = compose(folder_objects(args.data), skimage_backgrounds(), replace(ComposeSpec(), scenes=args.scenes), args.root)
    (args.out / "rows").mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in runs(args.crop_size or None, args.skip_crop, args.ablations):
        rows[name] = measure_apart(name, args, root)
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
    exact = Ranking.load(Path(rows["grid, ROI"]["ranking"])).indices
    for name in ("grid, ROI, ivfpq", "grid, ROI, hnsw") if args.ablations else ():
        approx = Ranking.load(Path(rows[name]["ranking"])).indices
        rows[name].update({f"recall@{k}": overlap_at(approx, exact, k) for k in RECALL_KS})
    whole = rows["whole image"]
    print(f"\n{root}: {args.scenes} scenes; model effnet_lite0 (default), query=box, float16 vectors; "
          f"ROI = representation=roi over the pyramid (passes of longer side 640 and 1280) unless a size is named; "
          f"extraction seconds are wall-clock for the gallery; 'grid, crop (default)' embeds each window at the model's "
          f"input size (regions=grid), the other crop runs at crop_size={args.crop_size or 'model'}; "
          f"peak MiB: resident memory of the configuration's extraction + search, its process and its largest "
          f"DataLoader worker (* = gallery rows already extracted: the peak is of loading and searching them; "
          f"- = no worker ran, or none outgrew the helpers forked at start-up)\n")
    header = ["run", "mAP", "vs whole", "box mAP@50", "box mIoU", "mask mAP@50", "mask mIoU", "regions/img", "index MB", "extract s", "x whole", "search s",
              *[f"recall@{k} vs exact" for k in RECALL_KS], "peak MiB", "worker peak MiB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in rows.items():
        cells = [name, percent_text(row["mAP"]), f"{100 * (row['mAP'] - whole['mAP']):+.2f}",
                 percent_text(row["box_mAP@50"]), percent_text(row["box_mIoU"]), percent_text(row["mask_mAP@50"]),
                 percent_text(row["mask_mIoU"]),
                 f"{row['regions_per_image']:.0f}", f"{row['index_mb']:.1f}",
                 seconds(row["extract_seconds"]), ratio(row["extract_seconds"], whole["extract_seconds"]),
                 f"{row['search_seconds'] or 0:.1f}",
                 *[percent_text(row.get(f"recall@{k}")) for k in RECALL_KS],
                 mib(row["peak_mib"], "*" if row["cached"] else ""), mib(row["workers_peak_mib"])]
        print("| " + " | ".join(cells) + " |")
    artifacts.write_json(args.out / "bench_regions.json", rows)


if __name__ == "__main__":
    main()
