"""The re-rank stage on a real run: each step against a direct numpy computation of its
published definition, the order of steps, per-step caching and provenance."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra.errors import MissingConfigException

from conftest import ComposeFn
from retrieval import artifacts, pipeline
from retrieval.models import Embedder, create_model
from retrieval.plan import RunPlan
from retrieval.plan import model as model_spec
from retrieval.ranking import Ranking
from retrieval.rerank import steps as rerank_steps
from retrieval.stages import evaluate as evaluate_stage


@pytest.fixture
def cfg_of(make_cfg: ComposeFn, monkeypatch: pytest.MonkeyPatch, lite0: Embedder) -> ComposeFn:
    """Configs on the tiny folder set, leave-one-out whole-image queries, the session's Lite0."""

    def model(family: str, **options: Any) -> Embedder:
        return lite0 if family == "effnet_lite" and options.get("input_size") == 64 else create_model(family, **options)

    monkeypatch.setattr(model_spec, "create_model", model)
    return lambda *overrides: make_cfg("query=full", *overrides)


def vectors(cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(queries, gallery) vectors as float64, one row per image, from the run's stores."""
    stores = RunPlan.from_config(cfg).stores
    queries, gallery = stores["queries"].load().per_image(), stores["gallery"].load().per_image()
    return queries.astype(np.float64), gallery.astype(np.float64)


def rank_by_hand(queries: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every gallery image per query, by cosine similarity, ties to the lower index."""
    scores = queries @ gallery.T
    order = np.lexsort((np.broadcast_to(np.arange(len(gallery)), scores.shape), -scores), axis=1)
    return order, np.take_along_axis(scores, order, 1)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def expand_by_hand(queries: np.ndarray, gallery: np.ndarray, first: np.ndarray, k: int, alpha: float) -> np.ndarray:
    """alpha-QE (Radenovic et al. 2019), AQE for alpha = 0: q + sum over the first k results of
    max(q.g, 0)^alpha g, normalised; written as a loop over queries."""
    out = []
    for q, query in enumerate(queries):
        total = query.copy()
        for g in first[q, :k]:
            weight = 1.0 if alpha == 0 else max(query @ gallery[g], 0.0) ** alpha
            total += weight * gallery[g]
        out.append(total)
    return unit(np.array(out))


def assert_ranking(ranking: Ranking, order: np.ndarray, scores: np.ndarray) -> None:
    np.testing.assert_allclose(ranking.scores, scores[:, : ranking.k], atol=1e-5)
    # where two scores are closer than float32 can tell, either order is right
    apart = np.abs(np.diff(scores, axis=1)) > 1e-5
    settled = (np.pad(apart, ((0, 0), (1, 0)), constant_values=True) & np.pad(apart, ((0, 0), (0, 1)), constant_values=True))
    settled = settled[:, : ranking.k]
    np.testing.assert_array_equal(ranking.indices[settled], order[:, : ranking.k][settled])


def test_average_query_expansion_is_the_query_plus_its_top_k_searched_again(cfg_of: ComposeFn) -> None:
    cfg = cfg_of("rerank=[aqe]", "rerank.aqe.k=2")
    ranking = Ranking.load(pipeline.ranking(cfg))
    queries, gallery = vectors(cfg)
    first, _ = rank_by_hand(queries, gallery)
    assert_ranking(ranking, *rank_by_hand(expand_by_hand(queries, gallery, first, 2, 0.0), gallery))
    assert [step.get("name") for step in ranking.provenance if step["step"] == "rerank"] == ["aqe"]


def test_dba_then_alpha_qe_as_published(cfg_of: ComposeFn) -> None:
    k, alpha = 3, 3.0
    cfg = cfg_of("rerank=[dba,alpha_qe]", f"rerank.dba.k={k}", f"rerank.dba.alpha={alpha}",
                 "rerank.alpha_qe.k=2", f"rerank.alpha_qe.alpha={alpha}")
    ranking = Ranking.load(pipeline.ranking(cfg))
    queries, gallery = vectors(cfg)
    # alpha-DBA: each gallery vector becomes the weighted sum of its k nearest (itself first)
    augmented = []
    for g in range(len(gallery)):
        similar = gallery @ gallery[g]
        nearest = [g] + [i for i in np.argsort(-similar, kind="stable") if i != g][: k - 1]
        augmented.append(sum(max(similar[i], 0.0) ** alpha * gallery[i] for i in nearest))
    augmented = unit(np.array(augmented))
    first, _ = rank_by_hand(queries, augmented)
    assert_ranking(ranking, *rank_by_hand(expand_by_hand(queries, augmented, first, 2, alpha), augmented))
    assert [step.get("name") for step in ranking.provenance if step["step"] == "rerank"] == ["dba", "alpha_qe"]


def test_changing_a_later_step_never_redoes_an_earlier_one(cfg_of: ComposeFn, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    for name, cls in (("dba", rerank_steps.DatabaseSideAugmentation), ("aqe", rerank_steps.AverageQueryExpansion),
                      ("alpha_qe", rerank_steps.AlphaQueryExpansion)):
        original = cls.__call__
        monkeypatch.setattr(cls, "__call__", lambda self, *a, _n=name, _f=original: calls.append(_n) or _f(self, *a))
    searched = pipeline.ranking(cfg_of())
    first = pipeline.ranking(cfg_of("rerank=[dba,aqe]"))
    second = pipeline.ranking(cfg_of("rerank=[dba,alpha_qe]"))
    assert calls == ["dba", "aqe", "alpha_qe"]
    assert len({searched, first, second}) == 3
    assert pipeline.ranking(cfg_of("rerank=[dba,aqe]")) == first and calls == ["dba", "aqe", "alpha_qe"]
    assert pipeline.ranking(cfg_of()) == searched  # no steps: the search's own ranking


def test_each_step_names_its_input_and_evaluate_follows_them_to_the_search(cfg_of: ComposeFn, tmp_path: Path) -> None:
    """meta["search"] is only ever the dict describing the search: a step's meta names the
    ranking it re-ranked, and evaluate reads the search's meta through that chain."""
    searched = pipeline.ranking(cfg_of())
    first = pipeline.ranking(cfg_of("rerank=[aqe]"))
    cfg = cfg_of("rerank=[aqe,alpha_qe]", "eval.report=false")
    final = pipeline.ranking(cfg)
    search_meta = artifacts.read_meta(searched.parent)
    assert search_meta["search"] == {"index": "Flat", "exact": True}
    for ranking, source in ((first, searched), (final, first)):
        meta = artifacts.read_meta(ranking.parent)
        assert meta["input_ranking"] == str(source) and "search" not in meta
    metrics = json.loads(evaluate_stage.main(RunPlan.from_config(cfg), final, tmp_path / "run").read_text())
    assert metrics["search"] == search_meta["search"] and metrics["rerank"] == "aqe+alpha_qe"
    assert metrics["timings"]["search_seconds"] == search_meta["search_seconds"]


def test_unknown_step_is_named(cfg_of: ComposeFn) -> None:
    with pytest.raises(MissingConfigException, match="rerank/verfy"):
        cfg_of("rerank=[aqe,verfy]")
