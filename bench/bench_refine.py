"""A cheap first pass, then `rerank=[refine]`: each run's accuracy, localisation and cost.

    python -m retrieval.datasets compose --objects ~/eth80 --scenes 12 --out /tmp/scenes12
    python bench/bench_refine.py --root /tmp/scenes12 --name eth80_scenes --out outputs/bench_refine/scenes12
    python bench/bench_refine.py --root tests/data/voxdet-mini/VoxDet --anns ../anns.pt --name voxdet_mini \\
        --out outputs/bench_refine/voxdet-mini
    python bench/bench_refine.py ... --only "ROI + refine" --refine rerank.refine.top_n=5

Runs, on an `anns.pt` set (dataset=anns, effnet_lite0, query=box, float16 vectors, as
bench_regions.py): whole image, grid (crop pooling at the model's input size), grid_crop (crop
pooling at 160 px), grid ROI, ROI + refine (preset=roi_refine) and grid + refine. Each run is
one process of its own (extraction, search, re-ranking, then evaluation; artifacts cached under
--cache) and writes its row to <out>/rows/; a row already there is reused unless --again.
Prints mAP, hit@1, box and mask mAP@50 and mIoU, gallery extraction seconds (of the run that
built the store) and their ratio to the whole-image run's, the refine step's seconds per query
(the run that built it) and its crops embedded and reused, and the peak resident memory of the
run's process (* = its gallery store was already built: the peak of loading, searching and
re-ranking).

--probe N looks at the objective instead: for every k-th query with a positive (N of them), its
first positive image in the grid ROI ranking: the cosine of the crop of the object's true box
with the query, against the window refine finds there (its cosine and IoU with the true box).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout without `pip install -e .`

from bench.bench_regions import extraction_seconds, mib, peak_mib, ratio, seconds  # noqa: E402
from retrieval import artifacts, pipeline  # noqa: E402
from retrieval.features.store import Store  # noqa: E402
from retrieval.percent import percent_text  # noqa: E402
from retrieval.plan import RunPlan  # noqa: E402
from retrieval.stages import evaluate  # noqa: E402

RUNS = {
    "whole image": ["regions=none"],
    "grid (crop)": ["regions=grid", "extract.batch_size=64"],
    "grid_crop (160 px)": ["regions=grid_crop", "extract.batch_size=64"],
    "grid ROI": ["regions=grid", "representation=roi"],
    "ROI + refine": ["preset=roi_refine"],
    "grid + refine": ["regions=grid", "extract.batch_size=64", "rerank=[refine]"],
}
"""Name -> overrides (each group's defaults otherwise; --refine adds to the refine runs)."""


def config(args: argparse.Namespace, overrides: list[str]):
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        return hydra_compose("config", overrides=[
            "dataset=anns", f"dataset.root={args.root}", f"dataset.name={args.name}",
            *([f"dataset.anns={args.anns}"] if args.anns else []), f"paths.cache={args.cache}",
            f"paths.leaderboard={args.out / 'leaderboard.csv'}", "eval.report=false", "extract.dtype=float16",
            "extract.batch_size=8", *overrides,
        ])


def overrides_of(name: str, args: argparse.Namespace) -> list[str]:
    return [*RUNS[name], *(args.refine if "refine" in name else [])]


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run: extraction, search and re-ranking (their peak memory), then its evaluation."""
    plan = RunPlan.from_config(config(args, overrides_of(name, args)))
    gallery_keys, store = plan.stores["gallery"].item_keys, plan.stores["gallery"].folder
    cached = not Store(store).missing(gallery_keys)
    ranking = pipeline.ranking(plan)
    peak, _ = peak_mib()
    metrics = json.loads(evaluate.main(plan, ranking, args.out / "runs" / slug(name)).read_text())
    summary = metrics["summary"]["all"]
    row = {key: summary.get(key) for key in ("mAP", "hit@1", "box_mAP@50", "box_mIoU", "mask_mAP@50", "mask_mIoU")}
    meta = artifacts.read_meta(ranking.parent) if "refine" in name else {}
    n_queries = metrics["counts"]["n_queries"]
    row.update(
        n_queries=n_queries,
        extract_seconds=extraction_seconds(store, gallery_keys),
        refine_seconds_per_query=meta["seconds"] / n_queries if meta else None,
        crops_embedded=meta.get("crops_embedded"), crops_reused=meta.get("crops_reused"), refine_counts=meta.get("counts"),
        peak_mib=peak, cached=cached, ranking=str(ranking), overrides=overrides_of(name, args),
    )
    return row


def probe(args: argparse.Namespace, count: int) -> None:
    """The true box's crop score against refine's window, on `count` positive pairs."""
    import dataclasses

    import numpy as np

    from retrieval.localisation import box_iou
    from retrieval.ranking import Ranking
    from retrieval.regions.proposals import boxes_only
    from retrieval.rerank import RerankInputs, create_step
    from retrieval.rerank.crops import CropVectors, GalleryImage, read_image
    from retrieval.stages import rerank as rerank_stage

    plan = RunPlan.from_config(config(args, RUNS["grid ROI"]))
    ranking = Ranking.load(pipeline.ranking(plan))
    dataset = plan.dataset
    truth = dataset.truth["all"]
    with_positive = [q for q in range(len(truth)) if len(truth[q].positives)]
    chosen = with_positive[:: max(1, len(with_positive) // count)][:count]
    vectors = plan.stores["queries"].load().per_image()
    gallery = plan.stores["gallery"].load()
    embedder = rerank_stage.query_model(plan)
    crops = CropVectors(embedder, 32, None, images_in_memory=8)
    step = create_step("refine", crop_cache=False)
    print("| query | image | true box cosine | refine cosine | refine window IoU with the true box |\n|---|---|---|---|---|")
    above = 0
    for q in chosen:
        p = next(p for p in range(ranking.k) if ranking.indices[q, p] in set(truth[q].positives.tolist()))
        g = int(ranking.indices[q, p])
        instances = set(dataset.queries[q].instance_ids)
        boxes = np.array([i.box for i in dataset.gallery[g].instances if i.id in instances], dtype=np.float32)
        image = GalleryImage(str(g), read_image(dataset.gallery[g].path, 10**9))
        true_score = float((crops.vectors([(image, boxes_only(boxes, "truth"))])[0] @ vectors[q]).max())
        pair = dataclasses.replace(ranking, indices=ranking.indices[q : q + 1, p : p + 1], scores=ranking.scores[q : q + 1, p : p + 1],
                                   boxes=ranking.boxes[q : q + 1, p : p + 1], mask_ids=None, mask_table=[], query_ids=ranking.query_ids[q : q + 1])
        inputs = RerankInputs(loaders={"query_vectors": lambda v=vectors[q : q + 1]: v, "gallery": lambda: gallery,
                                       "dataset": lambda: dataset, "cache": lambda: args.cache, "query_model": lambda: embedder},
                              search=None, allowed=step.needs)
        found = step(pair, inputs).ranking
        iou = float(box_iou(found.boxes[0, :1], boxes).max())
        above += found.scores[0, 0] > true_score and iou < 0.3
        print(f"| {dataset.queries[q].key} | {dataset.gallery[g].key} | {true_score:.3f} | {found.scores[0, 0]:.3f} | {iou:.2f} |")
    print(f"\n{above} of {len(chosen)}: refine's window scores above the true box while overlapping it by IoU < 0.3")


def queries_with_positives(root: Path, anns: str | None) -> str:
    """The set's annotation file without the queries that have no positive scene, written beside
    it as <name>_positive.pt: no metric counts such a query, and refine works query by query, so
    leaving them out changes no figure and saves their refine time."""
    import torch

    source = Path(anns) if anns and Path(anns).is_absolute() else root / (anns or "anns.pt")
    entries = torch.load(source, weights_only=True)
    held = {instance for entry in entries.values() if not entry["is_query"] for instance in entry["ins"]}
    kept = {key: entry for key, entry in entries.items() if not entry["is_query"] or entry["ins"] in held}
    out = source.with_name(f"{source.stem}_positive.pt")
    with artifacts.atomic_path(out) as tmp:
        torch.save(kept, tmp)
    return str(out)


def slug(name: str) -> str:
    return name.replace(" + ", "+").replace(" ", "_").replace("(", "").replace(")", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="the set's dataset.root (its anns.pt inside, or --anns)")
    parser.add_argument("--anns", help="dataset.anns: the annotation file, relative to --root unless absolute")
    parser.add_argument("--name", default="anns", help="dataset.name")
    parser.add_argument("--cache", type=Path, default=REPO / "cache")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_refine")
    parser.add_argument("--only", action="append", choices=list(RUNS), help="these runs only (repeatable)")
    parser.add_argument("--refine", nargs="*", default=[], help="overrides added to the refine runs")
    parser.add_argument("--again", action="store_true", help="measure runs whose row exists again")
    parser.add_argument("--probe", type=int, metavar="N", help="the objective on N positive pairs (see above)")
    parser.add_argument("--with-positives", action="store_true",
                        help="leave out the queries with no positive image (their anns written as <anns>_positive.pt)")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: measure this one run, in this process
    args = parser.parse_args()
    args.root, args.cache, args.out = args.root.resolve(), args.cache.resolve(), args.out.resolve()
    if args.with_positives:
        args.anns = queries_with_positives(args.root, args.anns)
    rows_dir = args.out / "rows"
    if args.probe:
        probe(args, args.probe)
        return
    if args.run:
        artifacts.write_json(rows_dir / f"{slug(args.run)}.json", measure(args.run, args))
        return
    rows_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only or RUNS:
        if args.again or not (rows_dir / f"{slug(name)}.json").exists():
            subprocess.run([sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--run", name], check=True)
    rows = {name: artifacts.read_json(rows_dir / f"{slug(name)}.json") for name in RUNS if (rows_dir / f"{slug(name)}.json").exists()}
    whole = rows.get("whole image", {}).get("extract_seconds")
    header = ["run", "mAP", "hit@1", "box mAP@50", "box mIoU", "mask mAP@50", "mask mIoU", "gallery extraction s",
              "x whole", "refine s/query", "crops embedded / reused", "peak MiB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in rows.items():
        crops = "-" if row["crops_embedded"] is None else f"{row['crops_embedded']} / {row['crops_reused']}"
        refine = "-" if row["refine_seconds_per_query"] is None else f"{row['refine_seconds_per_query']:.2f}"
        cells = [name, *(percent_text(row[key]) for key in ("mAP", "hit@1", "box_mAP@50", "box_mIoU", "mask_mAP@50", "mask_mIoU")),
                 seconds(row["extract_seconds"]), ratio(row["extract_seconds"], whole), refine, crops,
                 mib(row["peak_mib"], "*" if row["cached"] else "")]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
