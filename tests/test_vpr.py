"""Place-recognition adapter: UTM radius, VPR-Bench numbering, Baidu Mall cameras."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from retrieval.datasets import load_dataset
from retrieval.datasets.vpr import utm_of, within_radius
from tests.fixtures_protocols import make_baidu_mall, make_vpr_bench, make_vpr_utm, run_evaluate


def brute_force(queries, database, radius: float) -> list[list[int]]:
    """Positives by plain Python distance, independent of the adapter's numpy search."""
    return [
        [d for d, db in enumerate(database) if math.dist(q, db) <= radius + 1e-9]
        for q in queries
    ]


def utm_expected(written: dict, radius: float = 25.0) -> tuple[list, list[list[int]]]:
    """Database in the loader's order (relative path in its folder) and brute-force positives."""
    order = sorted(written["database"], key=lambda item: item[0].split("/", 1)[1])
    database = [(east, north) for _, east, north in order]
    queries = [(east, north) for _, east, north in written["queries"]]
    return order, brute_force(queries, database, radius)


def test_utm_positives_boundary_included_and_at_in_parent_folder(tmp_path):
    root = tmp_path / "pitts@30k" / "images@x" / "test"  # '@' in parents must not matter
    written = make_vpr_utm(root)
    dataset = load_dataset("vpr", root=root)
    assert dataset.protocol == "vpr" and list(dataset.truth) == ["all"]
    order, expected = utm_expected(written)
    assert dataset.gallery_keys == [relative for relative, _, _ in order]
    assert dataset.query_keys == [relative for relative, _, _ in written["queries"]]
    assert [t.positives.tolist() for t in dataset.truth["all"]] == expected
    boundary = [i for i, (_, e, n) in enumerate(order) if (e, n) in {(585025.0, 4477000.0), (585015.0, 4477020.0)}]
    assert set(boundary) <= set(dataset.truth["all"][0].positives.tolist())
    assert dataset.truth["all"][2].positives.size == 0
    assert dataset.extra["queries_without_positives"] == 1
    assert all(t.junk.size == 0 for t in dataset.truth["all"])
    assert all(len(record.instances) == 1 for record in dataset.queries)


def test_utm_radius_setting(tmp_path):
    written = make_vpr_utm(tmp_path)
    dataset = load_dataset("vpr", root=tmp_path, radius_m=24.99)
    _, expected = utm_expected(written, 24.99)
    assert [t.positives.tolist() for t in dataset.truth["all"]] == expected
    assert expected[0] == [0]  # the two boundary images drop out


def test_utm_parsing_uses_file_name_only():
    path = Path("/data/sets@2024/pitts@30k/@585000.00@4477000.00@17@T@.jpg")
    assert utm_of(path) == (585000.0, 4477000.0)
    with pytest.raises(ValueError, match="utm_east"):
        utm_of(Path("/data/x@1@2/plain.jpg"))


def test_within_radius_blocks_agree(monkeypatch):
    rng = np.random.default_rng(0)
    queries, database = rng.uniform(0, 100, (37, 2)), rng.uniform(0, 100, (53, 2))
    whole = within_radius(queries, database, 20.0)
    monkeypatch.setattr("retrieval.datasets.vpr.BLOCK_ELEMENTS", 60)  # one query per block
    blocked = within_radius(queries, database, 20.0)
    assert [a.tolist() for a in whole] == [b.tolist() for b in blocked]
    assert [a.tolist() for a in whole] == brute_force(queries.tolist(), database.tolist(), 20.0)


def test_vpr_bench_numeric_order_and_indices_past_the_end(tmp_path):
    table = make_vpr_bench(tmp_path, n_ref=12, n_query=5)
    dataset = load_dataset("vpr", root=tmp_path, queries="query", database="ref", positives="vpr_bench")
    assert dataset.gallery_keys == [f"ref/{i}.jpg" for i in range(12)]  # 2 before 10
    assert dataset.query_keys == [f"query/{i}.jpg" for i in range(5)]
    expected = [sorted(v for v in table[q, 1] if v < 12) for q in range(5)]
    assert [t.positives.tolist() for t in dataset.truth["all"]] == expected
    assert dataset.truth["all"][4].positives.tolist() == [11]
    assert dataset.extra["ignored_ground_truth_indices"] == 2


def test_vpr_bench_rejects_non_numeric_names(tmp_path):
    make_vpr_bench(tmp_path)
    (tmp_path / "ref" / "0.jpg").rename(tmp_path / "ref" / "first.jpg")
    with pytest.raises(ValueError, match="integers"):
        load_dataset("vpr", root=tmp_path, queries="query", database="ref", positives="vpr_bench")


def test_vpr_bench_ignores_hidden_files(tmp_path):
    """A macOS resource fork ("._3.jpg") beside the images used to fail as a non-numeric name."""
    make_vpr_bench(tmp_path)
    (tmp_path / "ref" / "._3.jpg").write_bytes(b"\x00\x05\x16\x07")
    dataset = load_dataset("vpr", root=tmp_path, queries="query", database="ref", positives="vpr_bench")
    assert dataset.gallery_keys == [f"ref/{i}.jpg" for i in range(12)]


def test_baidu_camera_positives_3d_within_10m(tmp_path):
    written = make_baidu_mall(tmp_path)
    dataset = load_dataset(
        "vpr",
        root=tmp_path,
        queries="query_images_undistort",
        database="training_images_undistort",
        positives="camera",
    )
    database = [centre for _, centre in written["database"]]
    queries = [centre for _, centre in written["queries"]]
    expected = brute_force(queries, database, 10.0)
    assert [t.positives.tolist() for t in dataset.truth["all"]] == expected
    assert expected[0] == [0, 1, 3]  # (6, 8, 0) is exactly 10 m; (6, 8, 0.01) is not
    assert dataset.extra["radius_m"] == 10.0


def test_missing_camera_file_and_unknown_mode(tmp_path):
    make_baidu_mall(tmp_path)
    (tmp_path / "query_gt" / "img_1.camera").unlink()
    with pytest.raises(FileNotFoundError, match="img_1.camera"):
        load_dataset("vpr", root=tmp_path, queries="query_images_undistort",
                     database="training_images_undistort", positives="camera")
    with pytest.raises(ValueError, match="valid: utm, vpr_bench, camera"):
        load_dataset("vpr", root=tmp_path, positives="gps")


def test_missing_folders_explain_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="prepare"):
        load_dataset("vpr", root=tmp_path / "nowhere")
    (tmp_path / "queries").mkdir()
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        load_dataset("vpr", root=tmp_path)


def hit_rates(indices: np.ndarray, positives: list[list[int]], ns=(1, 5, 10, 20)) -> dict[str, float]:
    """hit@N over all queries (a query without positives is a miss), longhand."""
    return {
        f"hit@{n}": float(np.mean([bool(set(row[:n]) & set(p)) for row, p in zip(indices.tolist(), positives)]))
        for n in ns
    }


def utm_case(root: Path) -> tuple[str, list[list[int]]]:
    return "vpr", utm_expected(make_vpr_utm(root))[1]


def vpr_bench_case(root: Path) -> tuple[str, list[list[int]]]:
    table = make_vpr_bench(root)
    return "17places", [sorted(v for v in table[q, 1] if v < 12) for q in range(len(table))]


# Baidu Mall differs only in how positives are found (tested above); two runs keep this file fast.
@pytest.mark.parametrize("case", [utm_case, vpr_bench_case], ids=["utm", "vpr_bench"])
def test_end_to_end_hit_rates_match_the_saved_ranking(tmp_path, case):
    root = tmp_path / "set@1"
    preset, positives = case(root)
    run = run_evaluate(tmp_path, preset, f"dataset.root='{root}'")
    metrics = json.loads((run / "metrics.json").read_text())
    with np.load(run / "ranking.npz") as ranking:
        indices = ranking["indices"]
    assert indices.shape == (len(positives), min(100, metrics["counts"]["n_gallery"]))
    assert metrics["summary"]["all"] == pytest.approx(hit_rates(indices, positives), abs=1e-12)
    assert metrics["counts"]["all"]["n_queries"] == len(positives)
