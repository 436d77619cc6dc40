"""`text`: one vector per query's words, from the text tower of the model that embedded the
gallery, so a sentence is searched against image rows by the same inner product.

Items are keyed by a hash of the text (`retrieval.features.keys.text_key`), and the store by
the weights and the tokenizer (`retrieval.models.text_settings`): the image preprocessing
plays no part. Tokenizing is cheap and runs in the main process; an empty text is a counted
skip of its query, as an unreadable image is.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from retrieval.device import autocast
from retrieval.features.keys import Item
from retrieval.models.base import TextEncoder
from retrieval.representations import Representation, Rows, register


class Texts(torch.utils.data.Dataset):
    """Item -> {"position", "error", "tokens": int64 (context length,)}."""

    def __init__(self, items: Sequence[Item], tower: TextEncoder):
        self.items = items
        self.tower = tower

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict[str, Any]:
        text = self.items[position].text
        if not text.strip():
            return {"position": position, "error": "empty text"}
        return {"position": position, "error": "", "tokens": self.tower.tokenize([text])[0]}


@register("text")
class TextRepresentation(Representation):
    """One vector per query text, from the model's text tower."""

    main_process = True
    embeds_words = True

    def __init__(self, tokenizer: dict[str, Any]):
        self.tokenizer = tokenizer

    def settings(self) -> dict[str, Any]:
        return {"representation": "text", "tokenizer": self.tokenizer}

    def worker_dataset(self, items: Sequence[Item], model: TextEncoder) -> torch.utils.data.Dataset:
        return Texts(items, model)

    def embed(
        self, model: TextEncoder, prepared: list[dict], device: torch.device, precision: str, batch_size: int
    ) -> list[Rows]:
        if not prepared:
            return []
        tokens = torch.stack([p["tokens"] for p in prepared]).to(device)
        with autocast(device, precision):
            vectors = model(tokens).float()
        return [Rows(vectors=vector[None]) for vector in vectors]
