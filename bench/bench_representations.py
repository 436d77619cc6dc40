"""Representations side by side on three sets: ETH-80, composed small-object scenes, a route.

    python bench/bench_representations.py --data /path/to/eth80                        # every setup, every set
    python bench/bench_representations.py --data tests/data/eth80 --setups global,grid_crop --markdown bench.md
    python bench/bench_representations.py --data /path/to/eth80 --sets route --overrides model=dinov2_vits14

--data is the ETH-80 photos and masks (--help ends with how to get them). The sets:
- eth80: leave-one-out instance retrieval over the --data folder (dataset=folder query=full): mAP.
- scenes: the composed small-object scenes made of --data's objects (python -m retrieval.datasets
  compose; --scenes of them, built once under --cache): mAP, box and mask mAP@50, mask mIoU.
- route: the place-recognition route cut from scikit-image's photos (python -m retrieval.datasets
  route, built once under --cache): recall@1/5/10 by position (dataset=vpr, positives within 25 m).
Each setup is a list of overrides (SETUPS below); a setup whose representation this checkout
does not have, or whose run fails, is reported as skipped with the reason. Every run goes
through the pipeline (extraction, search, re-ranking, evaluation; artifacts cached under
--cache) in a process of its own, and prints, per set: the metrics, the gallery's extraction
seconds (of the run that built the store) and their ratio to the global setup's, and the peak
resident memory of the run's process (* = its gallery store was already built, so the peak is
of loading, searching and scoring). Default model: effnet_lite0 (offline), float16 vectors.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout without `pip install -e .`

from bench.common import extraction_seconds, markdown_table, mib, peak_mib, ratio, seconds  # noqa: E402
from bench.eth80 import add_data_option  # noqa: E402
from retrieval import artifacts, pipeline  # noqa: E402
from retrieval.errors import brief  # noqa: E402
from retrieval.features.store import Store  # noqa: E402
from retrieval.percent import percent_text  # noqa: E402
from retrieval.plan import RunPlan  # noqa: E402
from retrieval.scenes import ComposeSpec, RouteSpec, build_route, compose, folder_objects, skimage_backgrounds  # noqa: E402
from retrieval.stages import evaluate  # noqa: E402

SETUPS = {
    "global": ["regions=none", "representation=global"],
    "grid_crop": ["regions=grid_crop", "extract.batch_size=64"],
    "vlad": ["representation=vlad"],
    "segvlad": ["representation=segvlad"],
    "rmac": ["representation=rmac"],
}
"""Setup name -> overrides (each config group's defaults otherwise)."""
METRICS = {
    "eth80": {"mAP": "mAP"},
    "scenes": {"mAP": "mAP", "box_mAP@50": "box mAP@50", "mask_mAP@50": "mask mAP@50", "mask_mIoU": "mask mIoU"},
    "route": {"hit@1": "recall@1", "hit@5": "recall@5", "hit@10": "recall@10"},
}
"""Set -> its metrics (metrics.json key -> column); the vpr protocol's hit@N is VPR's Recall@N."""
TITLES = {
    "eth80": "ETH-80 leave-one-out (dataset=folder query=full)",
    "scenes": "composed small-object scenes (dataset=anns query=box)",
    "route": "place-recognition route (dataset=vpr, positives within 25 m)",
}


def names(value: str) -> list[str]:
    """An argparse type: comma-separated names."""
    return [name for name in value.split(",") if name]


def set_roots(args: argparse.Namespace) -> dict[str, Path]:
    """Each set's dataset root; the composed sets are written once, then reused."""
    roots = {"eth80": args.data.resolve()}
    if "scenes" in args.sets:
        spec = replace(ComposeSpec(), scenes=args.scenes)
        roots["scenes"] = compose(folder_objects(args.data), skimage_backgrounds(), spec,
                                  args.cache / "bench" / f"representations-scenes-{args.scenes}")
    if "route" in args.sets:
        roots["route"] = build_route(RouteSpec(), args.cache / "bench" / "route")
    return roots


def dataset_overrides(name: str, root: Path) -> list[str]:
    return {
        "eth80": ["dataset=folder", f"dataset.root={root}", "dataset.name=eth80", "query=full"],
        "scenes": ["dataset=anns", f"dataset.root={root}", "dataset.name=eth80_scenes"],
        "route": ["dataset=vpr", f"dataset.root={root}", "dataset.name=route"],
    }[name]


def config(args: argparse.Namespace, data: str, root: Path, setup: str):
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        return hydra_compose("config", overrides=[
            *dataset_overrides(data, root), f"paths.cache={args.cache}", f"paths.leaderboard={args.out / 'leaderboard.csv'}",
            "eval.report=false", "extract.dtype=float16", "extract.batch_size=8", *SETUPS[setup], *args.overrides,
        ])


def unavailable(args: argparse.Namespace, data: str, root: Path, setup: str) -> str | None:
    """Why `setup` cannot run on `data` here (unknown, not in this checkout, refused by the
    config), or None."""
    if setup not in SETUPS:
        return f"unknown setup; known: {', '.join(SETUPS)}"
    for override in SETUPS[setup]:
        group, _, choice = override.partition("=")
        if group in ("representation", "regions") and not (REPO / "conf" / group / f"{choice}.yaml").is_file():
            return f"{override} is not in this checkout (no conf/{group}/{choice}.yaml)"
    try:
        RunPlan.from_config(config(args, data, root, setup))
    except Exception as error:  # the config's own refusal, reported as the reason
        return brief(error)
    return None


def measure(args: argparse.Namespace, data: str, root: Path, setup: str) -> dict[str, Any]:
    """One run: extraction, search, re-ranking and evaluation, then its process's peak memory."""
    plan = RunPlan.from_config(config(args, data, root, setup))
    gallery = plan.stores["gallery"]
    cached = not Store(gallery.folder).missing(gallery.item_keys)
    ranking = pipeline.ranking(plan)
    metrics = json.loads(evaluate.main(plan, ranking, args.out / "runs" / data / setup).read_text())
    peak, _ = peak_mib()
    summary = metrics["summary"]["all"]
    return {**{key: summary.get(key) for key in METRICS[data]},
            "extract_seconds": extraction_seconds(gallery.folder, gallery.item_keys),
            "peak_mib": peak, "cached": cached, "ranking": str(ranking), "overrides": [*SETUPS[setup], *args.overrides]}


def measure_apart(args: argparse.Namespace, data: str, setup: str) -> dict[str, Any]:
    """`measure` in a fresh process of this script (so the peak is the run's own); a failed
    run becomes a skip with the last line it printed."""
    row_file = args.out / "rows" / data / f"{setup}.json"
    row_file.unlink(missing_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:], "--run", f"{data}:{setup}"]
    done = subprocess.run(command, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return {"skipped": f"the run failed: {lines[-1] if lines else f'exit status {done.returncode}'}"}
    return artifacts.read_json(row_file)


def table(data: str, rows: dict[str, dict[str, Any]]) -> str:
    """One set's table: metrics, extraction seconds and their ratio to global's, peak memory;
    then the skipped setups with their reasons."""
    whole = rows.get("global", {}).get("extract_seconds")
    header = ["setup", *METRICS[data].values(), "gallery extraction s", "x global", "peak MiB"]
    measured = [[setup, *(percent_text(row[key]) for key in METRICS[data]), seconds(row["extract_seconds"]),
                 ratio(row["extract_seconds"], whole), mib(row["peak_mib"], "*" if row["cached"] else "")]
                for setup, row in rows.items() if "skipped" not in row]
    skipped = [f"- {setup}: skipped: {row['skipped']}" for setup, row in rows.items() if "skipped" in row]
    return "\n".join([f"### {TITLES[data]}", "", markdown_table(header, measured), *([""] + skipped if skipped else [])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_option(parser)
    parser.add_argument("--setups", type=names, default=list(SETUPS), help=f"comma-separated, of {','.join(SETUPS)} (default: all)")
    parser.add_argument("--sets", type=names, default=list(METRICS), help="comma-separated, of eth80,scenes,route (default: all)")
    parser.add_argument("--scenes", type=int, default=30, help="composed scenes (default 30)")
    parser.add_argument("--overrides", nargs="*", default=[], help="added to every run, e.g. model=dinov2_vits14")
    parser.add_argument("--cache", type=Path, default=REPO / "cache")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_representations")
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: measure SET:SETUP in this process
    args = parser.parse_args()
    unknown = sorted(set(args.sets) - set(METRICS))
    if unknown:
        parser.error(f"--sets {','.join(unknown)}: choose among {','.join(METRICS)}")
    args.cache, args.out = args.cache.resolve(), args.out.resolve()
    roots = set_roots(args)
    if args.run:
        data, setup = args.run.split(":")
        artifacts.write_json(args.out / "rows" / data / f"{setup}.json", measure(args, data, roots[data], setup))
        return
    tables = []
    for data in args.sets:
        rows = {}
        for setup in args.setups:
            reason = unavailable(args, data, roots[data], setup)
            rows[setup] = {"skipped": reason} if reason else measure_apart(args, data, setup)
            print(f"{data} / {setup}: {json.dumps(rows[setup])}", flush=True)
        tables.append(table(data, rows))
    extra = f", overrides {' '.join(args.overrides)}" if args.overrides else ""
    text = (f"Model effnet_lite0 unless overridden{extra}; ETH-80 from {args.data}; {args.scenes} composed scenes; "
            f"route {roots.get('route', '-')}. Extraction seconds are wall-clock of the gallery, peak MiB the "
            f"run's process (* = gallery already extracted).\n\n" + "\n\n".join(tables) + "\n")
    print("\n" + text)
    if args.markdown:
        artifacts.write_text(args.markdown, text)


if __name__ == "__main__":
    main()
