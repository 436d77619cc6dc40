"""What a run is called in its results: the names that say what ran, written once into
metrics.json and once into the leaderboard row, from this one place."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from retrieval.queries.spec import QuerySpec
from retrieval.ranking import Ranking
from retrieval.search.composed import combination_settings


def combination(query: QuerySpec) -> str:
    """How a composed query's similarities were combined: `weicom lambda=0.3 cut=box` (lambda
    only where the method reads it); "" for other queries."""
    if not query.composed:
        return ""
    settings = combination_settings(query.combine, query.weight)
    weight = "" if settings["lambda"] is None else f" lambda={settings['lambda']:g}"
    return f"{query.combine}{weight} cut={query.image_mode}"


@dataclass(frozen=True)
class RunIdentity:
    """The names of what a run ran: dataset (with its distractors), model and its weights, query, index, regions,
    representation and re-rank steps."""

    dataset: str
    model: str
    weights: str
    """What the model's weights are: the tag, the checkpoint file, the package, or `random`."""
    query_mode: str
    combination: str
    index: str
    regions: str
    representation: str
    rerank: str
    """The re-rank steps, `dba+alpha_qe` ("" for none)."""

    def of_ranking(self, ranking: Ranking) -> "RunIdentity":
        """The identity with the re-rank steps the scored ranking went through (its provenance):
        a ranking given by `eval.ranking` was made elsewhere."""
        steps = "+".join(step["name"] for step in ranking.provenance if step.get("step") == "rerank")
        return dataclasses.replace(self, rerank=steps)

    def fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
