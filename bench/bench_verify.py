"""Geometric verification (`rerank=[verify]`): each retrieval run with and without it.

    python bench/bench_verify.py --set scenes --scenes 100 --data ~/eth80   # composed small-object scenes (bench_regions')
    python bench/bench_verify.py --set demo                                 # the built-in demo set
    python bench/bench_verify.py --set eth80 --data ~/eth80                 # ETH-80, one query per instance, leave-one-out
    python bench/bench_verify.py --set scenes --data ~/eth80 --verify rerank.verify.gallery_view=image rerank.verify.resize=1280
    python bench/bench_verify.py --set scenes --data ~/eth80 --probe 20 --verify rerank.verify.features=xfeat   # best case

--data is the ETH-80 photos and masks (the scenes are composed of them); --help says how to get them.

Runs each base configuration (whole image; on the scenes also `grid` ROI and, with --crop,
`grid_crop`) through the pipeline, then the same with `rerank=[verify]` plus the --verify
overrides, and prints mAP, hit@1, box and mask mAP@50 and mIoU, the seconds per query the
verification added (the step's own wall time, from its artifact's meta: the run that built it),
and the size of the cached local features of the images it verified. Every artifact is cached under --cache, so a
second verify setting that shares the local features re-extracts nothing.

--probe N measures the best case instead: N queries, each matched against a crop around the
true box of its object in its first positive image (the box grown by its size on each side,
enlarged to `resize`): how many matches and inliers the features find when the region is right.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout without `pip install -e .`

from bench.bench_regions import config as scenes_config  # noqa: E402
from bench.eth80 import add_data_option  # noqa: E402
from retrieval import artifacts, pipeline  # noqa: E402
from retrieval.scenes import ComposeSpec, compose, folder_objects, skimage_backgrounds  # noqa: E402
from retrieval.features.keys import gallery_items  # noqa: E402
from retrieval.local_features import create_extractor  # noqa: E402
from retrieval.local_features.cache import FeatureCache  # noqa: E402
from retrieval.local_features.frames import Frame, grown_box  # noqa: E402
from retrieval.local_features.geometry import FitFailure, fit  # noqa: E402
from retrieval.percent import percent_text  # noqa: E402
from retrieval.ranking import Ranking  # noqa: E402
from retrieval.rerank.verify import query_frame  # noqa: E402
from retrieval.stages import evaluate  # noqa: E402
from retrieval.plan import RunPlan  # noqa: E402
from retrieval.stages.rerank import query_cutouts  # noqa: E402

BASES = {
    "scenes": {"whole image": ["regions=none"], "grid, ROI": ["regions=grid", "representation=roi"]},
    "demo": {"whole image": []},
    "eth80": {"whole image": []},
}
CROP = {"grid_crop": ["regions=grid_crop", "extract.batch_size=64", "representation.crop_size=160"]}
METRICS = ("mAP", "hit@1", "box_mAP@50", "box_mIoU", "mask_mAP@50", "mask_mIoU")


def plain_config(cache: Path, out: Path, overrides: list[str]):
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        return hydra_compose("config", overrides=[
            f"paths.cache={cache}", f"paths.leaderboard={out / 'leaderboard.csv'}", "eval.report=false", *overrides])


def eth80_queries(data: Path, out: Path) -> Path:
    """A query list: the first view of each ETH-80 instance (80 queries against all 3280 views)."""
    lines = [sorted((data / "images" / d.name).glob("*.png"))[0].relative_to(data).as_posix()
             for d in sorted((data / "images").iterdir())]
    return artifacts.write_text(out / "eth80_queries.txt", "\n".join(lines) + "\n")


def configure(args: argparse.Namespace, overrides: list[str]):
    if args.set == "scenes":
        root = compose(folder_objects(args.data), skimage_backgrounds(), replace(ComposeSpec(), scenes=args.scenes), args.root)
        return scenes_config(root, args.cache, args.out, overrides)
    if args.set == "demo":
        return plain_config(args.cache, args.out, ["dataset=demo", *overrides])
    return plain_config(args.cache, args.out, ["dataset=folder", f"dataset.root={args.data}", "query=full",
                                               f"dataset.queries={eth80_queries(args.data, args.out.resolve())}", *overrides])


def measure(name: str, cfg: Any, out: Path) -> dict[str, Any]:
    plan = RunPlan.from_config(cfg)
    ranking = pipeline.ranking(plan)
    metrics = json.loads(evaluate.main(plan, ranking, out / name.replace(", ", "-").replace(" ", "_")).read_text())
    row: dict[str, Any] = {key: metrics["summary"]["all"].get(key) for key in METRICS}
    meta = artifacts.read_meta(ranking.parent)
    if meta.get("step") == "verify":
        queries = len(Ranking.load(ranking).query_ids)
        row.update(seconds=meta["seconds"], seconds_per_query=meta["seconds"] / queries, counts=meta["counts"],
                   cache_mb=meta["local_feature_bytes"] / 2**20)
    return row


def probe(args: argparse.Namespace) -> None:
    """Matches and inliers of queries against the true region of their object (see --probe)."""
    cfg = configure(args, ["rerank=[verify]", *args.verify])
    options = dict(cfg.rerank.verify)
    plan = RunPlan.from_config(cfg)
    dataset, cutouts = plan.dataset, query_cutouts(plan)
    extractor = create_extractor(options["features"], max_keypoints=options["max_keypoints"])
    queries = FeatureCache(args.cache, extractor, options["query_resize"])
    crops = FeatureCache(args.cache, extractor, options["resize"])
    step = max(len(cutouts) // args.probe, 1)
    for q in range(0, step * args.probe, step):
        cutout, query_id = cutouts[q], dataset.queries[q].instances[0].id
        image = int(dataset.truth["all"][q].positives[0])
        record = dataset.gallery[image]
        box = next(instance.box for instance in record.instances if instance.id == query_id)
        crop = grown_box(box, 1.0)
        key = f"{gallery_items([record], dataset.root)[0].key}@{crop}"
        queries.ensure([query_frame(cutout)])
        crops.ensure([Frame(key, record.path, crop)])
        query, region = queries.load(cutout.key), crops.load(key)
        pairs = extractor.match(query, region)
        try:
            found = fit(options["model"], query.image_points(pairs[:, 0]), region.keypoints[pairs[:, 1]], options["threshold"])
            inliers: int | str = found.inliers
        except FitFailure as failure:
            inliers = failure.reason
        print(f"{dataset.queries[q].key}: {len(query)} / {len(region)} keypoints, {len(pairs)} matches, inliers {inliers}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", choices=tuple(BASES), default="scenes")
    add_data_option(parser, required=False, help="ETH-80 photos and masks, for --set scenes and eth80 (see below)")
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--root", type=Path, default=None, help="composed scenes folder (default: cache/bench/eth80-<scenes>)")
    parser.add_argument("--cache", type=Path, default=REPO / "cache")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_verify")
    parser.add_argument("--crop", action="store_true", help="also grid_crop (slow to extract on a CPU)")
    parser.add_argument("--only", nargs="*", default=None, help="base runs to measure, by name")
    parser.add_argument("--verify", nargs="*", default=[], help="overrides of rerank.verify for the verified runs")
    parser.add_argument("--probe", type=int, default=0, help="instead: N queries against their object's true region")
    args = parser.parse_args()
    if args.set != "demo" and args.data is None:
        parser.error(f"--set {args.set} needs --data PATH, the ETH-80 photos (see the end of --help for how to get them)")
    args.root = args.root or args.cache / "bench" / f"eth80-{args.scenes}"
    if args.probe:
        probe(args)
        return
    bases = {**BASES[args.set], **(CROP if args.crop and args.set == "scenes" else {})}
    rows = {}
    for name, overrides in bases.items():
        if args.only and name not in args.only:
            continue
        rows[name] = measure(name, configure(args, overrides), args.out)
        print(f"{name}: {json.dumps(rows[name])}", flush=True)
        verified = f"{name} + verify"
        rows[verified] = measure(verified, configure(args, [*overrides, "rerank=[verify]", *args.verify]), args.out)
        print(f"{verified}: {json.dumps(rows[verified])}", flush=True)
    print(f"\n{args.set}; verify overrides: {' '.join(args.verify) or 'defaults'}\n")
    header = ["run", "mAP", "hit@1", "box mAP@50", "box mIoU", "mask mAP@50", "mask mIoU", "s/query added", "verified/pairs",
              "local-feature cache MB"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, row in rows.items():
        counts = row.get("counts", {})
        cells = [name, *(percent_text(row[key]) for key in METRICS),
                 f"{row['seconds_per_query']:.2f}" if "seconds" in row else "-",
                 f"{counts['verified']}/{counts['pairs']}" if counts else "-",
                 f"{row['cache_mb']:.1f}" if "cache_mb" in row else "-"]
        print("| " + " | ".join(cells) + " |")
    artifacts.write_json(args.out / f"bench_verify_{args.set}.json", rows)


if __name__ == "__main__":
    main()
