"""open_clip image towers, by architecture and pretrained tag or a local checkpoint file."""
from __future__ import annotations

from pathlib import Path

import torch

from retrieval.models import register_family
from retrieval.models.base import Embedder, Preprocess, offline_hint


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

    if arch not in open_clip.list_models():
        raise ValueError(f"Unknown open_clip architecture {arch!r}; see open_clip.list_models().")
    if checkpoint and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"model.checkpoint={checkpoint} does not exist")
    if pretrained and not checkpoint and pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        valid = ", ".join(open_clip.list_pretrained_tags_by_model(arch))
        raise ValueError(f"Unknown pretrained tag {pretrained!r} for {arch}. Valid tags: {valid}.")
    # Weights trained with QuickGELU (every OpenAI tag) must run with it, also from a checkpoint
    # file; open_clip only warns on the mismatch and computes wrong features.
    quick_gelu = bool((open_clip.get_pretrained_cfg(arch, pretrained) if pretrained else {}).get("quick_gelu"))
    with offline_hint(f"open_clip weights {arch}/{pretrained}", downloading=bool(pretrained and not checkpoint)):
        model = open_clip.create_model(
            arch, pretrained=checkpoint or pretrained, device="cpu", force_quick_gelu=quick_gelu
        )
    cfg = model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    preprocess = Preprocess(size, tuple(cfg["mean"]), tuple(cfg["std"]), resize="center_crop")
    dim = model.visual.output_dim
    return ClipImageTower(model.visual, preprocess.with_options(input_size, resize), dim).eval()
