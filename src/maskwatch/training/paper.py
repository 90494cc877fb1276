"""The paper's network: Keras ResNet50V2 (ImageNet, frozen) -> Flatten -> Dense(1024, ReLU) -> Dropout ->
Dense(2, sigmoid).

It differs from maskwatch's own model (``model.py``: pooled features, small head,
softmax) on purpose, to reproduce the paper: the head flattens the 7x7x2048 map,
so the first Dense alone holds 102.8 M parameters. ``parameter_table`` counts the
way Keras' ``model.summary()`` does, so the figures can be checked against the paper.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from maskwatch.training.backbones.resnet50v2 import ResNet50V2, resnet50v2
from maskwatch.training.heads import FEATURE_MAP, KerasFlatten, make_paper_head
from maskwatch.training.model import freeze

__all__ = ["FEATURE_MAP", "KerasFlatten", "PaperModel", "make_paper_head"]

class PaperModel(nn.Module):
    """Backbone feature map + paper head. ``forward`` gives the 2 sigmoid outputs; ``logits`` the
    pre-sigmoid values (for ``BCEWithLogitsLoss``, which is numerically safer than sigmoid + BCE)."""

    def __init__(self, backbone: ResNet50V2, head: nn.Sequential) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head[:-1](self.backbone.forward_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))

    def train(self, mode: bool = True) -> PaperModel:
        super().train(mode)
        # Keras runs a frozen (trainable=False) model's BatchNorm in inference mode, even in fit();
        # without this, model.train() would start updating the ImageNet statistics.
        if not any(p.requires_grad for p in self.backbone.parameters()):
            self.backbone.eval()
        return self


def build_paper_model(
    pretrained_weights_path: str | os.PathLike | None = None,
    *,
    pretrained: bool = True,
    freeze_backbone: bool = True,
    hidden: int = 1024,
    dropout: float = 0.5,
) -> PaperModel:
    """The paper's model at 224x224. With ``pretrained`` (the only meaningful setting for training),
    Keras' ImageNet file comes from ``pretrained_weights_path``, $MASKWATCH_RESNET50V2_WEIGHTS, the
    cache, or a verified download; ``pretrained=False`` leaves random weights (tests, shape checks)."""
    backbone = resnet50v2(pretrained=pretrained, weights_path=pretrained_weights_path)
    if freeze_backbone:
        freeze(backbone)
    return PaperModel(backbone, make_paper_head(hidden=hidden, dropout=dropout))


@dataclass(frozen=True)
class ParamRow:
    group: str
    params: int  # Keras' count: weights plus BatchNorm moving mean/variance
    trainable: int

    @property
    def non_trainable(self) -> int:
        return self.params - self.trainable


@dataclass(frozen=True)
class ParamTable:
    rows: tuple[ParamRow, ...]

    @property
    def total(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self.rows)

    @property
    def non_trainable(self) -> int:
        return self.total - self.trainable

    def subtotal(self, prefix: str) -> ParamRow:
        """Sum of the rows whose group starts with ``prefix`` (e.g. "backbone")."""
        rows = [r for r in self.rows if r.group.startswith(prefix)]
        return ParamRow(prefix, sum(r.params for r in rows), sum(r.trainable for r in rows))

    def format(self) -> str:
        width = max(len(r.group) for r in self.rows) + 2
        lines = [f"{'layer group':<{width}}{'params':>14}{'trainable':>14}{'non-trainable':>16}"]
        lines += [f"{r.group:<{width}}{r.params:>14,}{r.trainable:>14,}{r.non_trainable:>16,}" for r in self.rows]
        lines.append(f"{'total':<{width}}{self.total:>14,}{self.trainable:>14,}{self.non_trainable:>16,}")
        return "\n".join(lines)


def _keras_count(module: nn.Module) -> tuple[int, int]:
    """(params, trainable) as Keras counts them: BN moving mean/variance are non-trainable weights;
    PyTorch's num_batches_tracked has no Keras counterpart and is left out."""
    params = sum(p.numel() for p in module.parameters())
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    stats = 0
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.running_var is not None:
            stats += m.running_mean.numel() + m.running_var.numel()
    return params + stats, trainable


def parameter_table(model: nn.Module) -> ParamTable:
    """One row per child of each top-level part ("backbone.conv3 (Sequential)", "head.1 (Linear)", ...),
    counted as Keras counts."""
    rows = []
    for part_name, part in model.named_children():
        children = list(part.named_children()) or [("", part)]
        for child_name, child in children:
            label = f"{part_name}.{child_name} ({type(child).__name__})" if child_name else part_name
            rows.append(ParamRow(label, *_keras_count(child)))
    # Weights held by a module directly rather than by a child would be missed above: show them, never drop them.
    params, trainable = _keras_count(model)
    params -= sum(r.params for r in rows)
    trainable -= sum(r.trainable for r in rows)
    if params:
        rows.append(ParamRow("(held directly)", params, trainable))
    return ParamTable(tuple(rows))
