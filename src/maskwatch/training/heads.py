"""The heads put on a backbone: maskwatch's (pooled features -> Dense -> Dropout -> Dense) and the paper's
(Flatten -> Dense(1024) -> Dropout -> Dense(2, sigmoid) on ResNet50V2's 7x7x2048 map)."""

from __future__ import annotations

import torch
from torch import nn

from maskwatch.training.backbones.resnet50v2 import FEATURE_DIM


def make_head(feature_dim: int, hidden: int, dropout: float, classes: int = 2) -> nn.Sequential:
    """GAP features -> Dense(hidden, ReLU) -> Dropout -> Dense(classes)."""
    return nn.Sequential(
        nn.Linear(feature_dim, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, classes),
    )


HEADS = ("gap", "paper")


FEATURE_MAP = 7  # 224 / 32


class KerasFlatten(nn.Module):
    """Flatten (N, C, H, W) in Keras' channels-last order (H, W, C), so that the Dense weights mean
    the same as in a Keras model of the paper and could be moved between the two."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1)


def make_paper_head(
    in_features: int = FEATURE_MAP * FEATURE_MAP * FEATURE_DIM,
    hidden: int = 1024,
    dropout: float = 0.5,
    classes: int = 2,
) -> nn.Sequential:
    """Flatten -> Dense(hidden, ReLU) -> Dropout -> Dense(classes) -> sigmoid, as the paper.

    The paper uses sigmoid on 2 outputs: each is an independent probability and the
    two need not sum to 1. For two mutually exclusive classes softmax (maskwatch's
    own model) is the usual choice; sigmoid is kept here only to reproduce the paper.
    """
    hidden_layer = nn.Linear(in_features, hidden)
    output_layer = nn.Linear(hidden, classes)
    for layer in (hidden_layer, output_layer):
        # Keras' Dense defaults (glorot_uniform kernel, zero bias): the head is the part the paper trains.
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(
        KerasFlatten(),
        hidden_layer,
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        output_layer,
        nn.Sigmoid(),
    )


def build_head(kind: str, feature_dim: int, hidden: int, dropout: float, classes: int = 2) -> nn.Module:
    """A head that returns logits. "paper" is Flatten -> Dense(hidden, ReLU) -> Dropout -> Dense(classes) on the
    7x7x2048 map, whose sigmoid the exported model applies (``MaskNet(activation="sigmoid")``)."""
    if kind == "gap":
        return make_head(feature_dim, hidden, dropout, classes)
    if kind == "paper":
        channels = feature_dim // (FEATURE_MAP * FEATURE_MAP)
        paper = make_paper_head(in_features=feature_dim, hidden=hidden, dropout=dropout, classes=classes)
        # Cached features are flattened NCHW maps: unflatten, then the paper head flattens channels-last as Keras.
        return nn.Sequential(nn.Unflatten(1, (channels, FEATURE_MAP, FEATURE_MAP)), *list(paper)[:-1])
    raise ValueError(f"unknown head {kind!r}; known: {', '.join(HEADS)}")


