"""The HTML report of a run, the run-versus-run page and the leaderboard page, built from small
synthetic run folders and leaderboards (and one real verified run, for the browser test)."""
from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from html import unescape as html_unescape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from retrieval.ranking import Ranking
from retrieval.report import build_compare_page, build_leaderboard_page, build_run_report
from retrieval.report.__main__ import main
from retrieval.report.curves import interpolated_precision, outcome_labels
from retrieval.report.thumbnails import SIZE

W, H = 320, 240
COLORS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}
# gallery image -> (instance, object box); g6 is a PNG, g7 a greyscale JPEG
GALLERY = [
    ("red", (40, 30, 140, 130)), ("red", (150, 100, 260, 210)), ("red", (10, 10, 90, 90)),
    ("blue", (60, 60, 200, 180)), ("blue", (180, 20, 300, 140)), ("red", (100, 80, 220, 200)),
    ("green", (30, 100, 150, 220)), ("green", (170, 40, 300, 160)),
]
QUERIES = [("red", (80, 60, 240, 200)), ("blue", (50, 40, 250, 200)), ("green", (90, 50, 230, 190))]
INDICES = [[0, 3, 1, 5, 2, 7], [6, 0, 3, 2, 4, -1], [7, 6, 1, -1, -1, -1]]
TRUTH = {
    "easy": [([0, 1, 2], [5]), ([3, 4], []), ([6, 7], [])],
    "hard": [([0, 1, 2, 5], []), ([3, 4], []), ([6], [7])],
}
EXPECTED_LABELS = {"easy": ["pnpjpn", "nnpnp", "ppn"], "hard": ["pnpppn", "nnpnp", "jpn"]}
AP = {"easy": [0.9, 0.2, 0.5], "hard": [0.7, 0.2, 0.1]}


def _draw(path: Path, instance: str, box: tuple[int, int, int, int], seed: int) -> None:
    """A noisy grey scene with one coloured object; no yellow anywhere, so overlays stand out."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(90, 150, size=(H, W, 1), dtype=np.uint8).repeat(3, axis=2)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    x1, y1, x2, y2 = box
    if instance == "red":
        draw.ellipse([x1, y1, x2 - 1, y2 - 1], fill=COLORS[instance])
    elif instance == "blue":
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=COLORS[instance])
    else:
        draw.polygon([(x1, y2 - 1), ((x1 + x2) // 2, y1), (x2 - 1, y2 - 1)], fill=COLORS[instance])
    if path.suffix == ".png":
        image.save(path)
    else:
        (image.convert("L") if "grey" in path.name else image).save(path, quality=90)


def _rle(box: tuple[int, int, int, int]) -> dict:
    from pycocotools import mask as mask_utils

    mask = np.zeros((H, W), dtype=np.uint8)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode()}


SEARCH_META = {  # the search's meta.json, as evaluate copies it into metrics.json's "timings"
    "created": "2020-01-02T03:04:05+00:00", "versions": {"python": "3.11.7", "torch": "2.3.0", "numpy": "1.26.4"},
    "n_queries": 3, "n_gallery": 8, "n_rows": 8, "k": 6, "index": "Flat", "index_bytes": 61440,
    "search": {"index": "Flat", "exact": True}, "search_seconds": 0.003, "queries_per_s": 3883.5, "top1_sources": None,
    "extraction_images_per_s": {"queries": 59.84, "gallery": 71.91}, "skipped_queries": [], "skipped_gallery": [],
}
VERIFY_STEP = {"step": "rerank", "name": "verify", "top_n": 3, "features": "sift", "max_keypoints": 2048, "resize": 1024,
               "query_resize": 512, "model": "homography", "threshold": 8.0, "min_inliers": 12, "match_threshold": None,
               "gallery_view": "region", "context": 1.0}
VERIFIED_INLIERS = (40, 25)
"""q0's first two results, verified with these inliers (verify puts verified entries first)."""


def make_run(root: Path, verify: bool = False) -> Path:
    """A complete run folder as `evaluate` writes it: 3 queries, 8 gallery images, 2 setups;
    with `verify`, re-ranked by geometric verification that confirmed q0's first two results."""
    images, run = root / "images", root / "run"
    images.mkdir(parents=True)
    run.mkdir()
    gallery = []
    for g, (instance, box) in enumerate(GALLERY):
        name = {6: f"g{g}.png", 7: f"g{g}-grey.jpg"}.get(g, f"g{g}.jpg")
        _draw(images / name, instance, box, seed=g)
        gallery.append({"key": name, "path": str(images / name), "group": "",
                        "instances": [{"id": instance, "box": list(box), "mask": None}]})
    queries = []
    for q, (instance, box) in enumerate(QUERIES):
        _draw(images / f"q{q}.jpg", instance, box, seed=100 + q)
        queries.append({
            "key": f"q{q}.jpg", "path": str(images / f"q{q}.jpg"), "group": "AB"[q % 2],
            "instances": [{"id": instance, "box": list(box) if q < 2 else None,
                           "mask": _rle(box) if q == 0 else None}],
        })
    truth = {s: [{"positives": p, "junk": j} for p, j in rows] for s, rows in TRUTH.items()}
    (run / "dataset.json").write_text(json.dumps(
        {"name": "toy", "root": str(images), "queries": queries, "gallery": gallery, "truth": truth}))

    indices = np.array(INDICES, dtype=np.int64)
    boxes = np.full(indices.shape + (4,), np.nan, dtype=np.float32)
    mask_ids = np.full(indices.shape, -1, dtype=np.int64)
    mask_table = []
    for r, g in enumerate(INDICES[0]):
        boxes[0, r] = GALLERY[g][1]
    for r, g in enumerate(INDICES[2]):
        if g >= 0:
            mask_ids[2, r] = len(mask_table)
            mask_table.append(_rle(GALLERY[g][1]))
    scores = np.where(indices >= 0, 0.9 - 0.1 * np.arange(6), -np.inf)
    provenance = [{"step": "search", "index": "Flat"}]
    if verify:
        scores[0, :len(VERIFIED_INLIERS)] = VERIFIED_INLIERS
        provenance.append(VERIFY_STEP)
    Ranking(indices, scores, np.array([q["key"] for q in queries]), np.array([g["key"] for g in gallery]),
            boxes=boxes, mask_ids=mask_ids, mask_table=mask_table, provenance=provenance).save(run / "ranking.npz")

    (run / "metrics.json").write_text(json.dumps({
        "dataset": "toy", "model": "toy-model", "query_mode": "box", "index": "Flat",
        "summary": {s: {"map": float(np.mean(AP[s])), "mp@5": 0.4} for s in TRUTH},
        "counts": {**{s: {"n_queries": 3, "n_queries_without_positives": 0} for s in TRUTH},
                   "n_queries": 3, "n_gallery": 8, "n_distractors": 0, "skipped": {"loading": 1, "queries": 0, "gallery": 0}},
        "skipped": {"loading": [["images/bad.jpg", "unreadable"]], "queries": [], "gallery": []},
        "rerank": "verify" if verify else "",
        "timings": SEARCH_META,
    }))
    with open(run / "per_query.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setup", "query", "query_id", "group", "npos", "ap", "mp@5"])
        for setup, (rows) in TRUTH.items():
            for q, (positives, _) in enumerate(rows):
                writer.writerow([setup, q, queries[q]["key"], queries[q]["group"], len(positives), AP[setup][q], 0.4])
    return run


def read_data(run: Path) -> dict:
    text = (run / "report" / "data.js").read_text()
    assert text.startswith("window.REPORT_DATA = ") and text.rstrip().endswith(";")
    return json.loads(text[len("window.REPORT_DATA = "):].rstrip().rstrip(";"))


def _yellow(path: Path) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int(((pixels[..., 0] > 200) & (pixels[..., 1] > 170) & (pixels[..., 2] < 90)).sum())


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return make_run(tmp_path)


def test_report_files_and_thumbnails(run: Path) -> None:
    page = build_run_report(run, top_k=6)
    assert page == run / "report.html"
    for name in ("data.js", "run.js", "style.css"):
        assert (run / "report" / name).stat().st_size > 0
    html = page.read_text()
    assert '<script src="report/data.js"></script>' in html and "<svg" in html
    assert "45.00" not in html and f"{100 * np.mean(AP['easy']):.2f}" in html  # metrics shown as %
    data = read_data(run)
    srcs = {q["thumb"] for q in data["queries"]} | {r[2] for q in data["queries"] for r in q["results"]}
    assert None not in srcs
    files = sorted((run / "report" / "thumbs").iterdir())
    assert {f"report/thumbs/{f.name}" for f in files} == srcs
    # 3 queries + q0's 6 boxed results + q1's 5 plain + q2's 3 masked; g0/g3/g2 plain appear once
    assert len(files) == 3 + 6 + 5 + 3
    for file in files:
        with Image.open(file) as image:
            assert image.format == "JPEG" and max(image.size) <= SIZE
        assert file.stat().st_size < 30_000


def test_framing_matches_truth(run: Path) -> None:
    build_run_report(run, top_k=6, setup="hard")
    data = read_data(run)
    assert data["defaultSetup"] == "hard" and data["defaultSort"] == "ap"
    for setup, expected in EXPECTED_LABELS.items():
        assert data["setups"][setup]["labels"] == expected
        assert data["setups"][setup]["ap"] == AP[setup]
        assert data["setups"][setup]["npos"] == [len(p) for p, _ in TRUTH[setup]]
    assert [len(q["results"]) for q in data["queries"]] == [6, 5, 3]
    assert data["queries"][1]["results"][0][0] == 6
    assert data["gallery"]["6"] == ["g6.png", (run.parent / "images" / "g6.png").as_uri()]
    assert data["queries"][0]["uri"] == (run.parent / "images" / "q0.jpg").as_uri()
    build_run_report(run, top_k=2)
    assert read_data(run)["setups"]["easy"]["labels"] == ["pn", "nn", "pp"]


def test_overlays_are_drawn(run: Path) -> None:
    build_run_report(run, top_k=6)
    data = read_data(run)
    thumbs = run / "report"

    def path(src: str) -> Path:
        return thumbs.parent / src

    boxed_g0, plain_g0 = data["queries"][0]["results"][0][2], data["queries"][1]["results"][1][2]
    assert boxed_g0 != plain_g0
    assert _yellow(path(boxed_g0)) > 200 and _yellow(path(plain_g0)) < 20
    assert _yellow(path(data["queries"][2]["results"][0][2])) > 200  # returned mask
    assert _yellow(path(data["queries"][0]["thumb"])) > 200  # query box + mask
    assert _yellow(path(data["queries"][2]["thumb"])) < 20  # query without box or mask


def test_rebuild_reuses_thumbnails_and_drops_stale(run: Path) -> None:
    build_run_report(run, top_k=6)
    folder = run / "report" / "thumbs"
    before = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    build_run_report(run, top_k=6)
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == before
    build_run_report(run, top_k=1)
    assert len(list(folder.iterdir())) == 3 + 3


def test_unreadable_image_and_unknown_setup(run: Path) -> None:
    dataset = json.loads((run / "dataset.json").read_text())
    Path(dataset["gallery"][6]["path"]).write_bytes(b"not an image")
    build_run_report(run, top_k=6)
    assert read_data(run)["queries"][1]["results"][0][2] is None
    with pytest.raises(ValueError, match="easy, hard"):
        build_run_report(run, setup="medium")
    (run / "per_query.csv").unlink()
    with pytest.raises(FileNotFoundError, match="per_query.csv"):
        build_run_report(run)


def test_page_loads_nothing_from_the_network(run: Path) -> None:
    build_run_report(run)
    for file in [run / "report.html", *(run / "report").glob("*.*")]:
        text = file.read_text()
        assert not re.search(r"https?:|[\"'(]//", text), file
        assert "file://" not in text or file.name == "data.js"  # links to the original images only


def test_interpolated_precision_on_reference_vector() -> None:
    labels = outcome_labels(np.array([4, 0, 9, 5, 3, 8, 1, 7, 2, 6]), np.array([0, 3, 7]), np.array([5]))
    assert labels == "npnjpnnpnn"
    curve = interpolated_precision(labels, 3, np.array([0.0, 0.34, 0.5, 0.67, 1.0]))
    np.testing.assert_allclose(curve, [0.5, 0.5, 0.5, 3 / 7, 3 / 7])
    assert interpolated_precision(labels[:6], 3, np.array([1.0]))[0] == 0.0  # cut: recall 1 unreached


def _leaderboard_csv(root: Path, run: Path) -> Path:
    path = root / "results" / "leaderboard.csv"
    path.parent.mkdir()
    rows = [
        ["2024-05-01", "toy", "a", "box", "Flat", "0123456789ab", 3, 8, 120.5, "../run", 45.0, 10.0],
        ["2024-05-02", "toy", "b", "mask", "Flat", "fedcba987654", 3, 8, 80.0, str(run), 65.0, 30.0],
        ["2024-05-03", "other", "c", "full", "HNSW", "aaaaaaaaaaaa", 5, 50, 300.0, "../nowhere", 15.0, ""],
    ]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["date", "dataset", "model", "query_mode", "index", "commit", "n_queries",
                         "n_gallery", "images_per_s", "run_dir", "map", "mp@5"])
        writer.writerows(rows)
    return path


def test_leaderboard_page_of_an_old_csv(run: Path, tmp_path: Path) -> None:
    """A CSV from before the rerank, search and combination columns still renders."""
    build_run_report(run)
    csv_path = _leaderboard_csv(tmp_path, run)
    page = build_leaderboard_page(csv_path)
    assert page == csv_path.with_name("leaderboard.html")
    html = page.read_text()
    assert re.findall(r'<section class="card dataset" data-dataset="([^"]*)"', html) == ["toy", "other"]
    assert len(re.findall(r"<tr data-config=", html)) == 3
    assert '<option value="toy">' in html and '<option value="other">' in html
    hrefs = re.findall(r'<a href="([^"]+)"', html)
    assert hrefs == ["../run/report.html"] * 2 + ["../nowhere/report.html"]
    assert (page.parent / hrefs[0]).resolve() == (run / "report.html").resolve()
    assert html.count('class="missing"') == 1
    assert ">45.00<" in html and ">65.00<" in html and ">120.5<" in html
    assert re.search(r'<th data-type="num" data-metric data-primary data-col="map"><button>map <span class="unit">%', html)
    assert 'data-metric class="more" data-col="mp@5"' in html and 'data-metric class="more" data-col="images_per_s"' not in html
    assert not re.search(r"https?:|[\"'(]//", html)


def _section(html: str, dataset: str) -> str:
    return re.search(rf'<section class="card dataset" data-dataset="{dataset}".*?</section>', html, re.S).group(0)


def _headers(section: str) -> tuple[list[str], list[str]]:
    """(main, behind the toggle) column names of a dataset's table."""
    cells = re.findall(r'<th data-type="\w+"([^>]*) data-col="([^"]+)">', section)
    return [c for flags, c in cells if "more" not in flags], [c for flags, c in cells if "more" in flags]


def test_leaderboard_leads_with_what_differs_and_the_main_metrics(tmp_path: Path) -> None:
    html = build_leaderboard_page(board_csv(tmp_path)).read_text()
    instre, oxford, pitts = (_section(html, d) for d in ("instre", "roxford5k", "pitts30k"))
    main, more = _headers(instre)
    assert main == ["run", "model", "query_mode", "regions", "rerank", "mAP", "hit@1", "box_mAP@50"]
    assert {"mAP@10", "hit@10", "box_mIoU", "index", "commit", "n_queries"} <= set(more)
    assert re.search(r"every run: index <b>flat</b> · search <b>Flat</b> · queries <b>200</b>", instre)
    assert _headers(oxford)[0] == ["run", "model", "index", "search", "rerank", "easy/mAP", "medium/mAP", "hard/mAP"]
    assert _headers(pitts)[0] == ["run", "model", "hit@1"]  # nobody re-ranked: no rerank column
    # reruns of one configuration share its key; the sweep is the folder with multirun.yaml, or
    # the multirun/<time> part of a path no longer on disk; its swept overrides are named
    configs = re.findall(r'<tr data-config="([^"]+)" data-sweep="([^"]*)"', instre)
    assert len(configs) == 10 and len({c for c, _ in configs}) == 7
    assert configs[0][0] == configs[7][0] == configs[8][0]  # the effnet box run of the sweep, then twice alone
    assert [sweep for _, sweep in configs].count(str(tmp_path / "multirun/2026-05-01_10-00-00")) == 4
    sweeps = json.loads(html_unescape(re.search(r'data-sweeps="([^"]*)"', instre).group(1)))
    assert sweeps[str(tmp_path / "multirun/2026-05-01_10-00-00")] == {
        "label": "multirun/2026-05-01_10-00-00", "swept": ["model=effnet_lite0,dinov2_vits14", "query=box,mask"]}
    assert sweeps[str(tmp_path / "multirun/2026-05-02_09-00-00")]["swept"] == ["rerank=[],[verify],[verify,aqe]"]
    gone = json.loads(html_unescape(re.search(r'data-sweeps="([^"]*)"', oxford).group(1)))
    assert gone == {str(tmp_path / "multirun/2026-05-03_08-00-00"): {"label": "multirun/2026-05-03_08-00-00", "swept": []}}
    # one bar per configuration (its latest run) for each main metric; speed charts where the CSV has speeds
    assert instre.count('data-chart="bars"') == 3 and "data-chart=\"speed\"" not in instre
    first_chart = re.search(r'data-chart="bars" data-metric="mAP">.*?</figure>', instre, re.S).group(0)
    assert first_chart.count('<rect class="bar"') == 7 and first_chart.count('class="bar-row best"') == 1
    assert "dinov2_vits14 · box · none · verify+aqe: 63.00" in first_chart
    assert pitts.count('data-chart="speed"') == 2 and pitts.count('<circle class="point"') == 10
    assert '<polyline class="frontier"' in pitts
    assert re.search(r'<a href="multirun/2026-05-01_10-00-00/instre/effnet_lite0-box-0/report.html">2026-05-01 00:00</a>', instre)
    assert 'class="missing" title="report not built yet: python -m retrieval.report outputs/instre' in instre
    assert not re.search(r"https?:|[\"'(]//", html)


def test_leaderboard_marks_random_weights(tmp_path: Path) -> None:
    """A `weights` column (the tag, a checkpoint, or `random`) is a setting like any other,
    and `random` stands out."""
    from retrieval.leaderboard import append_row

    path = tmp_path / "leaderboard.csv"
    for weights, value in (("laion2b", 50.0), ("random", 3.0)):
        append_row(path, {"date": "2026-01-01", "dataset": "d", "model": "clip_vit_b32", "weights": weights, "mAP": value})
    html = build_leaderboard_page(path).read_text()
    assert _headers(html)[0] == ["run", "weights", "mAP"]
    assert '<td class="warn text" data-v="random">random</td>' in html


def test_counts_and_timings_read_as_text(run: Path) -> None:
    metrics_time = datetime.fromtimestamp((run / "metrics.json").stat().st_mtime, timezone.utc)
    html = build_run_report(run).read_text()
    tables = {name: dict(re.findall(r"<tr><th>([^<]+)</th><td>([^<]*)</td></tr>", table))
              for name, table in re.findall(r'<table class="facts-table" id="(\w+)">(.*?)</table>', html, re.S)}
    assert tables["counts"] == {
        "setup easy": "queries 3 · without positives 0", "setup hard": "queries 3 · without positives 0",
        "queries": "3", "gallery images": "8", "distractors": "0", "skipped": "loading 1 · queries 0 · gallery 0"}
    assert tables["search"] == {"gallery vectors": "8", "ranking depth": "6", "index": "Flat", "index size": "60 KB",
                                "search": "exact"}
    assert tables["timings"] == {"search time": "0.003 s", "search speed": "3,884 queries/s",
                                 "extraction speed": "queries 59.8 · gallery 71.9 images/s"}
    assert tables["environment"] == {"search ranking built": "2020-01-02 03:04 UTC",
                                     "versions": "python 3.11.7 · torch 2.3.0 · numpy 1.26.4"}
    assert "None" not in html and "{&quot;" not in html and "top1" not in html
    # `run` is when the run was scored (metrics.json), not when its ranking was first searched
    assert f"run <b>{metrics_time:%Y-%m-%d %H:%M} UTC</b>" in html and "run <b>2020" not in html
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "created": "2026-03-04T05:06:07+00:00"}))
    assert "run <b>2026-03-04 05:06 UTC</b>" in build_run_report(run).read_text()
    assert '<span class="step none">no re-rank</span>' in build_run_report(run).read_text()


def test_report_names_the_weights_and_warns_of_random_ones(run: Path) -> None:
    assert "weights" not in build_run_report(run).read_text().split("</header>")[0]  # older runs: no field
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps({**metrics, "weights": "laion2b_s34b_b79k"}))
    head = build_run_report(run).read_text().split("</header>")[0]
    assert "weights <b>laion2b_s34b_b79k</b>" in head and "random-weights" not in head
    (run / "metrics.json").write_text(json.dumps({**metrics, "weights": "random"}))
    head = build_run_report(run).read_text().split("</header>")[0]
    assert "weights <b class=warn>random</b>" in head and 'id="random-weights"' in head


def test_verified_results_are_marked_with_their_inliers(tmp_path: Path) -> None:
    run = make_run(tmp_path, verify=True)
    html = build_run_report(run, top_k=6).read_text()
    steps = re.search(r'<p class="steps" id="steps">.*?</p>', html, re.S).group(0)
    assert 'search <b>Flat</b>' in steps and 'data-step="verify"' in steps
    assert "verify: sift, homography, ≥ 12 inliers, top 3" in steps and "2 results verified in 1 of 3 queries" in steps
    data = read_data(run)
    assert data["verified"] is True
    assert [r[5] for r in data["queries"][0]["results"]] == [1, 1, 0, 0, 0, 0]
    assert [r[1] for r in data["queries"][0]["results"][:2]] == list(VERIFIED_INLIERS)
    assert all(r[5] == 0 for q in data["queries"][1:] for r in q["results"])
    assert data["queries"][0]["results"][0][3] == list(GALLERY[0][1])  # its box, for the large view
    assert data["queries"][2]["results"][0][4] is not None and data["masks"][data["queries"][2]["results"][0][4]]["size"] == [H, W]
    assert data["queries"][0]["mask"] is not None and data["queries"][0]["box"] == list(QUERIES[0][1])
    # a step after verify re-scores the ranking: its scores are no inlier counts any more
    ranking = Ranking.load(run / "ranking.npz")
    ranking.provenance.append({"step": "rerank", "name": "aqe", "k": 2})
    ranking.save(run / "ranking.npz")
    html = build_run_report(run, top_k=6).read_text()
    assert "verify: sift" in html and "aqe: k=2" in html and "results verified" not in html
    assert read_data(run)["verified"] is False and all(r[5] == 0 for q in read_data(run)["queries"] for r in q["results"])


def test_thumbnail_of_a_rotated_photo_is_upright_with_its_box(tmp_path: Path) -> None:
    """A JPEG stored sideways with an EXIF orientation: boxes are in the upright frame (as
    the pipeline reads it), so the thumbnail must be upright for the box to land on the object."""
    from retrieval.report.thumbnails import Request, make_thumbnails

    upright = Image.new("RGB", (240, 320), (120, 120, 120))  # portrait, as a person sees it
    ImageDraw.Draw(upright).rectangle([20, 200, 99, 299], fill=(30, 60, 220))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # landscape on disk; orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    stored.save(path, exif=exif, quality=95)
    request = Request(str(path), (20.0, 200.0, 100.0, 300.0))
    name = make_thumbnails({request}, tmp_path / "thumbs")[request]
    thumb = np.asarray(Image.open(tmp_path / "thumbs" / name).convert("RGB")).astype(int)
    assert thumb.shape[:2] == (SIZE, SIZE * 3 // 4)  # upright: portrait
    yellow = (thumb[..., 0] > 200) & (thumb[..., 1] > 170) & (thumb[..., 2] < 90)
    ys, xs = np.nonzero(yellow)
    scale = SIZE / 320
    assert len(xs) > 100
    assert 20 * scale - 3 <= xs.min() and xs.max() <= 100 * scale + 3  # on the blue square's frame
    assert 200 * scale - 3 <= ys.min() and ys.max() <= 300 * scale + 3


def make_run_b(root: Path, ap: dict[str, list[float]], rows: list[list[int]] | None = None) -> Path:
    """Another run of the toy dataset with other per-query APs (and rankings)."""
    run = make_run(root)
    if rows is not None:
        ranking = Ranking.load(run / "ranking.npz")
        ranking.indices = np.array(rows, dtype=np.int64)
        ranking.provenance.append(VERIFY_STEP)
        ranking.save(run / "ranking.npz")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["summary"] = {s: {"map": float(np.mean(ap[s])), "mp@5": 0.5} for s in TRUTH}
    (run / "metrics.json").write_text(json.dumps(metrics))
    with open(run / "per_query.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setup", "query", "query_id", "group", "npos", "ap", "mp@5"])
        for setup, rows_ in TRUTH.items():
            for q, (positives, _) in enumerate(rows_):
                writer.writerow([setup, q, f"q{q}.jpg", "AB"[q % 2], len(positives), ap[setup][q], 0.5])
    return run


def test_compare_two_runs(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a")
    b = make_run_b(tmp_path / "b", {"easy": [0.9, 0.6, 0.2], "hard": [0.7, 0.2, 0.1]},
                   rows=[[0, 1, 3, 5, 2, 7], [3, 4, 6, 0, 2, -1], [6, 7, 1, -1, -1, -1]])
    page = build_compare_page(a, b)
    assert page == tmp_path / "compare_a_run_vs_b_run.html"  # both are named run: named by their paths
    html = page.read_text()
    assert 'href="a/run/report.html" class="missing"' in html and "verify: sift, homography" in html
    # per setup: A, B and B − A of every metric
    assert '<th>easy · B − A</th><td class="gain">+3.33</td><td class="gain">+10.00</td>' in html
    assert '<th>hard · B − A</th><td class="">+0.00</td><td class="gain">+10.00</td>' in html
    gained = re.search(r'<section class="card" id="gained">.*?</section>', html, re.S).group(0)
    lost = re.search(r'<section class="card" id="lost">.*?</section>', html, re.S).group(0)
    assert re.findall(r'data-id="([^"]+)"', gained) == ["q1.jpg"] and "AP 20.00 → 60.00 (+40.00)" in gained
    assert re.findall(r'data-id="([^"]+)"', lost) == ["q2.jpg"] and "AP 50.00 → 20.00 (-30.00)" in lost
    assert gained.count('class="run-letter small"') == 2 and gained.count("<figure class=\"thumb ") == 1 + 5 + 5
    assert "better in B</th><td class=\"gain\">1 queries" in html and "unchanged</th><td>1 queries" in html
    assert html.count('<circle class="point"') == 3
    thumbs = {Path(src).name for src in re.findall(r'<img loading="lazy" src="([^"]+)"', html)}
    assert thumbs == {f.name for f in (page.parent / page.stem / "thumbs").iterdir()}
    assert not re.search(r"https?:|[\"'(]//", html.replace('href="file://', ""))
    assert "file://" in html  # the originals, opened large


def test_compare_refuses_runs_of_different_datasets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b")
    dataset = json.loads((b / "dataset.json").read_text())
    (b / "dataset.json").write_text(json.dumps({**dataset, "name": "other"}))
    assert main(["--compare", str(a), str(b)]) == 2
    assert capsys.readouterr().err == (
        "error: a/run and b/run are runs of different datasets (toy and other): --compare needs two runs of one dataset\n")
    (b / "dataset.json").write_text(json.dumps(dataset))
    ranking = Ranking.load(b / "ranking.npz")
    ranking.query_ids = np.array(["x0.jpg", "x1.jpg", "x2.jpg"])
    ranking.save(b / "ranking.npz")
    with pytest.raises(ValueError, match="runs of toy with different queries \\(3 and 3\\)"):
        build_compare_page(a, b)
    with pytest.raises(ValueError, match="given twice"):
        build_compare_page(a, a)


def test_cli(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(run), "--top-k", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert len(read_data(run)["setups"]["easy"]["labels"][0]) == 3
    csv_path = _leaderboard_csv(tmp_path, run)
    out = tmp_path / "board.html"
    assert main(["--leaderboard", str(csv_path), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.exists()
    assert main([str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(SystemExit):
        main([])
    with pytest.raises(SystemExit):
        main([str(run), "--leaderboard", str(csv_path)])


# A leaderboard of 30 runs on three datasets, as sweeps and single runs leave it.
SWEEPS = {  # folder -> (overrides in its multirun.yaml, or None: the folder is gone from disk)
    "multirun/2026-05-01_10-00-00": ["dataset=instre", "model=effnet_lite0,dinov2_vits14", "query=box,mask"],
    "multirun/2026-05-02_09-00-00": ["dataset=instre", "model=dinov2_vits14", "rerank=[],[verify],[verify,aqe]"],
    "multirun/2026-05-03_08-00-00": None,
}
INSTANCE_METRICS = ("mAP", "mAP@10", "P@1", "P@5", "recall@10", "hit@1", "hit@5", "hit@10",
                    "box_mAP@0", "box_mAP@50", "box_mAP@50:95", "box_mIoU", "mask_mAP@50", "mask_mIoU")


def _instance_row(model: str, query: str, rerank: str, regions: str, seed: int) -> dict:
    """Instance-protocol columns; hit@10 is 100 for every run (a tie of all: no winner)."""
    base = {"effnet_lite0": 40.0, "dinov2_vits14": 55.0}[model] + {"box": 0.0, "mask": 4.0}[query]
    base += {"": 0.0, "verify": 6.0, "verify+aqe": 9.0}[rerank] + (3.0 if regions == "grid" else 0.0)
    rng = np.random.default_rng(seed)
    row = {metric: round(float(min(99.0, base + rng.uniform(-2, 2) + 5 * i)), 2) for i, metric in enumerate(INSTANCE_METRICS)}
    row["hit@10"] = 100.0
    return {"model": model, "query_mode": query, "combination": "", "index": "flat", "search": "Flat",
            "search_recall": 100.0, "regions": regions, "n_queries": 200, "n_gallery": 1000, "n_distractors": 0,
            "rerank": rerank, **row}


def board_runs() -> list[tuple[str, str, dict]]:
    """(dataset, run folder relative to the CSV, the row's other columns) of 30 runs, in time order."""
    runs = []
    sweep = "multirun/2026-05-01_10-00-00"
    for job, (model, query) in enumerate([(m, q) for m in ("effnet_lite0", "dinov2_vits14") for q in ("box", "mask")]):
        runs.append(("instre", f"{sweep}/instre/{model}-{query}-{job}", _instance_row(model, query, "", "none", job)))
    sweep = "multirun/2026-05-02_09-00-00"
    for job, rerank in enumerate(["", "verify", "verify+aqe"]):
        runs.append(("instre", f"{sweep}/instre/dinov2_vits14-box-{job}", _instance_row("dinov2_vits14", "box", rerank, "none", 10 + job)))
    for n in range(2):  # the same configuration as the first sweep's first job, run twice more: same numbers
        runs.append(("instre", f"outputs/instre/effnet_lite0-box/2026-05-04_1{n}-00-00", _instance_row("effnet_lite0", "box", "", "none", 0)))
    runs.append(("instre", "outputs/instre/dinov2_vits14-mask/2026-05-04_12-00-00", _instance_row("dinov2_vits14", "mask", "", "grid", 20)))

    def oxford(model: str, index: str, rerank: str, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        base = {"clip_vit_b16": 30.0, "dinov2_vits14": 40.0, "dinov2_vitb14": 48.0}[model] + (6.0 if rerank else 0.0)
        base -= 1.5 if index == "hnsw" else 0.0
        row = {"model": model, "query_mode": "box", "combination": "", "index": index, "regions": "none",
               "search": "Flat" if index == "flat" else "HNSW32 efSearch=64", "search_recall": 100.0 if index == "flat" else 97.1,
               "n_queries": 70, "n_gallery": 4993, "n_distractors": 0, "rerank": rerank}
        for setup, drop in (("easy", -20.0), ("medium", 0.0), ("hard", 25.0)):
            row[f"{setup}/mAP"] = round(base - drop + rng.uniform(-1, 1), 2)
            row[f"{setup}/mP@10"] = round(base - drop + 10 + rng.uniform(-1, 1), 2)
        return row

    sweep = "multirun/2026-05-03_08-00-00"
    for job, (model, index) in enumerate([(m, i) for m in ("clip_vit_b16", "dinov2_vits14", "dinov2_vitb14") for i in ("flat", "hnsw")]):
        runs.append(("roxford5k", f"{sweep}/roxford5k/{model}-box-{job}", oxford(model, index, "", 30 + job)))
    for n in range(3):
        runs.append(("roxford5k", f"outputs/roxford5k/dinov2_vitb14-box/2026-05-05_0{n}-00-00", oxford("dinov2_vitb14", "flat", "", 34)))
    runs.append(("roxford5k", "outputs/roxford5k/dinov2_vitb14-box/2026-05-05_09-00-00", oxford("dinov2_vitb14", "flat", "aqe", 34)))

    speeds = {"clip_vit_b16": 90.0, "clip_vit_b32": 260.0, "dinov2_vits14": 120.0, "dinov2_vitb14": 45.0, "effnet_lite0": 900.0}
    for n in range(2):
        for i, (model, speed) in enumerate(speeds.items()):
            hit = {"clip_vit_b16": 70.0, "clip_vit_b32": 62.0, "dinov2_vits14": 74.0, "dinov2_vitb14": 81.0, "effnet_lite0": 45.0}[model]
            runs.append(("pitts30k", f"outputs/pitts30k/{model}-full/2026-05-06_0{n}-0{i}-00", {
                "model": model, "query_mode": "full", "combination": "", "index": "flat", "search": "Flat",
                "search_recall": 100.0, "regions": "none", "n_queries": 6816, "n_gallery": 10000, "n_distractors": 0,
                "rerank": "", "images_per_s": speed * (1 + 0.05 * n), "queries_per_s": 50 * speed,
                "hit@1": hit, "hit@5": hit + 9, "hit@10": hit + 12}))
    return runs


def board_csv(root: Path) -> Path:
    """`root/leaderboard.csv` of `board_runs()`, written by the appender evaluate uses; sweep
    folders with their multirun.yaml (the third sweep's folder is gone), and a report for the
    first sweep's runs."""
    from retrieval.leaderboard import append_row

    for folder, overrides in SWEEPS.items():
        if overrides is not None:
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / "multirun.yaml").write_text(
                json.dumps({"hydra": {"overrides": {"hydra": ["hydra.mode=MULTIRUN"], "task": overrides}}}))
    csv_path = root / "leaderboard.csv"
    for n, (dataset, run_dir, columns) in enumerate(board_runs()):
        if run_dir.startswith("multirun/2026-05-01"):
            (root / run_dir).mkdir(parents=True, exist_ok=True)
            (root / run_dir / "report.html").write_text("<!doctype html><title>report</title>")
        append_row(csv_path, {"date": f"2026-05-{1 + n // 6:02d}T{n % 24:02d}:00:00+00:00", "dataset": dataset,
                              "commit": "0123456789ab", "run_dir": run_dir, **columns})
    return csv_path


def make_verified_run(make_cfg: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, lite0: Any, out: Path) -> Path:
    """A real run re-ranked by geometric verification, on the fixtures' tiny photo set (each
    query is also in the gallery, so verification confirms at least that image)."""
    from retrieval import pipeline
    from retrieval.models import create_model
    from retrieval.plan import model as model_spec
    from retrieval.stages import evaluate

    monkeypatch.setattr(model_spec, "create_model", lambda family, **options: (
        lite0 if family == "effnet_lite" and options.get("input_size") == 64 else create_model(family, **options)))
    monkeypatch.setattr(evaluate, "git_commit", lambda: "test")
    cfg = make_cfg("query=box", "rerank=[verify]", "rerank.verify.resize=320", "rerank.verify.query_resize=320",
                   "rerank.verify.min_inliers=8", "eval.report=true")
    pipeline.evaluate(cfg, out)
    return out
