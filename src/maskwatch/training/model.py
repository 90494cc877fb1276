"""The fine-tuned network: a pretrained backbone without its top, plus a new fully connected head."""

from __future__ import annotations

import torch
from torch import nn

from maskwatch.training.backbones import backbone_spec, create_backbone


def make_head(feature_dim: int, hidden: int, dropout: float, classes: int = 2) -> nn.Sequential:
    """GAP features -> Dense(hidden, ReLU) -> Dropout -> Dense(classes)."""
    return nn.Sequential(
        nn.Linear(feature_dim, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, classes),
    )


HEADS = ("gap", "paper")


class SpatialFeatures(nn.Module):
    """The backbone's whole feature map, flattened (N, C*H*W): what the paper's Flatten head reads."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x).flatten(1)


def feature_module(backbone: nn.Module, head: str) -> nn.Module:
    """What the head reads: pooled features ("gap") or the flattened feature map ("paper")."""
    return SpatialFeatures(backbone) if head == "paper" else backbone


def build_head(kind: str, feature_dim: int, hidden: int, dropout: float, classes: int = 2) -> nn.Module:
    """A head that returns logits. "paper" is Flatten -> Dense(hidden, ReLU) -> Dropout -> Dense(classes) on the
    7x7x2048 map, whose sigmoid the exported model applies (``MaskNet(activation="sigmoid")``)."""
    if kind == "gap":
        return make_head(feature_dim, hidden, dropout, classes)
    if kind == "paper":
        from maskwatch.training.paper import FEATURE_MAP, make_paper_head

        channels = feature_dim // (FEATURE_MAP * FEATURE_MAP)
        paper = make_paper_head(in_features=feature_dim, hidden=hidden, dropout=dropout, classes=classes)
        # Cached features are flattened NCHW maps: unflatten, then the paper head flattens channels-last as Keras.
        return nn.Sequential(nn.Unflatten(1, (channels, FEATURE_MAP, FEATURE_MAP)), *list(paper)[:-1])
    raise ValueError(f"unknown head {kind!r}; known: {', '.join(HEADS)}")


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
