"""Miniature benchmark sets written in the exact on-disk formats of the real ones.

Each `make_*` writes a set under a folder and returns the raw annotation it wrote (not what
an adapter would derive from it), so tests can compute the expected truth on their own.
Images are small random-noise pictures: real, decodable files, but cheap.
"""
from __future__ import annotations

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
