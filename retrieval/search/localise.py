"""The finishing step of a search whose representation finds the object after it (`rmac`):
each query's first results get the box approximate max-pooling localisation (AML,
`retrieval.aggregation.aml`) finds between the query's MAC and the result's dense map.

Only the ranking's boxes change, never its scores or order. Each distinct gallery image among
the localised results is embedded once (a DataLoader prepares them, as extraction does) and
every query that returned it is localised on its map, which is then dropped: memory is one
batch of maps plus the queries' MACs (n_queries x C), and time at most one more pass over the
gallery however many queries there are.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from retrieval.aggregation.aml import localise
from retrieval.features.extract import prepared_batches
from retrieval.features.keys import Item
from retrieval.models.base import Embedder
from retrieval.ranking import Ranking
from retrieval.representations.rmac import RmacRepresentation

log = logging.getLogger(__name__)


def _maps(representation: RmacRepresentation, items: Sequence[Item], model: Embedder, device: torch.device,
          precision: str, batch_size: int, workers: int) -> Iterator[tuple[int, tuple[int, int], torch.Tensor]]:
    """(position in `items`, size_hw, C x h x w map) of each readable item; unreadable ones are logged."""
    for batch in prepared_batches(representation, items, model, batch_size, workers, device):
        for prepared in batch:
            if prepared["error"]:
                log.warning("not localised in %s: %s", items[prepared["position"]].path, prepared["error"])
        good = [prepared for prepared in batch if not prepared["error"]]
        for prepared, feature_map in zip(good, representation.maps(model, good, device, precision, batch_size)):
            yield prepared["position"], prepared["size_hw"], feature_map


@torch.inference_mode()
def localise_results(
    ranking: Ranking,
    top: int,
    queries: tuple[RmacRepresentation, Sequence[Item]],
    gallery: tuple[RmacRepresentation, Sequence[Item]],
    model: Embedder,
    device: torch.device,
    precision: str,
    batch_size: int,
    workers: int,
) -> dict[str, Any]:
    """Set `ranking.boxes` of each query's first `top` results (in place) to the AML box of the
    query (its representation and items, in the ranking's query order) in the result (the
    gallery's, in its image order); returns what was done, for the search's meta."""
    started = time.perf_counter()
    depth = min(top, ranking.k)
    pairs = [(query, rank) for query in range(len(ranking.indices)) for rank in range(depth) if ranking.indices[query, rank] >= 0]
    report = {"localise_top": top, "localised": 0, "localised_images": 0}
    if not pairs or ranking.boxes is None:
        return {**report, "localise_seconds": 0.0}
    model = model.to(device).eval()
    query_rep, query_items = queries
    gallery_rep, gallery_items = gallery
    asked = sorted({query for query, _ in pairs})
    macs: dict[int, tuple[torch.Tensor, float]] = {}
    for position, (height, width), fmap in _maps(query_rep, [query_items[q] for q in asked], model, device, precision, batch_size, workers):
        macs[asked[position]] = (fmap.amax(dim=(1, 2)), height / width)
    by_image: dict[int, list[tuple[int, int]]] = {}
    for query, rank in pairs:
        if query in macs:
            by_image.setdefault(int(ranking.indices[query, rank]), []).append((query, rank))
    images = sorted(by_image)
    for position, size_hw, fmap in _maps(gallery_rep, [gallery_items[i] for i in images], model, device, precision, batch_size, workers):
        report["localised_images"] += 1
        for query, rank in by_image[images[position]]:
            mac, aspect = macs[query]
            found = localise(mac, fmap, image_hw=size_hw, query_aspect=aspect)
            ranking.boxes[query, rank] = np.asarray(found.box, dtype=np.float32)
            report["localised"] += 1
    seconds = time.perf_counter() - started
    log.info("AML: %d results of %d queries localised in %d images, %.1f s", report["localised"], len(macs),
             report["localised_images"], seconds)
    return {**report, "localise_seconds": round(seconds, 3)}
