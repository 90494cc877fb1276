"""``maskwatch train``: fine-tune a frozen ImageNet backbone with a new head on class-per-folder data.

Steps: scan and split the data (duplicates kept together) -> cut face crops
(cached) -> backbone features of augmented views (cached) -> train the head
with early stopping on validation loss -> test once -> export ONNX with metadata.
"""

from __future__ import annotations

import csv
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from maskwatch.faces import YuNetDetector
from maskwatch.faces.yunet import DEFAULT_SCORE_THRESHOLD
from maskwatch.model_files import cache_dir as default_cache_dir
from maskwatch.training.augment import EVAL_FACE_SIZES, as_small_face, random_view, resize_to
from maskwatch.training.backbones import backbone_spec
from maskwatch.training.data import Sample, fingerprint, scan_dataset, split_samples, write_split
from maskwatch.training.export import export_onnx
from maskwatch.training.face_cache import FaceCropCache
from maskwatch.training.features import FeatureExtractor, cached_features
from maskwatch.training.metrics import classification_report
from maskwatch.training.model import MaskNet, freeze, make_head

AUGMENT_VERSION = 2  # bump when augment.py changes, so cached features are recomputed


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
    extra: dict = field(default_factory=dict)


def train(config: TrainConfig) -> dict:
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
    split_samples(samples, seed=config.seed)
    write_split(samples, Path(config.data_dir), out / "split.csv")

    detector = YuNetDetector(config.face_model, score_threshold=config.face_threshold)
    crop_cache = FaceCropCache(cache, detector, config.crop_margin, config.face_threshold)
    records = crop_cache.build(samples)
    unreadable = [s for s in samples if records[s.sha256].error]
    samples = [s for s in samples if not records[s.sha256].error]
    whole_image = {s.sha256 for s in samples if records[s.sha256].whole_image}

    extractor = FeatureExtractor(spec, size, cache)
    by_split = {name: [s for s in samples if s.split == name] for name in ("train", "val", "test")}
    label_index = {label: i for i, label in enumerate(labels)}
    key = {"backbone": spec.name, "size": size, "margin": config.crop_margin,
           "threshold": config.face_threshold, "augment": AUGMENT_VERSION, "seed": config.seed}

    def view(item: str) -> np.ndarray:
        sha, kind = item.split(":")
        crop = crop_cache.load(sha)
        if kind == "clean":
            return resize_to(crop, size)
        if kind.startswith("px"):
            return as_small_face(crop, int(kind[2:]), size, config.crop_margin)
        rng = np.random.default_rng([config.seed, int(sha[:12], 16), int(kind[1:])])
        return random_view(crop, size, rng)

    def features(split: str, kinds: list[str]) -> tuple[np.ndarray, np.ndarray]:
        items = [f"{s.sha256}:{k}" for k in kinds for s in by_split[split]]
        x = cached_features(extractor, items, view, cache, key, desc=f"features {split}")
        y = np.array([label_index[s.label] for _ in kinds for s in by_split[split]])
        return x, y

    train_kinds = ["clean"] + [f"v{i}" for i in range(1, config.views)]
    size_kinds = [f"px{px}" for px in EVAL_FACE_SIZES]
    x_train, y_train = features("train", train_kinds)
    x_val, y_val = features("val", ["clean", *size_kinds])
    head, history = fit_head(x_train, y_train, x_val, y_val, spec.feature_dim, len(labels), config)

    # The test split is touched once, here, after the head is final.
    x_test, y_test = features("test", ["clean"])
    test = classification_report(y_test, predict(head, x_test).argmax(1), labels)
    by_size = {}
    for px in EVAL_FACE_SIZES:
        x_px, y_px = features("test", [f"px{px}"])
        by_size[str(px)] = classification_report(y_px, predict(head, x_px).argmax(1), labels)
    test_whole = [i for i, s in enumerate(by_split["test"]) if s.sha256 in whole_image]

    model = MaskNet(_backbone_module(spec.name, size), head)
    metadata = {
        "labels": labels,
        "input_size": size,
        "channel_order": "RGB",
        "mean": list(spec.mean),
        "std": list(spec.std),
        "normalisation": "(pixel - mean) / std on 0-255 RGB, NCHW float32",
        "crop_margin": config.crop_margin,
        "backbone": spec.name,
        "backbone_weights": spec.weights,
        "head": f"GAP -> Dense({config.hidden}, ReLU) -> Dropout({config.dropout}) -> Dense({len(labels)}) -> softmax",
        "data_fingerprint": fingerprint(samples),
        "split_fingerprint": fingerprint(samples, with_split=True),
        "split_counts": {k: len(v) for k, v in by_split.items()},
        "test_accuracy": test["accuracy"],
        "test_accuracy_by_face_px": {k: v["accuracy"] for k, v in by_size.items()},
        "face_threshold": config.face_threshold,
        "trained": time.strftime("%Y-%m-%d"),
        "maskwatch_train_config": {k: v for k, v in asdict(config).items() if k not in ("out_dir", "cache_dir")},
    }
    model_path = export_onnx(model, out / "mask_classifier.onnx", size, metadata)
    torch.save(head.state_dict(), out / "head.pt")

    report = {
        "config": asdict(config),
        "labels": labels,
        "counts": {"images": len(samples) + len(unreadable), "unreadable": len(unreadable),
                   "whole_image_no_face": len(whole_image),
                   "whole_image_no_face_in_test": len(test_whole),
                   **{f"{k}_images": len(v) for k, v in by_split.items()}},
        "unreadable": [records[s.sha256].error for s in unreadable],
        "test": test,
        "test_by_face_px": by_size,
        "epochs": len(history),
        "best_epoch": int(np.argmin([h["val_loss"] for h in history])) + 1,
        "seconds": round(time.time() - started, 1),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "model": str(model_path),
        "metadata": metadata,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    with open(out / "history.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    # Plots, calibration and the misclassified contact sheet beside the report.
    from maskwatch.evaluation.run_report import write_evaluation

    write_evaluation(out, cache_dir=cache, face_model=config.face_model)
    return report


def fit_head(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
    feature_dim: int, classes: int, config: TrainConfig,
) -> tuple[nn.Module, list[dict]]:
    """Train the head on cached features; stop when validation loss has not improved for ``patience`` epochs."""
    head = make_head(feature_dim, config.hidden, config.dropout, classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    xv, yv = torch.from_numpy(x_val), torch.from_numpy(y_val).long()
    generator = torch.Generator().manual_seed(config.seed)
    best_loss, best_state, waited, history = float("inf"), None, 0, []
    progress = tqdm(range(config.max_epochs), desc="head", unit="epoch")
    for epoch in progress:
        head.train()
        order = torch.randperm(len(xt), generator=generator)
        total = 0.0
        for start in range(0, len(xt), config.batch_size):
            index = order[start:start + config.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(head(xt[index]), yt[index])
            loss.backward()
            optimizer.step()
            total += float(loss) * len(index)
        head.eval()
        with torch.no_grad():
            val_logits = head(xv)
            val_loss = float(loss_fn(val_logits, yv))
            val_acc = float((val_logits.argmax(1) == yv).float().mean())
        history.append({"epoch": epoch + 1, "train_loss": total / len(xt), "val_loss": val_loss,
                        "val_accuracy": val_acc})
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


def predict(head: nn.Module, features: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(head(torch.from_numpy(features)), dim=1).numpy()


def _backbone_module(name: str, size: int) -> nn.Module:
    from maskwatch.training.backbones import create_backbone

    backbone = create_backbone(name, pretrained=True, input_size=size)
    freeze(backbone)
    return backbone


def _limit_per_class(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    kept = []
    for label in sorted({s.label for s in samples}):
        members = [s for s in samples if s.label == label]
        index = rng.permutation(len(members))[:limit]
        kept += [members[i] for i in sorted(index)]
    return kept
