"""Any timm backbone (DINOv2 ViTs by default) by hub name, or a local checkpoint file."""
from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from retrieval.models import register_family
from retrieval.models.base import (
    Checkpoint, Embedder, HubWeights, InputSize, Preprocess, Pretrained, Resize, gem, offline_hint, safetensors_first,
)

# timm's eval crop modes that have an exact equivalent here ("squash" only without a crop
# margin); its "border" pads with its own rounding, so it is left to an explicit model.resize.
CROP_MODES = {"center": "center_crop", "squash": "stretch"}


def timm_preprocess(config: dict[str, Any], resize: str | None = None) -> Preprocess:
    """The eval transform timm builds from a resolved data config (`resolve_data_config`,
    i.e. the weights' pretrained_cfg): size, crop_pct, interpolation, mean and std."""
    _, height, width = config["input_size"]
    if height != width:
        raise ValueError(f"timm input size {height}x{width} is not square; set model.input_size")
    mode, crop_pct = config["crop_mode"], config["crop_pct"]
    if resize is None and (mode not in CROP_MODES or (mode == "squash" and crop_pct != 1)):
        raise ValueError(
            f"timm crop_mode {mode!r} with crop_pct {crop_pct} has no exact equivalent here; "
            "choose one with model.resize=stretch|letterbox|center_crop"
        )
    return Preprocess(
        input_size=width,
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        resize=resize or CROP_MODES[mode],
        crop_pct=crop_pct,
        interpolation=config["interpolation"],
    )


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

    @property
    def _vit(self) -> bool:
        return hasattr(self.model, "blocks") and hasattr(self.model, "forward_intermediates")

    @property
    def blocks(self) -> int:
        return len(self.model.blocks) if self._vit else 0

    @property
    def patch_size(self) -> int | None:
        return max(self.model.patch_embed.patch_size) if self._vit else None

    def block_map(self, images: torch.Tensor, layer: int, facet: str) -> torch.Tensor:
        """Block `layer`'s output tokens (before the final norm), or its attention's query, key
        or value: the slice of the fused qkv projection (heads concatenated), read by a hook;
        the pass stops after that block. Prefix tokens are dropped, patches folded to a grid."""
        if facet == "token":
            (tokens,) = self.model.forward_intermediates(images, indices=[layer], stop_early=True, intermediates_only=True)
            return tokens
        captured: list[torch.Tensor] = []
        hook = self.model.blocks[layer].attn.qkv.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            self.model.forward_intermediates(images, indices=[layer], stop_early=True, intermediates_only=True)
        finally:
            hook.remove()
        qkv = captured[0][:, self.prefix_tokens :]
        width = qkv.shape[-1] // 3
        part = qkv[..., ("query", "key", "value").index(facet) * width :][..., :width]
        height, cols = self.model.patch_embed.dynamic_feat_size(images.shape[-2:])
        return part.transpose(1, 2).reshape(len(images), width, height, cols)


def pretrained_cfg(arch: str, pretrained: str | None) -> dict[str, Any]:
    """The tag's pretrained_cfg (the architecture's default tag when None) as timm resolves it
    for `create_model`."""
    import timm

    _check_arch(arch)
    try:
        return timm.models.resolve_pretrained_cfg(arch, pretrained_cfg=pretrained).to_dict()
    except RuntimeError as error:  # timm's error for a tag the architecture lacks
        valid = ", ".join(name.split(".", 1)[1] for name in timm.list_pretrained(f"{arch}.*"))
        raise ValueError(f"Unknown pretrained tag {pretrained!r} for {arch}. Valid tags: {valid}.") from error


def weights_preprocess(arch: str, pretrained: str | None, input_size: int | None, resize: str | None) -> Preprocess:
    """The data config timm makes of the tag's pretrained_cfg at `input_size` (None = the tag's)."""
    import timm

    config = timm.data.resolve_data_config({"img_size": input_size}, pretrained_cfg=pretrained_cfg(arch, pretrained))
    return timm_preprocess(config, resize)


def _check_arch(arch: str) -> None:
    import timm

    if not timm.list_models(arch):
        raise ValueError(f"Unknown timm architecture {arch!r}; list names with timm.list_models('*dinov2*').")


def num_features(arch: str) -> int:
    """The descriptor size of timm architecture `arch` (its `num_features`), from a copy built
    on the meta device: no memory for its parameters, no weights read."""
    import timm

    _check_arch(arch)
    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False, num_classes=0).num_features




def hub_weights(arch: str, pretrained: str) -> Pretrained:
    """The tag's weights as timm's `load_pretrained` fetches them: from the pretrained_cfg's hub
    repository (its safetensors copy first), else from its URL into torch's hub cache."""
    from timm.models._hub import HF_OPEN_CLIP_SAFE_WEIGHTS_NAME, HF_OPEN_CLIP_WEIGHTS_NAME, HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = pretrained_cfg(arch, pretrained)
    what = f"timm {arch}.{pretrained}"
    if cfg.get("hf_hub_id"):
        copies = {HF_WEIGHTS_NAME: HF_SAFE_WEIGHTS_NAME, HF_OPEN_CLIP_WEIGHTS_NAME: HF_OPEN_CLIP_SAFE_WEIGHTS_NAME}
        files = safetensors_first(cfg.get("hf_hub_filename") or HF_WEIGHTS_NAME, copies)
        return Pretrained(pretrained, HubWeights(what, repo=cfg["hf_hub_id"].split("@")[0], files=files))
    url = cfg.get("url") or ""
    if not url:
        return Pretrained(pretrained)
    cached_as = Path(torch.hub.get_dir()) / "checkpoints" / posixpath.basename(urlparse(url).path)
    return Pretrained(pretrained, HubWeights(what, url=url, cached_as=cached_as))


@register_family("timm", preprocess=weights_preprocess, dim=num_features, pretrained=hub_weights)
def timm_backbone(
    arch: str = "vit_small_patch14_dinov2",
    pretrained: str | None = "lvd142m",
    checkpoint: Checkpoint = None,
    input_size: InputSize = None,
    resize: Resize = None,
) -> Embedder:
    """timm model `arch` with hub tag `pretrained`, or `checkpoint` (a local file); None = random.
    Preprocessing is the tag's pretrained_cfg (the architecture's default tag when random);
    `input_size` (None = the tag's) also sizes ViT position embeddings."""
    import timm

    preprocess = weights_preprocess(arch, pretrained, input_size, resize)
    if checkpoint and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"model.checkpoint={checkpoint} does not exist")
    kwargs: dict = {"num_classes": 0}
    if "vit" in arch:
        kwargs["dynamic_img_size"] = True
        if input_size:
            kwargs["img_size"] = input_size
    name = f"{arch}.{pretrained}" if pretrained else arch
    with offline_hint(f"timm weights {name}", downloading=bool(pretrained and not checkpoint)):
        model = timm.create_model(
            name,
            pretrained=bool(pretrained or checkpoint),
            pretrained_cfg_overlay={"file": checkpoint} if checkpoint else None,
            **kwargs,
        )
    return TimmBackbone(model, preprocess).eval()
