"""The registered re-rank steps: query expansion (average and alpha-weighted) and
database-side augmentation. Definitions and references: `retrieval.rerank.expansion`."""
from __future__ import annotations

import dataclasses
from typing import Annotated

import numpy as np

from retrieval.config.rules import Rule
from retrieval.features import Features
from retrieval.ranking import Ranking
from retrieval.rerank import RerankInputs, Step, StepOutput, best_rows, register
from retrieval.rerank.expansion import alpha_query_expansion, average_query_expansion, database_side_augmentation


Neighbours = Annotated[int, Rule(low=1)]
"""k: how many nearest results (or gallery rows) a step averages."""
Alpha = Annotated[float, Rule(low=0)]
"""alpha: the exponent of a neighbour's similarity in its weight (0: every neighbour weighs 1)."""


class _Expansion(Step):
    needs = ("query_vectors", "gallery")

    def __init__(self, k: Neighbours):
        self.k = int(k)

    def expand(self, queries: np.ndarray, gallery: Features, neighbours: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, ranking: Ranking, inputs: RerankInputs) -> StepOutput:
        queries, gallery = inputs.query_vectors, inputs.gallery
        neighbours = best_rows(queries, gallery, ranking.indices[:, : self.k])
        expanded = self.expand(queries, gallery, neighbours)
        return StepOutput(inputs.search(expanded, gallery))


@register("aqe")
class AverageQueryExpansion(_Expansion):
    """Average query expansion (Chum et al. 2007): the query plus its top k results, searched again."""

    def expand(self, queries: np.ndarray, gallery: Features, neighbours: np.ndarray) -> np.ndarray:
        return average_query_expansion(queries, gallery.vectors, neighbours, self.k)


@register("alpha_qe")
class AlphaQueryExpansion(_Expansion):
    """alpha-QE (Radenovic et al. 2019): top k results weighted by similarity^alpha, searched again."""

    def __init__(self, k: Neighbours, alpha: Alpha):
        super().__init__(k)
        self.alpha = float(alpha)

    def expand(self, queries: np.ndarray, gallery: Features, neighbours: np.ndarray) -> np.ndarray:
        return alpha_query_expansion(queries, gallery.vectors, neighbours, self.k, self.alpha)


@register("dba")
class DatabaseSideAugmentation(Step):
    """alpha-DBA (Radenovic et al. 2019): each gallery vector becomes the weighted mean of its k nearest, searched again."""

    needs = ("query_vectors", "gallery")
    updates_gallery = True

    def __init__(self, k: Neighbours, alpha: Alpha):
        self.k, self.alpha = int(k), float(alpha)

    def __call__(self, ranking: Ranking, inputs: RerankInputs) -> StepOutput:
        gallery = inputs.gallery
        augmented = dataclasses.replace(gallery, vectors=database_side_augmentation(gallery.vectors, self.k, self.alpha))
        return StepOutput(inputs.search(inputs.query_vectors, augmented), gallery_vectors=augmented.vectors)
