"""Stage 4: score a ranking with the dataset's protocol; write metrics, per-query table,
leaderboard row and the HTML report into the run folder.

    main(plan, ranking, out, baseline=None) -> metrics.json

`baseline`, for a region-level run, is the same run's whole-image ranking, reported beside."""
from __future__ import annotations

import logging
import math
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from retrieval import artifacts
from retrieval.search.approximate.recall import describe
from retrieval.datasets.distractors import distractor_count
from retrieval.leaderboard import append_row, git_commit
from retrieval.masks import decode, encode
from retrieval.percent import percent, percent_text
from retrieval.protocols import score
from retrieval.ranking import GIVEN, Ranking
from retrieval.records import Dataset, Instance, Record
from retrieval.protocols.localisation import add_localisation, split_options
from retrieval.report import build_leaderboard_page, build_run_report
from retrieval.plan import RunPlan
from retrieval.ranking import RANKING_FILE

log = logging.getLogger(__name__)


def _json_summary(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """A summary as JSON: NaN and infinities (a metric with nothing to average) become null."""
    return {
        label: {m: None if isinstance(v, float) and not math.isfinite(v) else v for m, v in values.items()}
        for label, values in summary.items()
    }


def _instance_json(instance: Instance, with_mask: bool) -> dict[str, Any]:
    """An instance as JSON; its mask (any encoding the adapters accept) as compressed COCO RLE."""
    mask = None
    if with_mask and instance.mask is not None:
        rle = instance.mask
        if not (isinstance(rle, dict) and isinstance(rle.get("counts"), str)):
            rle = encode(decode(rle))
        mask = {"size": list(rle["size"]), "counts": rle["counts"]}
    box = [float(v) for v in instance.box] if instance.box is not None else None
    return {"id": instance.id, "box": box, "mask": mask}


def _record_json(record: Record, with_mask: bool) -> dict[str, Any]:
    return {
        "key": record.key,
        "path": str(record.path),
        "group": record.group,
        "instances": [_instance_json(i, with_mask) for i in record.instances],
        **({"text": record.text} if record.text else {}),
    }


def dataset_manifest(dataset: Dataset, gallery_masks: bool = False) -> dict[str, Any]:
    """Everything the report needs about the dataset, as plain JSON (no library needed to read it)."""
    return {
        "name": dataset.name,
        "root": str(dataset.root),
        "protocol": dataset.protocol,
        "queries": [_record_json(r, with_mask=True) for r in dataset.queries],
        "gallery": [_record_json(r, with_mask=gallery_masks) for r in dataset.gallery],
        "truth": {
            setup: [{"positives": t.positives.tolist(), "junk": t.junk.tolist()} for t in truths]
            for setup, truths in dataset.truth.items()
        },
    }


def _percent_row(summary: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Flatten label -> metric into leaderboard columns, as percentages with 2 decimals."""
    row = {}
    for label, metrics in summary.items():
        for metric, value in metrics.items():
            if metric.startswith("n_"):
                continue
            column = metric if label == "all" else f"{label}/{metric}"
            shown = percent(value)
            row[column] = "" if shown is None else shown
    return row


def print_summary(summary: dict[str, dict[str, float]]) -> str:
    metrics = list(dict.fromkeys(m for values in summary.values() for m in values if not m.startswith("n_")))
    width = max(len(label) for label in summary) + 2
    columns = {m: max(10, len(m) + 1) for m in metrics}  # long names (box_mAP@50:95) stay apart
    lines = [" " * width + "".join(f"{m:>{columns[m]}s}" for m in metrics)]
    for label, values in summary.items():
        cells = "".join(
            f"{percent_text(values.get(m)):>{columns[m]}s}" for m in metrics
        )
        lines.append(f"{label:<{width}s}{cells}")
    return "\n".join(lines)


def main(plan: RunPlan, ranking_path: Path, out: Path, baseline: Path | None = None) -> Path:
    """Score the ranking at `ranking_path` into the run folder `out`; returns metrics.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dataset = plan.dataset
    ranking_path = Path(ranking_path)
    ranking = Ranking.load(ranking_path, GIVEN if plan.eval.ranking is not None else None)
    options = plan.eval.protocol_options
    scoring, localising = split_options(dataset.protocol, options)
    # box/mask metrics when the ranking localises and the gallery has truth
    result = add_localisation(score(ranking, dataset, **scoring), ranking, dataset, **localising)
    search_meta = _search_meta(ranking_path)
    speed = (search_meta.get("extraction_images_per_s") or {}).get("gallery")
    skipped = {
        "loading": [list(s) for s in dataset.skipped],
        "queries": search_meta.get("skipped_queries", []),
        "gallery": search_meta.get("skipped_gallery", []),
    }
    identity = plan.identity.of_ranking(ranking).fields()
    whole = _json_summary(score(Ranking.load(baseline), dataset, **scoring).summary) if baseline else None
    sizes = {"n_queries": len(dataset.queries), "n_gallery": len(dataset.gallery), "n_distractors": distractor_count(dataset)}
    search = search_meta.get("search")
    metrics = {
        **identity,
        "protocol": dataset.protocol,
        "protocol_options": options,
        "dataset_notes": dataset.extra,
        "summary": _json_summary(result.summary),
        "whole_image_summary": whole,
        "counts": {
            **result.counts,
            **sizes,
            "skipped": {k: len(v) for k, v in skipped.items()},
        },
        "skipped": skipped,
        "timings": search_meta,
        "search": search,
        "ranking": str(ranking_path),
    }
    shutil.copyfile(ranking_path, out / RANKING_FILE)
    artifacts.write_json(out / "dataset.json", dataset_manifest(dataset, gallery_masks=len(dataset.gallery) <= 5000))
    result.per_query.to_csv(out / "per_query.csv", index=False)
    metrics_path = artifacts.write_json(out / "metrics.json", metrics)
    row = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **identity,
        **sizes,
        "images_per_s": speed or "",
        **search_columns(search),
        "commit": git_commit(),
        "run_dir": str(out.resolve()),
        **_percent_row(result.summary),
        **({"whole_image_mAP": _percent_row(whole).get("mAP", "")} if whole else {}),
    }
    leaderboard = append_row(plan.paths.leaderboard, row)
    report = _report(plan, out, leaderboard)
    n_skipped = sum(len(v) for v in skipped.values())
    log.info(
        "%s | %s (weights %s) | query=%s | index=%s | regions=%s (%% below)\n%s",
        identity["dataset"], identity["model"], identity["weights"], identity["query_mode"], identity["index"],
        identity["regions"], print_summary(result.summary),
    )
    approximate = describe(search)
    if approximate:
        log.warning("%s", approximate)
    if whole:
        log.info("the same run with whole-image retrieval (regions=none):\n%s", print_summary(whole))
    if n_skipped:
        log.warning("%d inputs were skipped (loading %d, queries %d, gallery %d); see %s", n_skipped,
                    len(skipped["loading"]), len(skipped["queries"]), len(skipped["gallery"]), metrics_path)
    log.info("results: %s%s; leaderboard: %s", out, f", report: {report}" if report else "", leaderboard)
    return metrics_path


def search_columns(search: Mapping[str, Any] | None) -> dict[str, Any]:
    """The leaderboard's `search` (the factory and its knobs: `IVF1024,PQ32 nprobe=16`, or
    `Flat`) and `search_recall` (recall@K against exact, in %; 100 for exact search), empty
    for a ranking whose search is unknown (`eval.ranking` from elsewhere)."""
    if not search:
        return {"search": "", "search_recall": ""}
    if search["exact"]:
        return {"search": search["index"], "search_recall": 100.0}
    knobs = "".join(f" {name}={value:g}" for name, value in search["params"].items())
    knobs += f" rescore={search['rescore']}" if search.get("rescore") else ""
    return {"search": search["index"] + knobs, "search_recall": percent(search["recall_at_k"])}


def _search_meta(ranking_path: Path) -> dict[str, Any]:
    """The meta of the search that a ranking descends from: a re-rank step's meta names the
    ranking it re-ranked (`input_ranking`), followed back to the search's (whose `search` is
    the dict describing it). Empty when the ranking is not a cached artifact (`eval.ranking`
    from elsewhere), or its chain does not lead to one."""
    folder = ranking_path.parent
    while artifacts.is_complete(folder):
        meta = artifacts.read_meta(folder)
        if "step" not in meta:
            return meta
        if "input_ranking" not in meta:
            return {}
        folder = Path(meta["input_ranking"]).parent
    return {}


def _report(plan: RunPlan, out: Path, leaderboard: Path) -> Path | None:
    if not plan.eval.report:
        return None
    path = build_run_report(out, top_k=plan.eval.report_top_k)
    build_leaderboard_page(leaderboard)
    return path
