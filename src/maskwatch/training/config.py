"""A training run's settings, and what ``prepare`` computes once for every head and phase to share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskwatch.crops import DEFAULT_MARGIN
from maskwatch.faces.yunet import DEFAULT_SCORE_THRESHOLD
from maskwatch.training.data import Sample
from maskwatch.training.face_cache import check_fallback


def data_seed(seed: int, split_seed: int | None) -> int:
    """The seed of a run's samples and split: ``split_seed`` when set, else the training ``seed``. Also for a
    configuration read back from a model's metadata."""
    return seed if split_seed is None else split_seed


@dataclass
class TrainConfig:
    data_dir: str  # the first data folder: one sub-folder of images per class, or a VOC scene set
    out_dir: str
    backbone: str = "efficientnet_lite0"
    input_size: int = 0  # 0: the backbone's default
    crop_margin: float = DEFAULT_MARGIN
    face_threshold: float = DEFAULT_SCORE_THRESHOLD
    # A class-per-folder photo where no face reaches face_threshold: crop its best face scoring at least this
    # instead of the whole photo (0: the whole photo, as before; at least face_cache.STORE_THRESHOLD).
    face_fallback: float = 0.0
    seed: int = 0  # initialisation, augmentation and order; and the split, unless split_seed is set
    # The split's own seed: another training seed on the same split (members of a mean of weights share one).
    split_seed: int | None = None
    # Another run's split.csv: its split and groups are kept, whatever crops this run cuts (the split otherwise
    # depends on them, through near-copies found on the crops), so that two recipes meet the same test photos.
    split_from: str | None = None
    views: int = 8  # random augmented views of each training image
    hidden: int = 256
    dropout: float = 0.3
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    max_epochs: int = 300
    patience: int = 20
    face_model: str | None = None
    cache_dir: str | None = None
    limit: int = 0  # use only this many images per class (quick runs and tests)
    head: str = "gap"  # "gap" (maskwatch) or "paper" (Flatten -> Dense(1024) -> Dropout -> Dense(2, sigmoid))
    backbone_weights: str | None = None  # pretrained weights file instead of the backbone's default source
    near_duplicates: bool = True  # group near-duplicate crops (dHash) into one split
    occlusion: bool = True  # hands over bare mouths as hard negatives
    # Views of each bare training face with a painted mask, labelled with_mask. Off by default: measured, they
    # did not help on real masks (MODEL_CARD.md, "Black and patterned masks").
    painted_views: int = 0
    # Views of each bare training face with a mask painted below the nose, labelled incorrect_mask (needs that
    # class in the data). Real masks below the nose are the rarest class; beside painted_views, these make
    # "is the nose covered" the one difference between two painted masks.
    below_nose_views: int = 0
    unfreeze: str = "0"  # phase 2: "0" (none, the paper's frozen backbone), N top blocks, or "all"
    finetune_lr: float = 1e-5
    finetune_epochs: int = 8
    finetune_patience: int = 3
    # More data folders, trained on together with data_dir (class-per-folder sets and VOC scene sets alike).
    extra_data: list[str] = field(default_factory=list)
    # Weights of the classes in the loss: "none", "sqrt" (inverse square root of each class's share) or
    # "inverse" (inverse share). None by default: the operating point handles the rare class (a mask below the
    # nose) at decision time, and sqrt weights sent masked faces to it (MODEL_CARD.md, "Training").
    class_balance: str = "none"
    # A run folder whose fine-tuned backbone (backbone.pt) and head (head.pt) phase 2 starts from, to go on
    # training a model instead of starting again from ImageNet (same backbone, input size, head and labels).
    init_from: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Settings that contradict each other or name missing files: said before any data is read."""
        check_fallback(self.face_fallback, self.face_threshold)
        if self.init_from:
            if self.unfreeze == "0":
                raise ValueError("--init-from starts phase 2 (fine-tuning) from a run: give --unfreeze N or all")
            run = Path(self.init_from)
            if missing := [n for n in ("report.json", "backbone.pt", "head.pt") if not (run / n).is_file()]:
                raise ValueError(f"--init-from {run}: no {', '.join(missing)} (a run folder of `maskwatch train` "
                                 "with a fine-tuned backbone has them)")

    @property
    def data_seed(self) -> int:
        """The seed that chooses the samples (``limit``) and deals them to train, val and test."""
        return data_seed(self.seed, self.split_seed)

    @property
    def painted_view_counts(self) -> dict[str, int]:
        """Views per bare training face with a painted mask, by view-kind prefix: "m" over the nose (labelled
        with_mask), "u" below it (incorrect_mask)."""
        return {"m": self.painted_views, "u": self.below_nose_views}

    @property
    def data_roots(self) -> list[Path]:
        return [Path(p) for p in [self.data_dir, *self.extra_data]]


@dataclass
class Prepared:
    """Everything a head needs, computed once: the split and the cached backbone features of every view."""

    config: TrainConfig
    out: Path
    cache: Path
    labels: list[str]
    samples: list[Sample]
    hashes: dict[str, int]  # dHash of each image's face crop, by file hash
    by_split: dict[str, list[Sample]]
    features: Callable[[str, list[str]], tuple[np.ndarray, np.ndarray]]  # (split, view kinds) -> frozen features, y
    items: Callable[[str, list[str]], tuple[list[str], np.ndarray]]  # (split, view kinds) -> "sha:kind" names, y
    view: Callable[[str], np.ndarray]  # "sha:kind" -> the view's BGR image at the model input size
    feature_dim: int
    size: int
    counts: dict
    unreadable: list[str]
    started: float


