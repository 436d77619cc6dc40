"""Miniature benchmark sets written in the exact on-disk formats of the real ones.

Each `make_*` writes a set under a folder and returns the raw annotation it wrote (not what
an adapter would derive from it), so tests can compute the expected truth on their own.
Images are small random-noise pictures: real, decodable files, but cheap.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

ROXFORD_GND = [
    {"bbx": [3.5, 2.5, 30.5, 20.49], "easy": [0, 2], "hard": [5], "junk": [1, 7]},
    {"bbx": [0.0, 0.0, 47.0, 35.0], "easy": [], "hard": [3, 4], "junk": [8]},
    {"bbx": [10.2, 4.8, 22.5, 33.5], "easy": [6, 9, 4], "hard": [], "junk": []},
]
"""Three queries over ten database images: one with only hard positives, one with none."""


def write_image(path: Path, seed: int, size: tuple[int, int] = (48, 36)) -> Path:
    """A small noise image; the suffix picks the format."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def make_revisitop(root: Path, name: str = "roxford5k", n_database: int = 10) -> dict:
    """`<root>/<name>/gnd_<name>.pkl` and `jpg/`, as revisitop's download.py leaves them."""
    folder = Path(root) / name
    imlist = [f"{name}_db_{i:03d}" for i in range(n_database)]
    qimlist = [f"{name}_query_{q}" for q in range(len(ROXFORD_GND))]
    for seed, stem in enumerate(imlist + qimlist):
        write_image(folder / "jpg" / f"{stem}.jpg", seed)
    entries = [dict(entry) for entry in ROXFORD_GND]
    entries[1]["hard"] = np.array(entries[1]["hard"], dtype=np.int64)  # both forms occur
    entries[2]["bbx"] = np.array(entries[2]["bbx"], dtype=np.float64)
    gnd = {"imlist": imlist, "qimlist": qimlist, "gnd": entries}
    with open(folder / f"gnd_{name}.pkl", "wb") as handle:
        pickle.dump(gnd, handle)
    return gnd


def make_pixel_labels(release: Path, gnd: dict, city: str = "oxford") -> dict[str, tuple[int, int, int, int]]:
    """A PROxford-style release: `<city>_pair2labelpath.npy` (pickled dict "{q}_{i}" -> JSON
    path) and one LabelMe JSON per (query, positive) pair, each outlining two rectangles.
    Returns pair -> the rectangles' union box (x1, y1, x2, y2), drawn inside a 48 x 36 image."""
    import json

    labels, boxes = {}, {}
    for q, entry in enumerate(gnd["gnd"]):
        for i in sorted({int(v) for v in list(entry["easy"]) + list(entry["hard"])}):
            x, y = 4 + 2 * q, 3 + i
            shapes = [[[x, y], [x + 10, y], [x + 10, y + 8], [x, y + 8]],
                      [[x + 10, y], [x + 20, y], [x + 20, y + 4], [x + 10, y + 4]]]
            path = Path("labels") / f"{q}_{i}.json"
            (release / path).parent.mkdir(parents=True, exist_ok=True)
            (release / path).write_text(json.dumps({"shapes": [{"label": "landmark", "points": s} for s in shapes]}))
            labels[f"{q}_{i}"] = str(path)
            boxes[f"{q}_{i}"] = (x, y, x + 20, y + 8)
    np.save(release / f"{city}_pair2labelpath.npy", labels, allow_pickle=True)
    return boxes


def make_revisitop1m(root: Path, count: int = 4) -> list[str]:
    """`<root>/revisitop1m/revisitop1m.txt` and `jpg/<sub>/<name>.jpg`; returns the list lines."""
    folder = Path(root) / "revisitop1m"
    names = [f"{i % 2:02d}/distractor_{i:04d}.jpg" for i in range(count)][::-1]
    for seed, entry in enumerate(names, start=1000):
        write_image(folder / "jpg" / entry, seed)
    (folder / "revisitop1m.txt").write_text("\n".join(names) + "\n")
    return names


def utm_name(easting: float, northing: float, tag: str) -> str:
    """A VPR-datasets-downloader style file name: `@east@north@zone@band@lat@lon@...@.jpg`."""
    return f"@{easting:.2f}@{northing:.2f}@17@T@40.44@-79.99@{tag}@@@@@.jpg"


UTM_DATABASE = [
    (585000.0, 4477000.0),
    (585025.0, 4477000.0),  # exactly 25 m east of query 0: on the boundary, included
    (585015.0, 4477020.0),  # 3-4-5 triangle: exactly 25 m from query 0
    (585025.01, 4477000.0),  # just past 25 m from query 0
    (585300.0, 4477300.0),
    (585310.0, 4477290.0),
    (586000.0, 4478000.0),
]
UTM_QUERIES = [
    (585000.0, 4477000.0),
    (585305.0, 4477296.0),
    (590000.0, 4470000.0),  # nowhere near anything: no positives
]


def make_vpr_utm(root: Path, queries: str = "queries", database: str = "database") -> dict:
    """UTM-named database and query folders; a few database images sit in a subfolder."""
    root = Path(root)
    written: dict[str, list[tuple[str, float, float]]] = {"database": [], "queries": []}
    for i, (east, north) in enumerate(UTM_DATABASE):
        sub = "part@1/" if i % 3 == 2 else ""
        relative = f"{database}/{sub}{utm_name(east, north, f'db{i}')}"
        write_image(root / relative, 2000 + i)
        written["database"].append((relative, east, north))
    for i, (east, north) in enumerate(UTM_QUERIES):
        relative = f"{queries}/{utm_name(east, north, f'q{i}')}"
        write_image(root / relative, 3000 + i)
        written["queries"].append((relative, east, north))
    return written


def make_vpr_bench(root: Path, n_ref: int = 12, n_query: int = 5) -> np.ndarray:
    """`ref/<int>.jpg`, `query/<int>.jpg` (no zero padding) and `ground_truth_new.npy`.

    Row q lists the reference numbers 2q..2q+2 (a +-1 frame window); the last row is moved to
    the end of the references so that it points past the last one, as VPR-Bench files do.
    """
    root = Path(root)
    for i in range(n_ref):
        write_image(root / "ref" / f"{i}.jpg", 4000 + i)
    for q in range(n_query):
        write_image(root / "query" / f"{q}.jpg", 5000 + q)
    table = np.empty((n_query, 2), dtype=object)
    for q in range(n_query):
        table[q, 0] = q
        table[q, 1] = [2 * q, 2 * q + 1, 2 * q + 2]
    table[n_query - 1, 1] = [n_ref - 1, n_ref, n_ref + 1]
    np.save(root / "ground_truth_new.npy", table, allow_pickle=True)
    return table


def camera_text(centre: tuple[float, float, float]) -> str:
    """A Baidu Mall style `.camera` file: intrinsics, distortion, rotation, centre, size."""
    return "\n".join(
        [
            "1000 0 640",
            "0 1000 480",
            "0 0 1",
            "0 0",
            "1 0 0",
            "0 1 0",
            "0 0 1",
            " ".join(f"{v:.6f}" for v in centre),
            "1280 960",
        ]
    ) + "\n"


BAIDU_DATABASE = [(0.0, 0.0, 0.0), (6.0, 8.0, 0.0), (6.0, 8.0, 0.01), (2.0, 3.0, 6.0), (40, 0, 0)]
BAIDU_QUERIES = [(0.0, 0.0, 0.0), (39.0, 1.0, 1.0), (100.0, 100.0, 100.0)]


def make_baidu_mall(root: Path) -> dict:
    """AnyLoc's Baidu Mall layout: `*_images_undistort/` images with `*_gt/` camera files."""
    root = Path(root)
    written: dict[str, list[tuple[str, tuple]]] = {"database": [], "queries": []}
    for split, images, cameras, centres, seed in (
        ("database", "training_images_undistort", "training_gt", BAIDU_DATABASE, 6000),
        ("queries", "query_images_undistort", "query_gt", BAIDU_QUERIES, 7000),
    ):
        for i, centre in enumerate(centres):
            stem = f"img_{i}"
            write_image(root / images / f"{stem}.jpg", seed + i)
            (root / cameras).mkdir(parents=True, exist_ok=True)
            (root / cameras / f"{stem}.camera").write_text(camera_text(centre))
            written[split].append((f"{images}/{stem}.jpg", centre))
    return written


GL3D_PAIRS = """0 1 0.52
0 2 0.31
1 0 0.52
0 0 1.0
2 5 0.10
2 5 0.10
3 4
5 2 0.44

6 7 0.20
"""
"""Directed pairs: a self pair, a duplicate, extra tokens, a blank line; image 4 has none."""


def make_gl3d(root: Path, n_images: int = 8) -> tuple[list[str], str]:
    """`eval_img_list.txt`, `gl3d_gt_pairs` and images under two scene folders."""
    root = Path(root)
    names = [f"data/scene_{i // 4}/undist_images/{i % 4:08d}.jpg" for i in range(n_images)]
    for seed, name in enumerate(names, start=8000):
        write_image(root / name, seed)
    (root / "eval_img_list.txt").write_text("\n".join(names) + "\n")
    (root / "gl3d_gt_pairs").write_text(GL3D_PAIRS)
    return names, GL3D_PAIRS


def write_ranking(path: Path, query_ids: list[str], gallery_ids: list[str], indices) -> Path:
    """A user's own ranking.npz (for `eval.ranking=`): any rows, repeats and padding included."""
    from retrieval.ranking import Ranking

    indices = np.asarray(indices, dtype=np.int64)
    return Ranking(
        indices=indices,
        scores=-np.arange(indices.size, dtype=np.float32).reshape(indices.shape),
        query_ids=np.array(query_ids),
        gallery_ids=np.array(gallery_ids),
    ).save(Path(path))


# Transcriptions of the reference evaluators' own loops (docs/formats.md sections 2, 3 and 5), for
# tests of the reference modes: written out step by step, independent of retrieval.metrics.


def compute_map_query(ranks, ok, junk, kappas):
    """revisitop `compute_map` for one query, step by step as its loop does it: positions of
    positive and junk entries in the ranking column, each positive moved up by the junk entries
    strictly before it, trapezoids with recall step 1 / len(ok), mP@k from 1-based positions."""
    ranks = np.asarray(ranks)
    ok = np.asarray(ok, dtype=np.int64)
    junk = np.asarray(junk, dtype=np.int64)
    if ok.shape[0] == 0:
        return math.nan, [math.nan] * len(kappas)
    pos = np.arange(len(ranks))[np.isin(ranks, ok)]
    junk_at = np.arange(len(ranks))[np.isin(ranks, junk)]
    shift, ij = 0, 0
    if len(junk_at):
        ip = 0
        while ip < len(pos):
            while ij < len(junk_at) and pos[ip] > junk_at[ij]:
                shift += 1
                ij += 1
            pos[ip] = pos[ip] - shift
            ip += 1
    ap, step = 0.0, 1.0 / len(ok)
    for j in range(len(pos)):
        rank = pos[j]
        before = 1.0 if rank == 0 else float(j) / rank
        after = float(j + 1) / (rank + 1)
        ap += (before + after) * step / 2.0
    pos = pos + 1
    precisions = []
    for kappa in kappas:
        kq = min(max(pos), kappa)  # fails when no positive was returned, as the reference does
        precisions.append((pos <= kq).sum() / kq)
    return ap, precisions


def revisitop_gnd_t(gnd_entries, setup):
    """The `gnd_t` list revisitop's example_evaluate.py builds for a setup: `ok` and `junk` as
    concatenations of the gnd lists (repeats kept)."""
    positive_keys, junk_keys = {
        "easy": (["easy"], ["junk", "hard"]),
        "medium": (["easy", "hard"], ["junk"]),
        "hard": (["hard"], ["junk", "easy"]),
    }[setup]
    return [
        {
            "ok": np.concatenate([np.asarray(entry[key], dtype=np.int64) for key in positive_keys]),
            "junk": np.concatenate([np.asarray(entry[key], dtype=np.int64) for key in junk_keys]),
        }
        for entry in gnd_entries
    ]


def compute_map(ranks, gnd_t, kappas):
    """revisitop `compute_map`: ranks is (db_size, n_queries); the mean AP and mean mP@k over
    the queries with a non-empty `ok`, which are skipped otherwise."""
    total, pr, nempty = 0.0, np.zeros(len(kappas)), 0
    for i, g in enumerate(gnd_t):
        if len(g["ok"]) == 0:
            nempty += 1
            continue
        ap, precisions = compute_map_query(ranks[:, i], g["ok"], g["junk"], kappas)
        total += ap
        pr = pr + np.asarray(precisions)
    return total / (len(gnd_t) - nempty), pr / (len(gnd_t) - nempty)


def gl3d_map(n_images, gt_lines, result_lines):
    """MIRorR `compute_GL3D_map`: per image, the `j` of every ground-truth line `i j` and of
    every result line `i j` (i == j lines skipped, duplicates kept); the mean of
    `overlap_ap` over the images with ground truth."""
    gt_vec = [[] for _ in range(n_images)]
    for line in gt_lines:
        items = line.split()
        if int(items[0]) != int(items[1]):
            gt_vec[int(items[0])].append(int(items[1]))
    res_vec = [[] for _ in range(n_images)]
    for line in result_lines:
        items = line.split()
        if int(items[0]) != int(items[1]):
            res_vec[int(items[0])].append(int(items[1]))
    aps = [overlap_ap(gt_vec[i], res_vec[i]) for i in range(n_images) if gt_vec[i]]
    return sum(aps) / len(aps)


def overlap_ap(gt_list, res_list):
    """MIRorR `compute_overlap_ap`: walk every result, trapezoid between consecutive
    (recall, precision) points, recall over len(gt_list) (duplicated lines included)."""
    gt_size = len(gt_list)
    old_recall, old_precision, ap, intersect = 0.0, 1.0, 0.0, 0
    for i in range(len(res_list)):
        if res_list[i] in gt_list:
            intersect += 1
        recall = intersect / gt_size
        precision = intersect / (i + 1.0)
        ap += (recall - old_recall) * (old_precision + precision) / 2.0
        old_precision, old_recall = precision, recall
    return ap


def soir_calculate_map(retrieved_labels, query_labels, k):
    """SoIR `calculate_map` (single-label case): relevance per retrieved entry; AP = mean of the
    precisions at the relevant entries, 0 without any; P@k = mean of relevance[:k], only for
    queries with at least k retrieved entries; an empty P@k mean is 0."""
    aps, precs = [], []
    for retrieved, label in zip(retrieved_labels, query_labels):
        relevance = np.array([item == label for item in retrieved])
        if relevance.sum() == 0:
            aps.append(0.0)
        else:
            precisions, n_relevant = [], 0
            for j, rel in enumerate(relevance):
                if rel:
                    n_relevant += 1
                    precisions.append(n_relevant / (j + 1))
            aps.append(np.mean(precisions))
        if k is not None and k <= len(relevance):
            precs.append(relevance[:k].mean())
    return np.mean(aps), (np.mean(precs) if precs else 0.0)


def soir_recall(retrieved_labels, query_labels, rank):
    """SoIR `get_recalls` at one rank: the share of queries whose label is in the first `rank`."""
    return np.mean([label in list(retrieved[:rank]) for retrieved, label in zip(retrieved_labels, query_labels)])


REPO = Path(__file__).resolve().parents[1]


def run_evaluate(workdir: Path, dataset: str, *overrides: str) -> Path:
    """Run the evaluate stage in-process on preset `dataset`; returns the run folder.

    Everything it writes stays under `workdir`; the report page is skipped and the
    leaderboard's git lookup stubbed, so only the pipeline's scoring path is exercised.
    """
    from unittest import mock

    from hydra import compose, initialize_config_dir

    from retrieval import pipeline
    from retrieval.stages import evaluate

    settings = [
        f"dataset={dataset}",
        f"paths.cache='{workdir / 'cache'}'",
        f"paths.leaderboard='{workdir / 'leaderboard.csv'}'",
        "eval.report=false",
        "extract.workers=0",
        *overrides,
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="config", overrides=settings)
    out = Path(workdir) / "run"
    with mock.patch.object(evaluate, "git_commit", return_value="test"):
        pipeline.evaluate(cfg, out)
    return out
