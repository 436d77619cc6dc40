"""open_clip image and text towers, by architecture and pretrained tag or a local checkpoint file."""
from __future__ import annotations

import posixpath
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from retrieval.models import register_family, register_text_tower
from retrieval.models.base import (
    Checkpoint, Embedder, HubWeights, InputSize, Preprocess, Pretrained, Resize, TextEncoder, offline_hint, safetensors_first,
)

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


def pretrained_tag(arch: str, pretrained: str | None, checkpoint: str | None) -> dict[str, Any]:
    """open_clip's pretrained cfg of tag `pretrained` of `arch` ({} for None). A tag open_clip
    does not know is accepted only as the name of the weights in a `checkpoint` file."""
    import open_clip

    _check_arch(arch)
    if pretrained and not checkpoint and pretrained not in open_clip.list_pretrained_tags_by_model(arch):
        valid = ", ".join(open_clip.list_pretrained_tags_by_model(arch))
        raise ValueError(f"Unknown pretrained tag {pretrained!r} for {arch}. Valid tags: {valid}.")
    return open_clip.get_pretrained_cfg(arch, pretrained) if pretrained else {}


def tower_preprocess(arch: str, tag: dict[str, Any], input_size: int | None, resize: str | None) -> Preprocess:
    """The preprocess_cfg open_clip gives the tower of `arch` it builds with the weights of `tag`:
    its defaults at the architecture's image size, under the tag's own values. Those also apply
    to the tag's weights read from a checkpoint file, for which open_clip keeps the defaults."""
    import open_clip
    from open_clip.model import CLIPVisionCfg
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    vision = CLIPVisionCfg(**open_clip.get_model_config(arch)["vision_cfg"])
    cfg = merge_preprocess_dict(replace(PreprocessCfg(), size=vision.image_size), tag)
    return clip_preprocess(cfg, resize).with_options(input_size)


def open_clip_preprocess(
    arch: str, pretrained: str | None, checkpoint: str | None, input_size: int | None, resize: str | None
) -> Preprocess:
    """The family's preprocessing from open_clip's model and pretrained configs alone."""
    return tower_preprocess(arch, pretrained_tag(arch, pretrained, checkpoint), input_size, resize)


def clip_weights(arch: str, pretrained: str) -> Pretrained:
    """The tag's weights as open_clip's `download_pretrained` fetches them: from the tag's hub
    repository when it names one (its safetensors copy first), else from its URL into
    open_clip's cache folder (~/.cache/clip)."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    tag = pretrained_tag(arch, pretrained, None)
    what = f"open_clip {arch} {pretrained}"
    if tag.get("hf_hub"):
        repo, name = posixpath.split(tag["hf_hub"])
        files = safetensors_first(name or HF_WEIGHTS_NAME, {HF_WEIGHTS_NAME: HF_SAFE_WEIGHTS_NAME})
        return Pretrained(pretrained, HubWeights(what, repo=repo, files=files))
    url = tag.get("url", "")
    cached_as = Path("~/.cache/clip").expanduser() / posixpath.basename(url) if url else None
    return Pretrained(pretrained, HubWeights(what, url=url, cached_as=cached_as) if url else None)


def load_clip(arch: str, pretrained: str | None, checkpoint: str | None) -> torch.nn.Module:
    """The whole open_clip model of `arch` with the weights of tag `pretrained`, or of the
    `checkpoint` file; random weights when both are None."""
    import open_clip

    tag = pretrained_tag(arch, pretrained, checkpoint)
    if checkpoint and not Path(checkpoint).is_file():
        raise FileNotFoundError(f"model.checkpoint={checkpoint} does not exist")
    # Weights trained with QuickGELU (every OpenAI tag) must run with it, also from a checkpoint
    # file; open_clip only warns on the mismatch and computes wrong features.
    with offline_hint(f"open_clip weights {arch}/{pretrained}", downloading=bool(pretrained and not checkpoint)):
        return open_clip.create_model(
            arch, pretrained=checkpoint or pretrained, device="cpu", force_quick_gelu=bool(tag.get("quick_gelu"))
        )


def _check_arch(arch: str) -> None:
    import open_clip

    if arch not in open_clip.list_models():
        raise ValueError(f"Unknown open_clip architecture {arch!r}; see open_clip.list_models().")


def embed_dim(arch: str) -> int:
    """The size of the space where image and text embeddings meet (the model config's
    embed_dim): open_clip's own towers and timm trunks (which have no output_dim) alike."""
    import open_clip

    _check_arch(arch)
    return open_clip.get_model_config(arch)["embed_dim"]


@register_family("open_clip", preprocess=open_clip_preprocess, dim=embed_dim, pretrained=clip_weights)
def open_clip_tower(
    arch: str = "ViT-B-32",
    pretrained: str | None = "openai",
    checkpoint: Checkpoint = None,
    input_size: InputSize = None,
    resize: Resize = None,
) -> Embedder:
    """open_clip image tower: `arch` + `pretrained` tag, or `checkpoint` (a local file); None = random."""
    preprocess = open_clip_preprocess(arch, pretrained, checkpoint, input_size, resize)
    return ClipImageTower(load_clip(arch, pretrained, checkpoint).visual, preprocess, embed_dim(arch)).eval()


TOKENIZER_KEYS = ("context_length", "vocab_size", "hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs")
"""The entries of a model config's text_cfg that `open_clip.get_tokenizer` reads."""


def clip_tokenizer(arch: str) -> dict[str, Any]:
    """What `open_clip.get_tokenizer(arch)` builds, from the model config alone: its kind is
    chosen by the architecture's name and these text_cfg entries (absent ones are defaults)."""
    import open_clip

    text_cfg = open_clip.get_model_config(arch).get("text_cfg", {})
    return {"arch": arch, **{key: text_cfg[key] for key in TOKENIZER_KEYS if key in text_cfg}}


class ClipTextTower(TextEncoder):
    """open_clip's `encode_text`: the transformer, its pooling and the text projection."""

    def __init__(self, clip: torch.nn.Module, tokenizer: Any, dim: int):
        super().__init__(tokenizer, dim)
        clip.visual = None  # the image tower is not needed here; drop its weights
        self.clip = clip

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(tokens)


@register_text_tower("open_clip", tokenizer=clip_tokenizer)
def open_clip_text_tower(arch: str, pretrained: str | None, checkpoint: str | None) -> TextEncoder:
    """open_clip text tower of the same weights as the image tower, with the architecture's
    own tokenizer (the BPE vocabulary of CLIP's SimpleTokenizer ships inside open_clip)."""
    import open_clip

    return ClipTextTower(load_clip(arch, pretrained, checkpoint), open_clip.get_tokenizer(arch), embed_dim(arch)).eval()
