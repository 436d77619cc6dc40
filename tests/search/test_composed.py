"""Composed queries (image + words): every combination method against an independent numpy
computation over the full similarity matrix (WeiCom through scipy's normal CDF), blockwise
equal to one block, ties, region galleries, and end to end: a lambda sweep from cached
embeddings, the leaderboard's combination column, the report, the refusals."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import norm

from conftest import REPO, ComposeFn
from retrieval import pipeline
from retrieval.config import ConfigError
from retrieval.leaderboard import read_rows
from retrieval.ranking import Ranking
from retrieval.registry import UnknownName
from retrieval.search.composed import COMBINATIONS, combination_settings, composed_search
from retrieval.stages import evaluate as evaluate_stage
from retrieval.stages import extract as extract_stage
from retrieval.plan import RunPlan
from test_text_queries import clip_overrides, longhand_ap, source  # noqa: F401  (source: the checkpoint fixture)

METHODS = ("image", "text", "average", "weicom")


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def gallery_rows(rng: np.random.Generator, n_images: int, dim: int, most_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of `n_images` images, 0..most_rows each (an image with none was skipped)."""
    counts = rng.integers(0, most_rows + 1, n_images)
    counts[0] = max(counts[0], 1)
    return unit(rng.normal(size=(counts.sum(), dim))), np.repeat(np.arange(n_images), counts)


def best_row_similarities(queries: np.ndarray, vectors: np.ndarray, row_image: np.ndarray, n_images: int) -> np.ndarray:
    """(queries, images) cosine similarity of each image's best row; -inf for images without rows."""
    rows = queries.astype(np.float64) @ vectors.astype(np.float64).T
    out = np.full((len(queries), n_images), -np.inf)
    for image in range(n_images):
        mine = row_image == image
        if mine.any():
            out[:, image] = rows[:, mine].max(axis=1)
    return out


def reference_scores(method: str, image: np.ndarray, text: np.ndarray, weight: float) -> np.ndarray:
    """docs/formats.md section 6, longhand: z over the images that have rows, unbiased std, Phi."""
    has_rows = np.isfinite(image[0])

    def phi(s: np.ndarray) -> np.ndarray:
        values = s[:, has_rows]
        z = (s - values.mean(axis=1, keepdims=True)) / values.std(axis=1, ddof=1, keepdims=True)
        return norm.cdf(z)

    scores = {
        "image": lambda: image,
        "text": lambda: text,
        "average": lambda: (image + text) / 2,
        "weicom": lambda: (1 - weight) * phi(image) + weight * phi(text),
    }[method]()
    return np.where(has_rows, scores, -np.inf)


def dense(hits: Any, n_images: int) -> np.ndarray:
    """The scores a search returned, at their images (-inf elsewhere)."""
    out = np.full((len(hits.images), n_images), -np.inf)
    for q, (images, scores) in enumerate(zip(hits.images, hits.scores)):
        out[q, images[images >= 0]] = scores[images >= 0]
    return out


def problem(seed: int = 0, n_queries: int = 6, n_images: int = 50, dim: int = 24, most_rows: int = 4):
    rng = np.random.default_rng(seed)
    vectors, row_image = gallery_rows(rng, n_images, dim, most_rows)
    images, texts = unit(rng.normal(size=(n_queries, dim))), unit(rng.normal(size=(n_queries, dim)))
    return images, texts, vectors, row_image, n_images


# ------------------------------------------------------------------ the scores


@pytest.mark.parametrize("most_rows", [1, 4], ids=["whole images", "regions"])
@pytest.mark.parametrize("weight", [0.0, 0.3, 0.6, 1.0])
def test_weicom_matches_scipy_over_the_full_matrix(most_rows: int, weight: float) -> None:
    images, texts, vectors, row_image, n = problem(most_rows=most_rows)
    expected = reference_scores("weicom", best_row_similarities(images, vectors, row_image, n),
                                best_row_similarities(texts, vectors, row_image, n), weight)
    hits = composed_search(images, texts, vectors, row_image, n, n, "weicom", weight)
    np.testing.assert_allclose(dense(hits, n), expected, atol=1e-5)
    assert all((np.diff(row[np.isfinite(row)]) <= 0).all() for row in hits.scores)  # best first


@pytest.mark.parametrize("method", METHODS)
def test_each_method_ranks_as_numpy(method: str) -> None:
    images, texts, vectors, row_image, n = problem(seed=1)
    expected = reference_scores(method, best_row_similarities(images, vectors, row_image, n),
                                best_row_similarities(texts, vectors, row_image, n), 0.3)
    hits = composed_search(images, texts, vectors, row_image, n, 10, method, 0.3)
    order = np.argsort(-expected, axis=1, kind="stable")[:, :10]
    assert (hits.images == np.where(np.isfinite(np.take_along_axis(expected, order, 1)), order, -1)).all()
    np.testing.assert_allclose(hits.scores, np.take_along_axis(expected, order, 1).astype(np.float32), atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("max_cells", [1, 5, 37, 400])
def test_blockwise_equals_one_block(method: str, max_cells: int) -> None:
    images, texts, vectors, row_image, n = problem(seed=2, n_queries=7)
    vectors = vectors.astype(np.float16)  # stored half precision, widened per block
    whole = composed_search(images, texts, vectors, row_image, n, 20, method, 0.4)
    blocked = composed_search(images, texts, vectors, row_image, n, 20, method, 0.4, max_cells=max_cells)
    assert (blocked.images == whole.images).all() and (blocked.rows == whole.rows).all()
    np.testing.assert_allclose(blocked.scores, whole.scores, atol=1e-6)


def test_rows_localise_with_the_first_similarity_the_method_reads() -> None:
    """A region gallery returns, per image, the row that gave its image similarity (its text
    similarity's row for `text`): each modality takes its own best row before combining."""
    images, texts, vectors, row_image, n = problem(seed=3, most_rows=5)
    for method, queries in (("weicom", images), ("average", images), ("image", images), ("text", texts)):
        hits = composed_search(images, texts, vectors, row_image, n, n, method, 0.5)
        row_scores = queries @ vectors.T
        for q in range(len(queries)):
            for image, row in zip(hits.images[q], hits.rows[q]):
                if image < 0:
                    continue
                assert row_image[row] == image
                assert row_scores[q, row] == pytest.approx(row_scores[q, row_image == image].max(), abs=1e-6)


def test_ties_go_to_the_lower_image_across_blocks() -> None:
    rng = np.random.default_rng(4)
    one = unit(rng.normal(size=(1, 8)))
    vectors = np.repeat(one, 9, axis=0)  # nine identical images
    row_image = np.arange(9)
    queries = unit(rng.normal(size=(2, 8)))
    for max_cells in (1, 4, 1 << 20):
        for method in METHODS:
            hits = composed_search(queries, queries, vectors, row_image, 9, 9, method, 0.3, max_cells=max_cells)
            assert (hits.images == np.arange(9)).all(), (method, max_cells)


def test_constant_similarities_standardise_to_zero() -> None:
    """A query whose similarities are all equal carries no ranking information: z = 0, Phi = 0.5."""
    rng = np.random.default_rng(5)
    vectors = np.repeat(unit(rng.normal(size=(1, 8))), 5, axis=0)
    hits = composed_search(unit(rng.normal(size=(1, 8))), unit(rng.normal(size=(1, 8))), vectors, np.arange(5), 5, 5, "weicom", 0.3)
    np.testing.assert_allclose(hits.scores, 0.5)
    single = composed_search(vectors[:1], vectors[:1], vectors[:1], np.arange(1), 1, 1, "weicom", 0.3)
    np.testing.assert_allclose(single.scores, 0.5)  # one image: the unbiased std is undefined


def test_weicom_at_the_ends_ranks_as_one_modality() -> None:
    """Phi is increasing, so lambda = 0 ranks as the image alone and lambda = 1 as the words."""
    images, texts, vectors, row_image, n = problem(seed=6)
    for weight, alone in ((0.0, "image"), (1.0, "text")):
        a = composed_search(images, texts, vectors, row_image, n, n, "weicom", weight)
        b = composed_search(images, texts, vectors, row_image, n, n, alone, weight)
        assert (a.images == b.images).all()


def test_methods_are_registered_and_lambda_keys_only_weicom() -> None:
    assert set(COMBINATIONS.available()) == set(METHODS)
    with pytest.raises(UnknownName, match="Valid: average, image, text, weicom"):
        composed_search(*problem()[:4], 50, 5, "sum", 0.3)
    assert combination_settings("weicom", 0) == {"combine": "weicom", "lambda": 0.0}
    assert combination_settings("average", 0.7) == combination_settings("average", 0.2) == {"combine": "average", "lambda": None}


def test_runs_on_the_gpu_when_there_is_one() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    images, texts, vectors, row_image, n = problem(seed=7)
    on_gpu = composed_search(images, texts, vectors, row_image, n, n, "weicom", 0.3, device=torch.device("cuda"))
    on_cpu = composed_search(images, texts, vectors, row_image, n, n, "weicom", 0.3)
    np.testing.assert_allclose(on_gpu.scores, on_cpu.scores, atol=1e-5)


# ------------------------------------------------------------------ end to end


def composed_file(folder: Path) -> Path:
    """Three composed queries on the folder set: an image (one with a box), words, truth."""
    path = folder / "composed.json"
    path.write_text(json.dumps([
        {"id": "c1", "image": "images/apple1/apple1-000-000.png", "box": [20, 20, 100, 110], "text": "the same apple, seen from above",
         "instance": "apple1"},
        {"id": "c2", "image": "images/cup1/cup1-045-180.png", "text": "a cup of another colour", "instance": "cup2"},
        {"id": "c3", "image": "images/apple2/apple2-090-068.png", "text": "a cup", "positives": [
            "images/cup1/cup1-000-000.png", "images/cup2/cup2-000-000.png"]},
    ]))
    return path


class Extractions:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []
        fill = extract_stage.fill_store

        def counted(store: Any, items: Any, *args: Any, desc: str, **options: Any) -> dict:
            stats = fill(store, items, *args, desc=desc, **options)
            self.calls.append((desc, stats["embedded"]))
            return stats

        monkeypatch.setattr(extract_stage, "fill_store", counted)


def test_composed_queries_end_to_end(make_cfg: ComposeFn, source: tuple[torch.nn.Module, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate_stage, "git_commit", lambda: "test")
    extractions = Extractions(monkeypatch)
    file = composed_file(tmp_path)
    base = ["query=composed", "query.cut=box", f"query.file={file}", *clip_overrides(source[1])]
    cfg = make_cfg(*base, "query.lambda=0.3", "eval.report=true")
    metrics = json.loads(pipeline.evaluate(cfg, tmp_path / "run").read_text())
    # c2 and c3 have no box: their image part is the whole image, which the gallery then reuses
    assert sorted(extractions.calls) == [("gallery", 10), ("queries", 3), ("texts", 3)]

    # the ranking is WeiCom of the stored vectors, computed here by numpy and scipy
    query_store, _ = pipeline.features(cfg)
    stores = RunPlan.from_config(cfg).stores
    images, texts = stores["queries"].load().per_image(), stores["texts"].load().per_image()
    gallery = stores["gallery"].load()
    n = len(gallery.keys)
    expected = reference_scores("weicom", best_row_similarities(images, gallery.vectors, gallery.row_image, n),
                                best_row_similarities(texts, gallery.vectors, gallery.row_image, n), 0.3)
    ranking = Ranking.load(tmp_path / "run" / "ranking.npz")
    along = np.take_along_axis(expected, ranking.indices, 1)
    np.testing.assert_allclose(ranking.scores, along, atol=1e-5)
    assert (np.diff(along, axis=1) <= 1e-6).all() and (np.sort(ranking.indices, axis=1) == np.arange(n)).all()

    # scored by longhand AP against the file's truth
    keys = list(ranking.gallery_ids)
    positives = [[i for i, k in enumerate(keys) if "/apple1/" in k], [i for i, k in enumerate(keys) if "/cup2/" in k],
                 sorted([keys.index("images/cup1/cup1-000-000.png"), keys.index("images/cup2/cup2-000-000.png")])]
    aps = [longhand_ap(ranking.indices[q].tolist(), positives[q]) for q in range(3)]
    assert metrics["summary"]["all"]["mAP"] == pytest.approx(np.mean(aps), abs=1e-9)
    assert (metrics["query_mode"], metrics["combination"]) == ("composed", "weicom lambda=0.3 cut=box")
    row = read_rows(tmp_path / "leaderboard.csv")[0]
    assert (row["query_mode"], row["combination"]) == ("composed", "weicom lambda=0.3 cut=box")
    search_step = [step for step in ranking.provenance if step["step"] == "search"][0]
    assert (search_step["combine"], search_step["lambda"]) == ("weicom", 0.3)

    # the report shows both parts of each query
    data = json.loads((tmp_path / "run" / "report" / "data.js").read_text().removeprefix("window.REPORT_DATA = ").rstrip(";\n"))
    assert [q["text"] for q in data["queries"]] == ["the same apple, seen from above", "a cup of another colour", "a cup"]
    assert all(q["thumb"] and q["uri"] for q in data["queries"])

    # a lambda sweep ranks again from the cached vectors; methods that ignore lambda rank once
    extractions.calls.clear()
    sweep = {weight: pipeline.ranking(make_cfg(*base, f"query.lambda={weight}")) for weight in (0, 0.5, 1)}
    assert len(set(sweep.values()) | {pipeline.ranking(cfg)}) == 4
    assert all(embedded == 0 for _, embedded in extractions.calls)
    averages = {pipeline.ranking(make_cfg(*base, "query.combine=average", f"query.lambda={w}")) for w in (0, 0.5)}
    assert len(averages) == 1
    image_alone = Ranking.load(pipeline.ranking(make_cfg(*base, "query.combine=image")))
    assert (image_alone.indices == Ranking.load(sweep[0]).indices).all()
    # the image part lives where image queries' vectors do (query=box finds them there)
    assert RunPlan.from_config(make_cfg("query=box", *clip_overrides(source[1]))).stores["queries"].folder == query_store


def test_composed_queries_of_patterncom(make_cfg: ComposeFn, source: tuple[torch.nn.Module, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The dataset's own composed queries (an image and an attribute value each), no query file."""
    from test_patterncom import ATTRIBUTE_CSV, make_patterncom

    monkeypatch.setattr(evaluate_stage, "git_commit", lambda: "test")
    root = tmp_path / "PatternNet"
    make_patterncom(root)
    cfg = make_cfg("dataset=patterncom", f"dataset.root={root}", "query=composed", *clip_overrides(source[1]))
    metrics = json.loads(pipeline.evaluate(cfg, tmp_path / "run").read_text())
    assert set(metrics["summary"]) == {"all", *(f"all/{attribute}" for attribute in ATTRIBUTE_CSV)}
    stores = RunPlan.from_config(cfg).stores
    gallery = stores["gallery"].load()
    n = len(gallery.keys)
    expected = reference_scores(
        "weicom",
        best_row_similarities(stores["queries"].load().per_image(), gallery.vectors, gallery.row_image, n),
        best_row_similarities(stores["texts"].load().per_image(), gallery.vectors, gallery.row_image, n),
        0.3,
    )
    ranking = Ranking.load(tmp_path / "run" / "ranking.npz")
    np.testing.assert_allclose(ranking.scores, np.take_along_axis(expected, ranking.indices, 1), atol=1e-5)


def test_hydra_sweeps_lambda(make_cfg: ComposeFn, source: tuple[torch.nn.Module, Path], tmp_path: Path, folder_root: Path) -> None:
    """`python evaluate.py -m query.lambda=...`: one leaderboard row per lambda."""
    file = composed_file(tmp_path)
    done = subprocess.run(
        [sys.executable, "evaluate.py", "-m", "dataset=folder", f"dataset.root={folder_root}", "query=composed",
         f"query.file={file}", *clip_overrides(source[1]), "query.lambda=0,0.5", "extract.workers=0", "eval.report=false",
         f"paths.cache={tmp_path / 'cache'}", f"paths.leaderboard={tmp_path / 'board.csv'}",
         f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = read_rows(tmp_path / "board.csv")
    assert [row["combination"] for row in rows] == ["weicom lambda=0 cut=full", "weicom lambda=0.5 cut=full"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["index=hnsw"], "query=composed is ranked exactly over the whole gallery: use index=flat, not index=hnsw"),
        (["rerank=[aqe]"],
         "query=composed has two vectors per query, which re-rank steps cannot expand: use 'rerank=[]', not rerank=[aqe]"),
        (["query.lambda=1.5"], "query.lambda=1.5 is not valid: use a number from 0 to 1"),
        (["query.combine=sum"], "query.combine=sum is not valid: choose average, image, text or weicom"),
        (["query.cut=crop"], "query.cut=crop is not valid: choose box, full, mask or square"),
        (["+query.margin=0.1"], "query.margin is not an option of query=composed with cut=full: its options are "
                                "combine, cut, file, lambda, name"),
        (["query.cut=mask", "dataset.use_masks=false"],
         "query.cut=mask needs masks but dataset folder has none: use query.cut=box or query.cut=full"),
    ],
)
def test_composed_mistakes_are_one_line(make_cfg: ComposeFn, source: tuple[torch.nn.Module, Path], tmp_path: Path,
                                        overrides: list[str], message: str) -> None:
    file = composed_file(tmp_path)
    with pytest.raises(ConfigError) as caught:
        pipeline.features(make_cfg("query=composed", f"query.file={file}", *clip_overrides(source[1]), *overrides))
    assert str(caught.value) == message


def test_composed_query_needs_an_image(make_cfg: ComposeFn, source: tuple[torch.nn.Module, Path], tmp_path: Path) -> None:
    file = tmp_path / "words.csv"
    file.write_text("id,text,instance\nw1,a cup,cup1\n")
    with pytest.raises(ConfigError, match=r"^query=composed needs an image per query, and query w1 has none: "
                                          r"add an image column to query.file, or use query=text$"):
        pipeline.features(make_cfg("query=composed", f"query.file={file}", *clip_overrides(source[1])))
