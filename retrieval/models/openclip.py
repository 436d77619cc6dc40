"""open_clip image towers, by architecture and pretrained tag or a local checkpoint file."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from retrieval.models import register_family
from retrieval.models.base import Embedder, Preprocess, offline_hint

# open_clip's eval resize modes that have an exact equivalent here; its "longest" pads with
# its own fill colour and rounding, so it is left to an explicit model.resize.
RESIZE_MODES = {"shortest": "center_crop", "squash": "stretch"}


def clip_preprocess(cfg: dict[str, Any], resize: str | None = None) -> Preprocess:
    """The eval transform open_clip builds from a preprocess_cfg (its `image_transform`):
    shortest side to the image size and a centre crop (crop_pct 1), or a squash; the filter
    is bilinear only when asked for, bicubic otherwise, as open_clip decides."""
    height, width = (cfg["size"],) * 2 if isinstance(cfg["size"], int) else cfg["size"]
    if height != width:
        raise ValueError(f"open_clip input size {height}x{width} is not square; set model.input_size")
    if resize is None and cfg["resize_mode"] not in RESIZE_MODES:
        raise ValueError(
            f"open_clip resize_mode {cfg['resize_mode']!r} has no exact equivalent here; "
            "choose one with model.resize=stretch|letterbox|center_crop"
        )
    return Preprocess(
        input_size=width,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        resize=resize or RESIZE_MODES[cfg["resize_mode"]],
        interpolation="bilinear" if cfg["interpolation"] == "bilinear" else "bicubic",
    )


class ClipImageTower(Embedder):
    """CLIP's own pooling and projection give the descriptor; there is no GeM-able map."""

    dense = False

    def __init__(self, visual: torch.nn.Module, preprocess: Preprocess, dim: int):
        super().__init__(preprocess, dim)
        self.visual = visual

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


@register_family("open_clip")
def open_clip_tower(
    arch: str = "ViT-B-32",
    pretrained: str | None = "openai",
    checkpoint: str | None = None,
    input_size: int | None = None,
    resize: str | None = None,
) -> Embedder:
    """open_clip image tower: `arch` + `pretrained` tag, or `checkpoint` (a local file); None = random."""
    import open_clip
    from open_clip.transform import merge_preprocess_dict

    if arch not in open_clip.list_models():
        raise ValueError(f"Unknown open_clip architecture {arch!r}; see open_clip.list_models().")
    if checkpoint and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"model.checkpoint={checkpoint} does not exist")
    if pretrained and not checkpoint and pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        valid = ", ".join(open_clip.list_pretrained_tags_by_model(arch))
        raise ValueError(f"Unknown pretrained tag {pretrained!r} for {arch}. Valid tags: {valid}.")
    # Weights trained with QuickGELU (every OpenAI tag) must run with it, also from a checkpoint
    # file; open_clip only warns on the mismatch and computes wrong features.
    tag = open_clip.get_pretrained_cfg(arch, pretrained) if pretrained else {}
    quick_gelu = bool(tag.get("quick_gelu"))
    with offline_hint(f"open_clip weights {arch}/{pretrained}", downloading=bool(pretrained and not checkpoint)):
        model = open_clip.create_model(
            arch, pretrained=checkpoint or pretrained, device="cpu", force_quick_gelu=quick_gelu
        )
    # The tag's preprocessing also applies to its weights loaded from a checkpoint file, for
    # which open_clip itself keeps the architecture's defaults.
    cfg = merge_preprocess_dict(model.visual.preprocess_cfg, tag)
    preprocess = clip_preprocess(cfg, resize).with_options(input_size)
    return ClipImageTower(model.visual, preprocess, model.visual.output_dim).eval()
