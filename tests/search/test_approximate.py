"""Approximate indexes: saved once per gallery and reused, memory-mapped, tuned to a target
recall against an independent brute-force count, and their measured recall carried into
metrics.json, the leaderboard and the report."""
from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import pytest
import torch

from retrieval import artifacts, pipeline
from retrieval.search import index as index_module
from retrieval.search.approximate import measured
from retrieval.search.approximate.measured import Options, Run, prepare
from retrieval.search.approximate.recall import held_out_samples, recall_at_k
from retrieval.search.approximate.saved import INDEX, read_mapped, saved_index
from retrieval.search.approximate.shortlist import approximate_search, rescore
from retrieval.config import ConfigError
from retrieval.features import Features
from retrieval.ranking import Ranking
from retrieval.search.index import build_row_index
from retrieval.plan import RunPlan

from conftest import ComposeFn


def clustered(n: int, centres: np.ndarray, seed: int, spread: float = 0.3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = centres[rng.integers(0, len(centres), n)] + spread * rng.standard_normal((n, centres.shape[1]))
    return (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)


def one_row_each(vectors: np.ndarray) -> Features:
    n = len(vectors)
    return Features([f"g{i}" for i in range(n)], vectors, np.arange(n), np.ones(n, bool))


def brute_force_recall(index: faiss.Index, queries: np.ndarray, gallery: np.ndarray, k: int) -> float:
    """recall@k of `index` as set, counted with sets against a float64 numpy ranking."""
    truth = np.argsort(-(queries.astype(np.float64) @ gallery.astype(np.float64).T), axis=1)[:, :k]
    _, found = index.search(queries, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), truth.tolist())]))


def test_recall_at_k_is_the_shared_share_of_the_exact_top_k() -> None:
    truth = np.array([[0, 1, 2, 3], [4, 5, -1, -1]])
    found = np.array([[3, 9, 1, 8], [5, 7, 4, -1]])
    # query 0: {1, 3} of {0, 1, 2, 3} in the top 4; query 1: {4, 5} of its two real images
    assert recall_at_k(found, truth, 4) == pytest.approx((2 / 4 + 2 / 2) / 2)
    assert recall_at_k(found, truth, 2) == pytest.approx((0 / 2 + 1 / 2) / 2)  # only the first two of each count


def test_held_out_samples_are_disjoint_seeded_and_capped() -> None:
    valid = np.flatnonzero(np.arange(30) % 3)  # 20 valid queries among 30
    tune, report = held_out_samples(valid, size=8, seed=1)
    assert len(tune) == len(report) == 8 and not set(tune) & set(report) and set(tune) | set(report) <= set(valid)
    again = held_out_samples(valid, size=8, seed=1)
    assert (again[0] == tune).all() and (again[1] == report).all()
    few = held_out_samples(valid[:5], size=8, seed=1)
    assert (len(few[0]), len(few[1])) == (3, 2)  # at most half tune, the rest is held out
    alone = held_out_samples(valid[:1], size=8, seed=1)
    assert alone[0].tolist() == alone[1].tolist() == valid[:1].tolist()  # nothing to hold out


def test_tuning_picks_the_smallest_nprobe_reaching_the_target(tmp_path: Path) -> None:
    centres = np.random.default_rng(0).standard_normal((24, 16))
    vectors, queries = clustered(3000, centres, seed=1), clustered(120, centres, seed=2)
    index = saved_index(tmp_path, vectors, "IVF32,Flat", train_size=3000, seed=0, use_gpu=False)
    k, target, options = 10, 0.9, Options(target_recall=0.9, tune_queries=60, seed=3)
    run = Run(queries, np.ones(len(queries), bool), one_row_each(vectors), k, k)
    searched, report = prepare(index, tmp_path, "IVF32,Flat", run, {"nprobe": 1}, options, False, torch.device("cpu"))
    chosen = faiss.extract_index_ivf(searched).nprobe  # before the loop below sets the same index's

    tune, held_out = held_out_samples(np.arange(len(queries)), 60, 3)
    recalls = {}
    for nprobe in (1, 2, 4, 8, 16, 32):
        faiss.extract_index_ivf(index).nprobe = nprobe
        recalls[nprobe] = brute_force_recall(index, queries[tune], vectors, k)
    expected = min(n for n, r in recalls.items() if r >= target)
    assert expected > 1 and recalls[1] < target  # the target is not met for free
    assert report["params"] == {"nprobe": expected} and chosen == expected
    (tuning,) = (tmp_path / "tuning").glob("*.json")
    assert {int(n): r for n, r in json.loads(tuning.read_text())["recalls"].items()} == pytest.approx(
        {n: r for n, r in recalls.items() if n <= expected})
    faiss.extract_index_ivf(index).nprobe = expected
    assert report["recall_at_k"] == pytest.approx(brute_force_recall(index, queries[held_out], vectors, k), abs=1e-4)
    assert report["recall_queries"] == len(held_out) and report["held_out"] and report["k"] == k


def test_a_second_tuning_is_read_back_not_redone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    centres = np.random.default_rng(4).standard_normal((8, 8))
    vectors, queries = clustered(400, centres, seed=5), clustered(40, centres, seed=6)
    run = Run(queries, np.ones(40, bool), one_row_each(vectors), 5, 5)
    options = Options(target_recall=0.8, tune_queries=20)
    first = prepare(saved_index(tmp_path, vectors, "IVF8,Flat", 400, 0, False), tmp_path, "IVF8,Flat", run, {}, options, False,
                    torch.device("cpu"))[1]
    monkeypatch.setattr("retrieval.search.approximate.tuning.cheapest", lambda *args: pytest.fail("tuned again"))
    again = prepare(read_mapped(tmp_path / INDEX), tmp_path, "IVF8,Flat", run, {}, options, False, torch.device("cpu"))[1]
    assert again == first


def test_a_mapped_ivf_index_searches_like_the_one_in_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    centres = np.random.default_rng(7).standard_normal((8, 16))
    vectors, queries = clustered(800, centres, seed=8), clustered(30, centres, seed=9)
    for factory in ("IVF16,Flat", "OPQ4,IVF16,PQ4x4"):
        built = build_row_index(vectors, factory, {"nprobe": 4}, use_gpu=False, train_size=800)
        faiss.write_index(built, str(tmp_path / f"{factory}.faiss"))
        mapped = read_mapped(tmp_path / f"{factory}.faiss")
        lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(mapped).invlists)
        assert isinstance(lists, faiss.OnDiskInvertedLists)  # memory-mapped, not read into memory
        faiss.extract_index_ivf(mapped).nprobe = 4
        for got, want in zip(mapped.search(queries, 10), built.search(queries, 10)):
            np.testing.assert_array_equal(got, want)
    faiss.write_index(build_row_index(vectors, "HNSW8", use_gpu=False), str(tmp_path / "hnsw.faiss"))
    with caplog.at_level(logging.INFO, logger="retrieval.search.approximate.saved"):
        read_mapped(tmp_path / "hnsw.faiss")
    assert "IndexHNSWFlat, read into memory (faiss memory-maps only IVF inverted lists)" in caplog.text


def damage_index(folder: Path, how: str) -> None:
    """Damage the saved index in `folder` as a disk, a person or a stray copy would."""
    path = folder / INDEX
    data = bytearray(path.read_bytes())
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flipped":  # one bit of one stored vector: faiss reads it without complaint
        data[len(data) // 2] ^= 0x10
        path.write_bytes(data)
    else:  # another gallery's index, its meta.json copied along with it
        other = clustered(300, np.random.default_rng(1).standard_normal((4, 8)), seed=2)
        faiss.write_index(build_row_index(other, "IVF4,Flat", use_gpu=False, train_size=300), str(path))
        meta = json.loads((folder / "meta.json").read_text())
        meta.update(index_bytes=path.stat().st_size, sha256=artifacts.file_digest(path))
        (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("how, reason", [
    ("deleted", "is missing"),
    ("truncated", r"has \d+ bytes where \d+ were written"),
    ("flipped", "was modified and does not match the digest written with it"),
    ("another", "holds 300 vectors of 8 dimensions, the gallery 400 of 8"),
])
def test_a_damaged_saved_index_is_set_aside_and_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, how: str, reason: str
) -> None:
    centres = np.random.default_rng(12).standard_normal((8, 8))
    vectors, queries = clustered(400, centres, seed=13), clustered(20, centres, seed=14)
    expected = saved_index(tmp_path, vectors, "IVF8,Flat", 400, 0, False).search(queries, 5)
    damage_index(tmp_path, how)
    with caplog.at_level(logging.WARNING, logger="retrieval.search.approximate.saved"):
        rebuilt = saved_index(tmp_path, vectors, "IVF8,Flat", 400, 0, False)
    (record,) = caplog.records
    kept = "" if how == "deleted" else r" \(the damaged file is kept as index.faiss.damaged\)"
    assert re.fullmatch(rf"index: {re.escape(str(tmp_path / INDEX))} {reason}; rebuilding it{kept}", record.getMessage())
    assert (tmp_path / "index.faiss.damaged").is_file() == (how != "deleted")
    for got, want in zip(rebuilt.search(queries, 5), expected):
        np.testing.assert_array_equal(got, want)
    caplog.clear()
    monkeypatch.setattr(artifacts, "file_digest", lambda path: pytest.fail("an untouched index was read through"))
    with caplog.at_level(logging.WARNING, logger="retrieval.search.approximate.saved"):
        saved_index(tmp_path, vectors, "IVF8,Flat", 400, 0, False)
    assert not caplog.records  # the rebuilt index is read back as it is, at the cost of a stat


def test_a_run_after_the_index_was_truncated_rebuilds_it(make_cfg: ComposeFn, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    index = ["index=ivfpq", "index.factory='IVF2,Flat'", "index.train_size=8", "index.tune_queries=4"]
    first = Ranking.load(pipeline.ranking(make_cfg(*index, "index.search_params.nprobe=2")))
    (folder,) = (tmp_path / "cache" / "indexes").iterdir()
    damage_index(folder, "truncated")
    with caplog.at_level(logging.WARNING):
        again = Ranking.load(pipeline.ranking(make_cfg(*index, "index.search_params.nprobe=2", "dataset.k=5")))
    assert f"index: {folder / INDEX} has " in caplog.text and "rebuilding it" in caplog.text
    np.testing.assert_array_equal(again.indices, first.indices[:, :5])


def test_prepare_moves_the_index_to_every_gpu_and_sets_knobs_through_the_gpu_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CPU twin of the GPU path: a faiss that reports two GPUs gets the index cloned to them
    and its knobs set through GpuParameterSpace (which reaches GPU indexes)."""
    moved, spaces = [], []
    monkeypatch.setattr(index_module, "gpu_count", lambda: 2)
    monkeypatch.setattr(measured, "to_gpu", lambda index: moved.append(index.ntotal) or index)

    class RecordingSpace(faiss.ParameterSpace):
        def set_index_parameter(self, index: faiss.Index, name: str, value: float) -> None:
            spaces.append((name, value))
            super().set_index_parameter(index, name, value)

    monkeypatch.setattr(faiss, "GpuParameterSpace", RecordingSpace, raising=False)
    vectors = clustered(200, np.random.default_rng(10).standard_normal((4, 8)), seed=11)
    index = saved_index(tmp_path, vectors, "IVF4,Flat", 200, 0, False)
    run = Run(vectors[:10], np.ones(10, bool), one_row_each(vectors), 5, 5)
    prepare(index, tmp_path, "IVF4,Flat", run, {"nprobe": 2}, Options(), None, torch.device("cpu"))
    assert moved == [200] and spaces == [("nprobe", 2.0)]


def test_the_index_is_built_once_and_reused_when_only_k_or_nprobe_change(
    make_cfg: ComposeFn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    index = ["index=ivfpq", "index.factory='IVF2,Flat'", "index.train_size=8", "index.tune_queries=4"]
    first = Ranking.load(pipeline.ranking(make_cfg(*index, "index.search_params.nprobe=1")))
    (folder,) = (tmp_path / "cache" / "indexes").iterdir()
    before = (folder / INDEX).stat()
    with caplog.at_level(logging.INFO):
        for run in (["dataset.k=5", "index.search_params.nprobe=1"], ["dataset.k=5", "index.search_params.nprobe=2"]):
            again = Ranking.load(pipeline.ranking(make_cfg(*index, *run)))
    after = (folder / INDEX).stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert f"index: reusing {folder}" in caplog.text and len(list((tmp_path / "cache" / "indexes").iterdir())) == 1
    assert len(list((tmp_path / "cache" / "rankings").iterdir())) == 3  # three rankings, one index

    stores = RunPlan.from_config(make_cfg(*index, "index.search_params.nprobe=2")).stores
    gallery, queries = stores["gallery"].load(), stores["queries"].load()
    fresh = build_row_index(gallery.vectors, "IVF2,Flat", {"nprobe": 2}, use_gpu=False, train_size=8)
    hits = approximate_search(fresh, queries.per_image(), gallery.row_image, 5, 5)
    np.testing.assert_array_equal(again.indices, hits.images)  # the reused index searches as a fresh build
    assert first.indices.shape[1] == len(gallery.keys) and again.indices.shape[1] == 5
    search_step = next(step for step in again.provenance if step["step"] == "search")
    assert search_step["search_params"] == {"nprobe": 2.0} and 0 <= search_step["recall_at_k"] <= 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["index.factory='IVF12,Bogus'"],
         "index.factory=IVF12,Bogus is not valid: faiss cannot build it for inner product at d=1280 (could not parse code "
         "description Bogus in IVF12,Bogus); use index=flat, index=hnsw or another faiss index_factory string, such as \"index.factory='IVF1024,PQ32'\""),
        (["model=dinov2_vits14", "index.factory='IVF16,PQ10'"],  # 10 divides 7680, not DINOv2-S's 384
         "index.factory=IVF16,PQ10 is not valid: faiss cannot build it for inner product at d=384 (The dimension of the "
         "vector (d) should be a multiple of the number of subquantizers (M)); use index=flat, "
         "index=hnsw or another faiss index_factory string, such as \"index.factory='IVF1024,PQ32'\""),
        (["index=ivfpq", "index.factory='IVF2,Flat'", "index.search_params.nprobe=-3"],
         "index.search_params.nprobe=-3 is not valid: index.factory=IVF2,Flat has 2 inverted lists: use a whole number "
         "from 1 to 2"),
        (["index=ivfpq", "index.factory='IVF2,Flat'", "index.search_params.nprobe=4"],
         "index.search_params.nprobe=4 is not valid: index.factory=IVF2,Flat has 2 inverted lists: use a whole number "
         "from 1 to 2"),
        (["index=ivfpq", "index.factory='IVF4,Flat'"],  # the preset's nprobe (32) with a factory of fewer lists
         "index.search_params.nprobe=32 is not valid: index.factory=IVF4,Flat has 4 inverted lists: use a whole number "
         "from 1 to 4"),
        (["index=hnsw", "index.search_params.efSearch=0"],
         "index.search_params.efSearch=0 is not valid: use a whole number >= 1, and at least the k results each query "
         "keeps (dataset.k) for the graph search to find them all"),
        (["index=ivfpq", "index.factory=PQ32", "~index.search_params", "index.target_recall=0.95"],
         "index.target_recall=0.95 needs a search-time knob to tune, and index.factory=PQ32 has none: use an IVF or HNSW "
         "factory (nprobe, efSearch), or index.target_recall=null"),
        (["index=hnsw", "index.target_recall=1.5"], "index.target_recall=1.5 is not valid: use a number > 0 and <= 1 or null"),
    ],
)
def test_bad_index_settings_are_refused_before_any_extraction(make_cfg: ComposeFn, tmp_path: Path, overrides, message) -> None:
    with pytest.raises(ConfigError) as error:
        pipeline.evaluate(make_cfg(*overrides), tmp_path / "out")
    assert str(error.value) == message
    assert not (tmp_path / "cache" / "features").exists()


def test_demo_run_reports_its_recall_in_metrics_leaderboard_and_report(tmp_path: Path) -> None:
    """End to end on the built-in demo set (40 gallery images: IVF4 fits), with an old-style
    leaderboard row before it that must stay readable."""
    from hydra import compose, initialize_config_dir

    from conftest import REPO

    leaderboard = tmp_path / "leaderboard.csv"
    leaderboard.write_text("date,dataset,model,index,mAP\n2026-01-01,demo,effnet_lite0,flat,50.0\n")
    overrides = [f"paths.cache={tmp_path / 'cache'}", f"paths.leaderboard={leaderboard}", "extract.workers=0",
                 "model.input_size=64", "dataset.k=10", "index=ivfpq", "index.factory='IVF4,Flat'",
                 "index.target_recall=0.9", "index.tune_queries=20"]
    with initialize_config_dir(version_base=None, config_dir=str(REPO / "conf")):
        cfg = compose("config", overrides=overrides)
    metrics = json.loads(pipeline.evaluate(cfg, tmp_path / "out").read_text())

    search = metrics["search"]
    assert (search["index"], search["exact"], search["k"], search["recall_queries"]) == ("IVF4,Flat", False, 10, 20)
    assert 0 < search["recall_at_k"] <= 1 and set(search["params"]) == {"nprobe"}  # tuned on 20 queries, measured on 20 others
    with open(leaderboard, newline="") as handle:
        old, new = list(csv.DictReader(handle))
    assert (old["mAP"], old["search"], old["search_recall"]) == ("50.0", "", "")
    assert new["search"] == f"IVF4,Flat nprobe={search['params']['nprobe']:g}"
    assert float(new["search_recall"]) == pytest.approx(100 * search["recall_at_k"], abs=0.01)
    page = (tmp_path / "out" / "report.html").read_text()
    nprobe = search["params"]["nprobe"]
    assert (f"approximate search: recall@10 {search['recall_at_k']:.3f} against exact (IVF4,Flat, nprobe {nprobe:g}) "
            "on 20 held-out queries") in page


def test_exact_runs_say_so(make_cfg: ComposeFn, tmp_path: Path) -> None:
    metrics = json.loads(pipeline.evaluate(make_cfg(), tmp_path / "out").read_text())
    assert metrics["search"] == {"index": "Flat", "exact": True}
    with open(tmp_path / "leaderboard.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    assert (row["search"], row["search_recall"]) == ("Flat", "100.0")


def test_rescore_orders_each_shortlist_by_its_exact_score() -> None:
    """The library's re-scoring against a float64 numpy sort of the same shortlist, with
    padding and a tied pair (two identical rows: the lower id first)."""
    rng = np.random.default_rng(3)
    gallery = clustered(300, rng.standard_normal((6, 16)), seed=4)
    gallery[7] = gallery[8]
    queries = clustered(5, rng.standard_normal((6, 16)), seed=5)
    queries[0] = gallery[8]
    shortlist = np.stack([rng.permutation(300)[:40] for _ in queries])
    shortlist[0, :2] = [8, 7]
    shortlist[1, -3:] = -1
    scores, ids = rescore(queries, shortlist, gallery.astype(np.float16), block=2)
    widened = gallery.astype(np.float16).astype(np.float64)
    for q, row in enumerate(shortlist):
        real = row[row >= 0]
        exact = widened[real] @ queries[q].astype(np.float64)
        expected = real[np.lexsort((real, -exact))]
        assert ids[q, : len(real)].tolist() == expected.tolist()
        assert np.all(ids[q, len(real):] == -1) and np.all(np.isneginf(scores[q, len(real):]))
        np.testing.assert_allclose(scores[q, : len(real)], np.sort(exact)[::-1], rtol=1e-5, atol=1e-6)
    assert ids[0, :2].tolist() == [7, 8]


def test_a_coarse_pq_index_with_its_whole_shortlist_rescored_ranks_as_exact_search() -> None:
    rng = np.random.default_rng(6)
    gallery = clustered(512, rng.standard_normal((8, 32)), seed=7, spread=0.05)
    queries = clustered(20, rng.standard_normal((8, 32)), seed=8, spread=0.05)
    index = build_row_index(gallery, "PQ4x4")
    truth = np.argsort(-(queries.astype(np.float64) @ gallery.astype(np.float64).T), axis=1, kind="stable")[:, :10]
    raw = approximate_search(index, queries, np.arange(512), 10, 10)
    rescored = approximate_search(index, queries, np.arange(512), 10, 512, rescore_from=gallery)
    assert rescored.images.tolist() == truth.tolist()
    assert raw.images.tolist() != truth.tolist()  # the coarse codes alone do not order the clusters
