"""The fine-tuned network: a pretrained backbone without its top, plus a new fully connected head."""

from __future__ import annotations

import torch
from torch import nn

from maskwatch.training.backbones import backbone_spec, create_backbone
from maskwatch.training.heads import HEADS, build_head, make_head

__all__ = ["HEADS", "MaskNet", "SpatialFeatures", "activate", "build_head", "build_masknet", "feature_module", "freeze",
           "make_head"]


class SpatialFeatures(nn.Module):
    """The backbone's whole feature map, flattened (N, C*H*W): what the paper's Flatten head reads."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.backbone.forward_features(x)  # type: ignore[operator]  # any backbone
        return features.flatten(1)


def feature_module(backbone: nn.Module, head: str) -> nn.Module:
    """What the head reads: pooled features ("gap") or the flattened feature map ("paper")."""
    return SpatialFeatures(backbone) if head == "paper" else backbone


class MaskNet(nn.Module):
    """Backbone + head; ``forward`` returns class probabilities so the exported file needs no post-processing.

    ``activation`` is softmax for maskwatch's heads, sigmoid for the paper's (two independent outputs).
    """

    def __init__(self, backbone: nn.Module, head: nn.Module, activation: str = "softmax") -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.activation = activation

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return activate(self.logits(x), self.activation)


def activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.sigmoid(logits) if activation == "sigmoid" else torch.softmax(logits, dim=1)


def build_masknet(backbone: str, input_size: int, hidden: int, dropout: float, pretrained: bool = True) -> MaskNet:
    net = create_backbone(backbone, pretrained=pretrained, input_size=input_size)
    return MaskNet(net, make_head(backbone_spec(backbone).feature_dim, hidden, dropout))


def freeze(module: nn.Module) -> None:
    """Freeze weights and batch-norm statistics, as Keras' ``trainable = False`` does."""
    for parameter in module.parameters():
        parameter.requires_grad = False
    module.eval()
