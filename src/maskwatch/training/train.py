"""``maskwatch train``: fine-tune a frozen ImageNet backbone with a new head on class-per-folder data.

Steps: scan and split the data (duplicates kept together) -> cut face crops
(cached) -> backbone features of augmented views (cached) -> train the head
with early stopping on validation loss -> test once -> export ONNX with metadata.
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from maskwatch.faces import YuNetDetector
from maskwatch.faces.yunet import DEFAULT_SCORE_THRESHOLD
from maskwatch.model_files import cache_dir as default_cache_dir
from maskwatch.training.augment import (
    EVAL_FACE_SIZES,
    as_small_face,
    occlude_lower_face,
    paint_mask,
    random_view,
    resize_to,
)
from maskwatch.training.backbones import backbone_spec
from maskwatch.training.data import (
    NEAR_DUPLICATE_BITS,
    Sample,
    dhash,
    fingerprint,
    group_near_duplicates,
    scan_dataset,
    split_samples,
    write_split,
)
from maskwatch.training.export import export_onnx
from maskwatch.training.face_cache import FaceCropCache
from maskwatch.training.features import FeatureExtractor, cached_features, torch_features
from maskwatch.training.finetune import finetune, unfreeze_description
from maskwatch.training.metrics import classification_report
from maskwatch.training.model import MaskNet, activate, build_head, feature_module, freeze

BARE_LABEL = "without_mask"
MASK_LABEL = "with_mask"
AUGMENT_VERSION = 3  # bump when augment.py changes, so cached features are recomputed
# Early stopping and model choice watch the validation loss over clean crops and small-face views alike.
VALIDATION_KINDS = ["clean", *[f"px{px}" for px in EVAL_FACE_SIZES]]


@dataclass
class TrainConfig:
    data_dir: str
    out_dir: str
    backbone: str = "efficientnet_lite0"
    input_size: int = 0  # 0: the backbone's default
    crop_margin: float = 0.2
    face_threshold: float = DEFAULT_SCORE_THRESHOLD
    seed: int = 0
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
    unfreeze: str = "0"  # phase 2: "0" (none, the paper's frozen backbone), N top blocks, or "all"
    finetune_lr: float = 1e-5
    finetune_epochs: int = 8
    finetune_patience: int = 3
    extra: dict = field(default_factory=dict)


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


def prepare(config: TrainConfig) -> Prepared:
    """Scan, crop, group near-duplicates, split, and make the frozen features available."""
    started = time.time()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir() / "train"
    spec = backbone_spec(config.backbone)
    size = config.input_size or spec.input_size
    torch.manual_seed(config.seed)

    samples, labels = scan_dataset(config.data_dir)
    if config.limit:
        samples = _limit_per_class(samples, config.limit, config.seed)
    # One YuNet pass: the faces of the training folders are large, and the crop cache was built this way.
    detector = YuNetDetector(config.face_model, score_threshold=config.face_threshold, extra_scales=())
    crop_cache = FaceCropCache(cache, detector, config.crop_margin, config.face_threshold)
    records = crop_cache.build(samples)
    unreadable = [records[s.sha256].error or "" for s in samples if records[s.sha256].error]
    samples = [s for s in samples if not records[s.sha256].error]
    whole_image = {s.sha256 for s in samples if records[s.sha256].whole_image}

    hashes = {s.sha256: dhash(crop_cache.load(s.sha256)) for s in samples}
    plain_leaks = _near_copies_across(samples, hashes, config.seed)
    if config.near_duplicates:
        group_near_duplicates(samples, hashes)
    split_samples(samples, seed=config.seed)
    write_split(samples, Path(config.data_dir), out / "split.csv")

    weights_tag = hashlib.sha256(str(config.backbone_weights or "default").encode()).hexdigest()[:8]
    module = feature_module(_backbone_module(spec.name, size, config.backbone_weights), config.head)
    extractor = FeatureExtractor(module, spec, size, cache, tag=f"{spec.name}-{size}-{config.head}-{weights_tag}")
    by_split = {name: [s for s in samples if s.split == name] for name in ("train", "val", "test")}
    label_index = {label: i for i, label in enumerate(labels)}
    bare = {s.sha256 for s in samples if s.label == BARE_LABEL}
    key = {"backbone": spec.name, "size": size, "margin": config.crop_margin,
           "threshold": config.face_threshold, "augment": AUGMENT_VERSION, "seed": config.seed,
           "occlusion": config.occlusion, "head": config.head, "weights": weights_tag}

    def view(item: str) -> np.ndarray:
        sha, kind = item.split(":")
        crop = crop_cache.load(sha)
        if kind == "clean":
            return resize_to(crop, size)
        if kind.startswith("px"):
            return as_small_face(crop, int(kind[2:]), size, config.crop_margin)
        # Evaluation only: a hand over the mouth, or a painted mask, from generator streams training never used.
        if kind == "hand":
            return resize_to(occlude_lower_face(crop, np.random.default_rng([99, int(sha[:12], 16)])), size)
        if kind == "paint":
            return resize_to(paint_mask(crop, np.random.default_rng([98, int(sha[:12], 16)])), size)
        if kind.startswith("m"):  # a random training view of a bare face with a painted mask
            rng = np.random.default_rng([config.seed, int(sha[:12], 16), 1000 + int(kind[1:])])
            return random_view(crop, size, rng, paint=True)
        rng = np.random.default_rng([config.seed, int(sha[:12], 16), int(kind[1:])])
        return random_view(crop, size, rng, occlude=config.occlusion and sha in bare)

    def members(split: str, kind: str) -> list[Sample]:
        painted = kind == "paint" or kind.startswith("m")  # painted masks go on bare faces only
        return [s for s in by_split[split] if s.label == BARE_LABEL] if painted else by_split[split]

    def items(split: str, kinds: list[str]) -> tuple[list[str], np.ndarray]:
        pairs = [(s, k) for k in kinds for s in members(split, k)]
        return [f"{s.sha256}:{k}" for s, k in pairs], np.array([label_index[item_label(s, k)] for s, k in pairs])

    def features(split: str, kinds: list[str]) -> tuple[np.ndarray, np.ndarray]:
        names, y = items(split, kinds)
        return cached_features(extractor, names, view, cache, key, desc=f"features {split}"), y

    group_sizes = Counter(s.group for s in samples)
    distinct_in_group: dict[str, set[str]] = {}
    for s in samples:
        distinct_in_group.setdefault(s.group, set()).add(s.sha256)
    counts = {
        "images": len(samples) + len(unreadable), "unreadable": len(unreadable),
        "whole_image_no_face": len(whole_image),
        "whole_image_no_face_in_test": sum(s.sha256 in whole_image for s in by_split["test"]),
        "byte_identical_groups": sum(1 for n in Counter(s.sha256 for s in samples).values() if n > 1),
        "near_duplicate_groups": sum(1 for v in distinct_in_group.values() if len(v) > 1),
        "images_in_duplicate_groups": sum(n for n in group_sizes.values() if n > 1),
        "plain_split_test_images_with_near_copy_in_train": plain_leaks,
        "near_duplicate_bits": NEAR_DUPLICATE_BITS,
        **{f"{k}_images": len(v) for k, v in by_split.items()},
    }
    return Prepared(config, out, cache, labels, samples, hashes, by_split, features, items, view, extractor.feature_dim,
                    size, counts, unreadable, started)


def train(config: TrainConfig) -> dict:
    prep = prepare(config)
    x_train, y_train, x_val, y_val = training_features(prep)
    head, history = fit_head(x_train, y_train, x_val, y_val, prep.feature_dim, len(prep.labels), config)
    if config.unfreeze == "0":
        return finish(prep, head, history, config)
    tuned = finetune(prep, head, config, first_epoch=len(history) + 1)
    return finish(prep, tuned.head, history + tuned.history, config, extra={"finetune": tuned.summary},
                  backbone=tuned.module)


def item_label(sample: Sample, kind: str) -> str:
    """A view's label: the sample's, except that a bare face with a painted mask ("m1", "m2", "paint") is masked."""
    return MASK_LABEL if kind == "paint" or kind.startswith("m") else sample.label


def training_features(prep: Prepared) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train_kinds = ["clean"] + [f"v{i}" for i in range(1, prep.config.views)]
    x_train, y_train = prep.features("train", train_kinds)
    if prep.config.painted_views:  # a separate call, so the cache of the plain views stays valid
        x_paint, y_paint = prep.features("train", [f"m{i}" for i in range(1, prep.config.painted_views + 1)])
        x_train, y_train = np.concatenate([x_train, x_paint]), np.concatenate([y_train, y_paint])
    x_val, y_val = prep.features("val", VALIDATION_KINDS)
    return x_train, y_train, x_val, y_val


def finish(
    prep: Prepared, head: nn.Module, history: list[dict], config: TrainConfig, extra: dict | None = None,
    backbone: nn.Module | None = None,
) -> dict:
    """Score the test split once, export the model with its metadata, write the report and the evaluation.

    ``backbone`` is the fine-tuned feature module of a second phase; without it, the frozen pretrained one.
    """
    out, labels, size = prep.out, prep.labels, prep.size
    spec = backbone_spec(config.backbone)
    activation = output_activation(config)

    def scored(kind: str) -> tuple[np.ndarray, np.ndarray]:  # test-split probabilities of one view kind, and y
        if backbone is None:
            x, y = prep.features("test", [kind])
        else:
            names, y = prep.items("test", [kind])
            x = torch_features(backbone, spec, names, prep.view)
        return predict(head, x, activation), y

    probabilities, y_test = scored("clean")
    test = classification_report(y_test, probabilities.argmax(1), labels)
    by_size = {}
    for px in EVAL_FACE_SIZES:
        probabilities, y_px = scored(f"px{px}")
        by_size[str(px)] = classification_report(y_px, probabilities.argmax(1), labels)
    probabilities, y_hand = scored("hand")
    bare = y_hand == labels.index(BARE_LABEL)
    hand_accuracy = float((probabilities[bare].argmax(1) == y_hand[bare]).mean()) if bare.any() else None
    probabilities, y_paint = scored("paint")
    paint_accuracy = float((probabilities.argmax(1) == y_paint).mean()) if len(y_paint) else None

    if backbone is None:
        backbone = feature_module(_backbone_module(spec.name, size, config.backbone_weights), config.head)
    freeze(backbone)
    model = MaskNet(backbone.to(memory_format=torch.contiguous_format), head, activation)
    metadata = {
        "labels": labels,
        "input_size": size,
        "channel_order": "RGB",
        "mean": list(spec.mean),
        "std": list(spec.std),
        "normalisation": "(pixel - mean) / std on 0-255 RGB, NCHW float32",
        "crop_margin": config.crop_margin,
        "backbone": spec.name,
        "backbone_weights": spec.weights if config.unfreeze == "0" else
        f"{spec.weights}, fine-tuned on mask data ({unfreeze_description(config.unfreeze)})",
        "head": head_description(config, len(labels)),
        "output": activation,
        "data_fingerprint": fingerprint(prep.samples),
        "split_fingerprint": fingerprint(prep.samples, with_split=True),
        "split_counts": {k: len(v) for k, v in prep.by_split.items()},
        "test_accuracy": test["accuracy"],
        "test_accuracy_by_face_px": {k: v["accuracy"] for k, v in by_size.items()},
        "test_bare_with_hand_accuracy": hand_accuracy,
        "test_bare_with_painted_mask_accuracy": paint_accuracy,
        "face_threshold": config.face_threshold,
        "trained": time.strftime("%Y-%m-%d"),
        "maskwatch_train_config": {k: v for k, v in asdict(config).items() if k not in ("out_dir", "cache_dir")},
    }
    model_path = export_onnx(model, out / "mask_classifier.onnx", size, metadata)
    torch.save(head.state_dict(), out / "head.pt")

    report = {
        "config": asdict(config),
        "labels": labels,
        "counts": prep.counts,
        "unreadable": prep.unreadable,
        "test": test,
        "test_by_face_px": by_size,
        "test_bare_with_hand_accuracy": hand_accuracy,
        "test_bare_with_painted_mask_accuracy": paint_accuracy,
        "epochs": len(history),
        "best_epoch": int(np.argmin([h["val_loss"] for h in history])) + 1,
        "seconds": round(time.time() - prep.started, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "model": str(model_path),
        "metadata": metadata,
        **(extra or {}),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    with open(out / "history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    # Plots, calibration and the misclassified contact sheet beside the report.
    from maskwatch.evaluation.run_report import write_evaluation

    write_evaluation(out, cache_dir=prep.cache, face_model=config.face_model)
    return report


def fit_head(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
    feature_dim: int, classes: int, config: TrainConfig,
) -> tuple[nn.Module, list[dict]]:
    """Train the head on cached features; stop when validation loss has not improved for ``patience`` epochs.

    Seeded from ``config.seed`` alone, so a tune trial and a later ``train`` with its settings give the same head.
    """
    torch.manual_seed(config.seed)
    head = build_head(config.head, feature_dim, config.hidden, config.dropout, classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = make_loss(output_activation(config), classes)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val).long()
    generator = torch.Generator().manual_seed(config.seed)
    best_loss, best_state, waited, history = float("inf"), None, 0, []
    progress = tqdm(range(config.max_epochs), desc="head", unit="epoch")
    for epoch in progress:
        started = time.time()
        head.train()
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(xt), config.batch_size):
            index = order[start:start + config.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(head(xt[index]), yt[index])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(index)
        head.eval()
        with torch.no_grad():
            val_logits = head(xv)
            val_loss = float(loss_fn(val_logits, yv))
            val_acc = float((val_logits.argmax(1) == yv).float().mean())
        history.append({"epoch": epoch + 1, "phase": 1, "train_loss": total / len(xt), "val_loss": val_loss,
                        "val_accuracy": val_acc, "seconds": round(time.time() - started, 2)})
        progress.set_postfix(val_loss=f"{val_loss:.4f}", val_acc=f"{val_acc:.4f}")
        if val_loss < best_loss - 1e-5:
            best_loss, waited = val_loss, 0
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
        else:
            waited += 1
            if waited >= config.patience:
                break
    assert best_state is not None
    head.load_state_dict(best_state)  # early stopping restores the best weights
    head.eval()
    return head, history


def predict(head: nn.Module, features: np.ndarray, activation: str = "softmax") -> np.ndarray:
    with torch.no_grad():
        return activate(head(torch.from_numpy(features)), activation).numpy()


def output_activation(config: TrainConfig) -> str:
    return "sigmoid" if config.head == "paper" else "softmax"


def make_loss(activation: str, classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Cross-entropy for softmax heads; binary cross-entropy per output for the paper's sigmoid head."""
    if activation == "softmax":
        return nn.CrossEntropyLoss()
    bce = nn.BCEWithLogitsLoss()
    return lambda logits, target: bce(logits, nn.functional.one_hot(target, classes).float())


def head_description(config: TrainConfig, classes: int) -> str:
    if config.head == "paper":
        return (f"Flatten -> Dense({config.hidden}, ReLU) -> Dropout({config.dropout}) -> Dense({classes}) -> sigmoid"
                " (the paper's head)")
    return f"GAP -> Dense({config.hidden}, ReLU) -> Dropout({config.dropout}) -> Dense({classes}) -> softmax"


def _backbone_module(name: str, size: int, weights_path: str | None = None) -> nn.Module:
    from maskwatch.training.backbones import create_backbone

    backbone = create_backbone(name, pretrained=True, input_size=size, weights_path=weights_path)
    freeze(backbone)
    return backbone


def _near_copies_across(samples: list[Sample], hashes: dict[str, int], seed: int) -> int:
    """How many test images of a plain (byte-identical groups only) split have a near-copy in train."""
    plain = [Sample(s.path, s.label, s.sha256, group=s.sha256) for s in samples]
    split_samples(plain, seed=seed)
    leaked = near_copies_in_train(plain, hashes)
    return sum(s.sha256 in leaked for s in plain if s.split == "test")  # byte-identical copies count each


def near_copies_in_train(samples: list[Sample], hashes: dict[str, int]) -> set[str]:
    """Hashes of the split's test images whose face crop is within ``NEAR_DUPLICATE_BITS`` of a train crop."""
    train_hashes = np.array([hashes[s.sha256] for s in samples if s.split == "train"], dtype=np.uint64)
    leaked = set()
    for s in samples:
        if s.split == "test":
            differing = np.bitwise_xor(train_hashes, np.uint64(hashes[s.sha256]))
            bits = np.unpackbits(differing.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
            if (bits <= NEAR_DUPLICATE_BITS).any():
                leaked.add(s.sha256)
    return leaked


def _limit_per_class(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    kept = []
    for label in sorted({s.label for s in samples}):
        members = [s for s in samples if s.label == label]
        index = rng.permutation(len(members))[:limit]
        kept += [members[i] for i in sorted(index)]
    return kept
