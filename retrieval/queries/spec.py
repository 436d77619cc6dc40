"""A `query` config node read into the parts of a query: an image mode alone, words alone
(`text`), or both (`composed`: an image part cut out by the image mode `query.cut`, plus
words). The words come from the dataset's query records (`Record.text`) or from a query file
(`query.file`, read by `retrieval.queries.files`).
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from retrieval.queries import get_query_mode

TEXT_KINDS = ("text", "composed")
"""query.name values that are not image modes: the words alone (embedded by the text tower of
the model that embedded the gallery), or an image part (cut out by the image mode
`query.cut`) and words, whose similarities `query.combine` combines."""
COMPOSED_KEYS = ("cut", "combine", "lambda")
"""Keys of query=composed besides name, file and the cut mode's own options."""


@dataclass(frozen=True)
class QuerySpec:
    """A `query` config node, read into the parts of a query."""

    name: str
    image_mode: str | None
    """The image mode that cuts out the image part; None when the query has no image."""
    image_options: dict[str, Any]
    """That mode's options."""
    text: bool
    """Whether the query has words, embedded by the model's text tower."""
    combine: str | None = None
    """composed: the name of the combination method (`retrieval.search.composed.COMBINATIONS`)."""
    weight: float | None = None
    """composed: `query.lambda`, the weight of the text similarity."""
    file: str | None = None
    """text, composed: the query file that replaces the dataset's queries and truth."""

    @property
    def composed(self) -> bool:
        """An image part and words: two query vectors, combined at search time."""
        return self.text and self.image_mode is not None


def query_spec(node: Mapping[str, Any]) -> QuerySpec:
    """The parts a `query` node asks for: an image mode alone, words alone, or both."""
    options = {key: value for key, value in node.items() if key != "name"}
    name = node["name"]
    if name not in TEXT_KINDS:
        return QuerySpec(name, name, _with_defaults(name, options), text=False)
    file = options.pop("file", None)
    if name == "text":
        return QuerySpec(name, None, {}, text=True, file=file)
    cut, combine, weight = (options.pop(key) for key in COMPOSED_KEYS)
    return QuerySpec(name, cut, _with_defaults(cut, options), text=True, combine=combine, weight=float(weight), file=file)


def _with_defaults(mode: str, options: dict[str, Any]) -> dict[str, Any]:
    """A mode's options with its own defaults filled in, so that the same cut-out has the same
    item key whether an option was left out (query.cut=box) or stated (query=box margin=0)."""
    parameters = inspect.signature(get_query_mode(mode)).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not p.empty and p.name not in ("image", "instance")}
    return {**defaults, **options}
