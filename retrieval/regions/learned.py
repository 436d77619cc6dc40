"""Learned proposers: models whose weights the user has on disk (nothing is downloaded).

Segment Anything is the one wired in; an open-vocabulary detector would be another entry
of the same shape (image -> boxes and masks). These run in the main process, on CUDA when
torch sees it (DataLoader workers cannot share a CUDA context): see `needs_main_process`.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from retrieval.config.choices import device_problem, sam_model_types
from retrieval.config.rules import Rule
from retrieval.device import resolve_device
from retrieval.regions.proposals import Regions, register


def needs_main_process(proposer: object) -> bool:
    """Whether a proposer holds a model that must run in the main process."""
    return bool(getattr(proposer, "main_process", False))


@functools.lru_cache(maxsize=2)
def _sam_generator(checkpoint: str, model_type: str, points_per_side: int, device: str):
    try:
        from segment_anything import SamAutomaticMaskGenerator, sam_model_registry
    except ImportError as error:
        raise ImportError(
            "regions proposer 'sam' needs the segment_anything package: "
            "pip install git+https://github.com/facebookresearch/segment-anything"
        ) from error
    model = sam_model_registry[model_type](checkpoint=None)
    # weights only: a checkpoint is a file from the internet, and a full unpickle could run code
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    model = model.to(resolve_device(device)).eval()
    return SamAutomaticMaskGenerator(model, points_per_side=points_per_side)


@register("sam")
def sam(
    image: np.ndarray,
    checkpoint: Annotated[str | None, Rule(path=True, exists="file", nullable=False)] = None,
    model_type: Annotated[str, Rule(choices=sam_model_types)] = "vit_b",
    points_per_side: Annotated[int, Rule(low=1)] = 16,
    max_regions: Annotated[int, Rule(low=1)] = 150,
    device: Annotated[str, Rule(test=device_problem)] = "auto",
) -> Regions:
    """Segment Anything automatic masks from a local checkpoint (regions.proposals.sam.checkpoint)."""
    generator = _sam_generator(str(Path(checkpoint).expanduser()), model_type, points_per_side, device)
    found = sorted(generator.generate(image), key=lambda m: -m["predicted_iou"])[:max_regions]
    boxes, masks = [], []
    for entry in found:
        x, y, w, h = (int(round(v)) for v in entry["bbox"])
        if w > 0 and h > 0:
            boxes.append((x, y, x + w, y + h))
            masks.append(np.asarray(entry["segmentation"], dtype=bool)[y : y + h, x : x + w])
    return Regions(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), masks, ["sam"] * len(masks))


sam.main_process = True  # type: ignore[attr-defined]
