"""Any timm backbone (DINOv2 ViTs by default) by hub name, or a local checkpoint file."""
from __future__ import annotations

from pathlib import Path

import torch

from retrieval.models import register_family
from retrieval.models.base import Embedder, Preprocess, gem, offline_hint


class TimmBackbone(Embedder):
    """Descriptor = the model's own pooled output (CLS token for DINOv2); dense map = patch
    tokens (ViTs) or the last feature map (CNNs), pooled with GeM for regions."""

    def __init__(self, model: torch.nn.Module, preprocess: Preprocess):
        super().__init__(preprocess, dim=model.num_features)
        self.model = model
        self.prefix_tokens = getattr(model, "num_prefix_tokens", 0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_features(images)
        if features.dim() == 3:  # ViT tokens: drop CLS/register tokens, fold patches to a grid
            patches = features[:, self.prefix_tokens :]
            height, width = self.model.patch_embed.dynamic_feat_size(images.shape[-2:])
            return patches.transpose(1, 2).reshape(len(images), -1, height, width)
        return features

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return gem(features)


@register_family("timm")
def timm_backbone(
    arch: str = "vit_small_patch14_dinov2",
    pretrained: str | None = "lvd142m",
    checkpoint: str | None = None,
    input_size: int | None = 224,
    resize: str | None = None,
) -> Embedder:
    """timm model `arch` with hub tag `pretrained`, or `checkpoint` (a local file); None = random."""
    import timm

    if not timm.list_models(arch):
        raise ValueError(f"Unknown timm architecture {arch!r}; list names with timm.list_models('*dinov2*').")
    if checkpoint and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"model.checkpoint={checkpoint} does not exist")
    kwargs: dict = {"num_classes": 0}
    if "vit" in arch:
        kwargs.update(dynamic_img_size=True, img_size=input_size or 224)
    name = f"{arch}.{pretrained}" if pretrained else arch
    with offline_hint(f"timm weights {name}", downloading=bool(pretrained and not checkpoint)):
        model = timm.create_model(
            name,
            pretrained=bool(pretrained or checkpoint),
            pretrained_cfg_overlay={"file": checkpoint} if checkpoint else None,
            **kwargs,
        )
    config = timm.data.resolve_data_config({}, model=model)
    preprocess = Preprocess(config["input_size"][-1], tuple(config["mean"]), tuple(config["std"]))
    return TimmBackbone(model, preprocess.with_options(input_size, resize)).eval()
