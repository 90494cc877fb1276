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


class MaskNet(nn.Module):
    """Backbone + head; ``forward`` returns class probabilities so the exported file needs no post-processing."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=1)


def build_masknet(backbone: str, input_size: int, hidden: int, dropout: float, pretrained: bool = True) -> MaskNet:
    net = create_backbone(backbone, pretrained=pretrained, input_size=input_size)
    return MaskNet(net, make_head(backbone_spec(backbone).feature_dim, hidden, dropout))


def freeze(module: nn.Module) -> None:
    """Freeze weights and batch-norm statistics, as Keras' ``trainable = False`` does."""
    for parameter in module.parameters():
        parameter.requires_grad = False
    module.eval()
