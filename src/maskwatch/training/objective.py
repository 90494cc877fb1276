"""What training optimises: the loss (with class weights), the output activation, and the validation views."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from maskwatch.training.augment import EVAL_FACE_SIZES
from maskwatch.training.config import TrainConfig
from maskwatch.training.model import activate

# Early stopping and model choice watch the validation loss over clean crops and small-face views alike.
VALIDATION_KINDS = ["clean", *[f"px{px}" for px in EVAL_FACE_SIZES]]


def predict(head: nn.Module, features: np.ndarray, activation: str = "softmax") -> np.ndarray:
    with torch.no_grad():
        return activate(head(torch.from_numpy(features)), activation).numpy()


def output_activation(config: TrainConfig) -> str:
    return "sigmoid" if config.head == "paper" else "softmax"


CLASS_BALANCE = ("none", "sqrt", "inverse")


def class_weights(y: np.ndarray, classes: int, mode: str) -> torch.Tensor | None:
    """Loss weight of each class from its share of the training labels ``y``, scaled to a mean of 1.

    "sqrt" weighs a class by 1/sqrt(share), "inverse" by 1/share (every class counts alike), "none" alike.
    """
    if mode not in CLASS_BALANCE:
        raise ValueError(f"class balance must be one of {', '.join(CLASS_BALANCE)}, not {mode!r}")
    if mode == "none":
        return None
    counts = np.bincount(np.asarray(y, int), minlength=classes).astype(np.float64)
    share = np.maximum(counts, 1) / max(counts.sum(), 1)
    weights = share ** (-0.5 if mode == "sqrt" else -1.0)
    return torch.tensor(weights / weights.mean(), dtype=torch.float32)


def make_loss(activation: str, classes: int, weights: torch.Tensor | None = None,
              ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy for softmax heads; binary cross-entropy per output for the paper's sigmoid head.

    ``weights`` (one per class) weigh each sample's loss by its true class.
    """
    if activation == "softmax":
        return nn.CrossEntropyLoss(weight=weights)
    bce = nn.BCEWithLogitsLoss(reduction="none")

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_sample = bce(logits, nn.functional.one_hot(target, classes).float()).mean(1)
        if weights is None:
            return per_sample.mean()
        w = weights[target]
        return (per_sample * w).sum() / w.sum()

    return loss


