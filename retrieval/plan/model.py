"""The model of a run: its family and options, the preprocessing its weights resolve to, and
what identifies its weights (`retrieval.models.identity`), each read once."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from retrieval.models import create_model, create_text_model, resolve_preprocess, text_options, tokenizer_settings
from retrieval.models.base import Embedder, Preprocess
from retrieval.models.identity import weights_identity


@dataclass(frozen=True)
class ModelSpec:
    """A `model` config node, read."""

    name: str
    family: str
    options: dict[str, Any]
    """Keyword options of `retrieval.models.create_model(family, ...)`."""
    node: dict[str, Any]
    """The node as configured: what the feature stores are keyed by."""
    preprocess: Preprocess
    """The preprocessing `create_model` gives the model, resolved from the weights' configuration
    (which a library upgrade may change under the same settings)."""
    weights: dict[str, str]
    """{"weights": digest} for weights from a checkpoint file or a random initialisation; {} for
    weights a tag names."""

    @classmethod
    def of(cls, node: Mapping[str, Any]) -> "ModelSpec":
        options = {key: value for key, value in node.items() if key not in ("name", "family")}
        family = node["family"]
        return cls(
            name=node["name"],
            family=family,
            options=options,
            node=dict(node),
            preprocess=resolve_preprocess(family, **options),
            weights=weights_identity(family, **options),
        )

    def create(self, text: bool = False) -> Embedder:
        """The model itself (`text`: its text tower), with its weights loaded."""
        return (create_text_model if text else create_model)(self.family, **self.options)

    def image_settings(self) -> dict[str, Any]:
        """What of the model determines the rows of an image: its settings, weights and
        preprocessing (the keys of a feature store's settings)."""
        return {"model": self.node, **self.weights, "preprocess": dataclasses.asdict(self.preprocess)}

    def text_settings(self) -> dict[str, Any]:
        """What of the model determines the vector of a text: the weights its text tower is built
        from (the image preprocessing plays no part)."""
        model = {"name": self.name, "family": self.family, **text_options(self.family, **self.options)}
        return {"model": model, **weights_identity(self.family, text=True, **self.options)}

    def tokenizer(self) -> dict[str, Any]:
        """What determines the tokens the text tower's tokenizer makes of a text."""
        return tokenizer_settings(self.family, **self.options)
