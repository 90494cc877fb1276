"""``maskwatch train``: fine-tune an ImageNet backbone with a new head on class-per-folder and VOC scene data.

Steps: scan and split the data (duplicates kept together) -> cut face crops
(cached) -> backbone features of augmented views (cached) -> train the head
with early stopping on validation loss -> (optionally) fine-tune the backbone -> choose the operating
point on the scene faces of val -> test once -> export ONNX with metadata. The command (``maskwatch.cli``)
then writes the evaluation report beside it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import platform
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from maskwatch.classifier.decision import OperatingPoint
from maskwatch.classifier.onnx_classifier import MODEL_FILE_NAME
from maskwatch.crops import face_in_crop
from maskwatch.faces import YuNetDetector
from maskwatch.labels import INCORRECT_MASK, WITH_MASK, WITHOUT_MASK
from maskwatch.model_files import cache_dir as default_cache_dir
from maskwatch.training.augment import (
    EVAL_FACE_SIZES,
    NOSE_AND_MOUTH,
    as_small_face,
    hand_over_mouth_view,
    paint_mask,
    random_view,
    resize_to,
)
from maskwatch.training.backbones import backbone_spec
from maskwatch.training.config import Prepared, TrainConfig
from maskwatch.training.data import (
    NEAR_DUPLICATE_BITS,
    Sample,
    deal_split,
    fingerprint,
    scan_sources,
    split_samples,
    write_split,
)
from maskwatch.training.export import export_onnx
from maskwatch.training.face_cache import FaceCropCache
from maskwatch.training.features import FeatureExtractor, cached_features, torch_features
from maskwatch.training.finetune import finetune, unfreeze_description
from maskwatch.training.metrics import classification_report
from maskwatch.training.model import MaskNet, build_head, feature_module, freeze
from maskwatch.training.objective import (
    VALIDATION_KINDS,
    class_weights,
    make_loss,
    output_activation,
    predict,
)
from maskwatch.training.operating_point import balanced_accuracy, choose_operating_point, two_class_accuracy

BACKBONE_STATE = "backbone.pt"  # the fine-tuned feature module's weights, for --init-from
AUGMENT_VERSION = 3  # bump when augment.py changes, so cached features are recomputed


def prepare(config: TrainConfig) -> Prepared:
    """Scan, crop, group near-duplicates, split, and make the frozen features available."""
    started = time.time()
    out = Path(config.out_dir)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir() / "train"
    spec = backbone_spec(config.backbone)
    size = config.input_size or spec.input_size
    torch.manual_seed(config.seed)

    samples, labels = scan_sources(config.data_roots)
    out.mkdir(parents=True, exist_ok=True)  # after the data is known to be usable: a refusal leaves no folder
    if config.below_nose_views and INCORRECT_MASK not in labels:
        raise ValueError(f"below-nose views are labelled {INCORRECT_MASK}, a class none of the data folders has "
                         "(a VOC scene set with masks worn below the nose brings it)")
    if config.limit:
        samples = _limit_per_class(samples, config.limit, config.data_seed)
    # One YuNet pass: the faces of the training folders are large, and the crop cache was built this way.
    detector = YuNetDetector(config.face_model, score_threshold=config.face_threshold, extra_scales=())
    crop_cache = FaceCropCache(cache, detector, config.crop_margin, config.face_threshold, config.face_fallback)
    records = crop_cache.build(samples)
    unreadable = [records[s.sha256].error or "" for s in samples if records[s.sha256].error]
    if unreadable:  # also in report.json, every one
        print(f"skipped {len(unreadable)} unreadable image(s) or box(es), e.g. {unreadable[0]}", file=sys.stderr)
    samples = [s for s in samples if not records[s.sha256].error]
    whole_image = {s.sha256 for s in samples if records[s.sha256].whole_image}

    hashes = {s.sha256: crop_cache.crop_hash(s) for s in samples}
    unsplit = [s for s in samples if not s.split]  # scene sets bring their own split
    plain_leaks = _near_copies_across(unsplit, hashes, config.data_seed)
    deal_split(samples, lambda s: hashes[s.sha256], seed=config.data_seed, near_duplicates=config.near_duplicates,
               split_from=config.split_from)
    check_split(samples, labels)
    write_split(samples, config.data_roots, out / "split.csv")

    weights_tag = hashlib.sha256(str(config.backbone_weights or "default").encode()).hexdigest()[:8]
    module = feature_module(_backbone_module(spec.name, size, config.backbone_weights), config.head)
    extractor = FeatureExtractor(module, spec, size, cache, tag=f"{spec.name}-{size}-{config.head}-{weights_tag}")
    by_split = {name: [s for s in samples if s.split == name] for name in ("train", "val", "test")}
    label_index = {label: i for i, label in enumerate(labels)}
    bare = {s.sha256 for s in samples if s.label == WITHOUT_MASK}
    key = {"backbone": spec.name, "size": size, "margin": config.crop_margin,
           "threshold": config.face_threshold, "augment": AUGMENT_VERSION, "seed": config.seed,
           "occlusion": config.occlusion, "head": config.head, "weights": weights_tag,
           # The face model cuts the crops (and places the masks painted below the nose): its features are its own.
           "face_model": crop_cache.folder.name}

    found_nose_and_mouth: dict[str, tuple[float, float]] = {}

    def nose_and_mouth_of(sha: str, crop: np.ndarray) -> tuple[float, float]:
        if sha not in found_nose_and_mouth:
            found_nose_and_mouth[sha] = nose_and_mouth(crop, detector, config.crop_margin)
        return found_nose_and_mouth[sha]

    def view(item: str) -> np.ndarray:
        sha, kind = item.split(":")
        crop = crop_cache.load(sha)
        if kind == "clean":
            return resize_to(crop, size)
        if kind.startswith("px"):
            return as_small_face(crop, int(kind[2:]), size, config.crop_margin)
        # Evaluation only: a hand over the mouth, or a painted mask, from generator streams training never used.
        if kind == "hand":
            return resize_to(hand_over_mouth_view(crop, sha), size)
        painted = painted_label(kind)
        if painted is not None:  # a bare face with a mask painted over the nose, or below it
            below = nose_and_mouth_of(sha, crop) if painted == INCORRECT_MASK else None
            if kind in ("paint", "under"):  # test views
                rng = np.random.default_rng([98 if kind == "paint" else 97, int(sha[:12], 16)])
                return resize_to(paint_mask(crop, rng, config.crop_margin, below_nose=below), size)
            stream = (1000 if kind[0] == "m" else 2000) + int(kind[1:])  # training views "m1", "u1", ...
            rng = np.random.default_rng([config.seed, int(sha[:12], 16), stream])
            return random_view(crop, size, rng, paint=True, below_nose=below, margin=config.crop_margin)
        rng = np.random.default_rng([config.seed, int(sha[:12], 16), int(kind[1:])])
        return random_view(crop, size, rng, occlude=config.occlusion and sha in bare)

    def members(split: str, kind: str) -> list[Sample]:
        painted = painted_label(kind) is not None  # painted masks go on bare faces only
        return [s for s in by_split[split] if s.label == WITHOUT_MASK] if painted else by_split[split]

    def items(split: str, kinds: list[str]) -> tuple[list[str], np.ndarray]:
        pairs = [(s, k) for k in kinds for s in members(split, k)]
        return [f"{s.sha256}:{k}" for s, k in pairs], np.array([label_index[item_label(s, k)] for s, k in pairs])

    def features(split: str, kinds: list[str]) -> tuple[np.ndarray, np.ndarray]:
        names, y = items(split, kinds)
        return cached_features(extractor, names, view, cache, key, desc=f"features {split}"), y

    # Duplicate groups are a class-per-folder matter: a scene's faces share a group because they share an image.
    folder_samples = [s for s in samples if s.box is None]
    group_sizes = Counter(s.group for s in folder_samples)
    distinct_in_group: dict[str, set[str]] = {}
    for s in folder_samples:
        distinct_in_group.setdefault(s.group, set()).add(s.sha256)
    counts = {
        # "images": samples, i.e. photos of class-per-folder sets plus annotated faces of scene sets.
        "images": len(samples) + len(unreadable), "unreadable": len(unreadable),
        "scene_faces": len(samples) - len(folder_samples),
        "scene_images": len({s.group for s in samples if s.box is not None}),
        "whole_image_no_face": len(whole_image),
        "fallback_face": sum(records[s.sha256].fallback for s in samples),
        "whole_image_no_face_in_test": sum(s.sha256 in whole_image for s in by_split["test"]),
        "byte_identical_groups": sum(1 for n in Counter(s.sha256 for s in folder_samples).values() if n > 1),
        "near_duplicate_groups": sum(1 for v in distinct_in_group.values() if len(v) > 1),
        "images_in_duplicate_groups": sum(n for n in group_sizes.values() if n > 1),
        "plain_split_test_images_with_near_copy_in_train": plain_leaks,
        "near_duplicate_bits": NEAR_DUPLICATE_BITS,
        **{f"{k}_images": len(v) for k, v in by_split.items()},
        "by_source": source_counts(samples, config.data_roots),
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


def check_split(samples: list[Sample], labels: list[str]) -> None:
    """A split a model can be trained, stopped early and tested on: every class in train, and val and test not
    empty. Said before any feature is computed or any epoch run (a scene set whose manifest has no test rows,
    or ``--limit`` too small to deal 60/20/20, used to fail only after training)."""
    counts = {split: Counter(s.label for s in samples if s.split == split) for split in ("train", "val", "test")}
    if missing := [label for label in labels if not counts["train"][label]]:
        raise ValueError(f"no training samples of {', '.join(missing)} (train: {dict(counts['train'])})")
    for split in ("val", "test"):
        if not counts[split]:
            raise ValueError(f"the {split} split is empty: a class-per-folder set is dealt 60/20/20 (it needs a "
                             f"few images per class), a VOC scene set keeps its manifest's split (add a "
                             f"class-per-folder set, or {split} rows to the manifest)")


def nose_and_mouth(crop: np.ndarray, detector: YuNetDetector, margin: float) -> tuple[float, float]:
    """Heights of the nose tip and the mouth in a crop's face box (fractions from its top), from the landmarks
    of the face the detector finds at the crop's centre; ``NOSE_AND_MOUTH`` where it finds none there."""
    lo, inner = face_in_crop(crop.shape[0], margin)
    centre = crop.shape[0] / 2
    near = [f for f in detector.detect(crop)
            if abs((f.box[0] + f.box[2]) / 2 - centre) < 0.25 * inner
            and abs((f.box[1] + f.box[3]) / 2 - centre) < 0.25 * inner]
    if not near:
        return NOSE_AND_MOUTH
    landmarks = max(near, key=lambda f: f.score).landmarks
    nose, mouth = (landmarks[2, 1] - lo) / inner, (landmarks[3:5, 1].mean() - lo) / inner
    if not 0.4 <= nose < mouth <= 1.0:  # a landmark fit gone wrong
        return NOSE_AND_MOUTH
    return float(nose), float(mouth)


def painted_label(kind: str) -> str | None:
    """The label of a view kind that paints a mask on a bare face, or None for the other kinds.

    "m1", "m2", ... (training) and "paint" (test) paint it over the nose: ``with_mask``; "u1", "u2", ... and
    "under" below the nose: ``incorrect_mask``.
    """
    if kind == "paint" or kind[0] == "m":
        return WITH_MASK
    if kind == "under" or kind[0] == "u":
        return INCORRECT_MASK
    return None


def item_label(sample: Sample, kind: str) -> str:
    """A view's label: the sample's, except for a bare face with a painted mask (``painted_label``)."""
    return painted_label(kind) or sample.label


def training_features(prep: Prepared) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    train_kinds = ["clean"] + [f"v{i}" for i in range(1, prep.config.views)]
    x_train, y_train = prep.features("train", train_kinds)
    # Separate calls, so that the cache of the plain views stays valid.
    for prefix, count in prep.config.painted_view_counts.items():
        if count:
            x_paint, y_paint = prep.features("train", [f"{prefix}{i}" for i in range(1, count + 1)])
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

    def scored(kind: str, split: str = "test") -> tuple[np.ndarray, np.ndarray]:  # probabilities of a view, y
        if backbone is None:
            x, y = prep.features(split, [kind])
        else:
            names, y = prep.items(split, [kind])
            x = torch_features(backbone, spec, names, prep.view)
        return predict(head, x, activation), y

    # Where the probabilities are cut into labels: chosen on the scene sets' validation faces (if any).
    val_probabilities, y_val = scored("clean", "val")
    val_sources = np.array([s.source for s in prep.by_split["val"]], int)
    scene_val = np.array([s.box is not None for s in prep.by_split["val"]], bool)
    if scene_val.any() and INCORRECT_MASK in labels:
        point, operating_search = choose_operating_point(val_probabilities[scene_val], y_val[scene_val], labels)
        operating_search["chosen_on"] = "validation faces of the scene sets (annotated boxes)"
    else:
        point, operating_search = OperatingPoint(), {"chosen_on": "default (no scene set with the three classes)"}
    val_by_source = {str(root): source_report(val_probabilities[val_sources == i], y_val[val_sources == i],
                                              labels, point)
                     for i, root in enumerate(config.data_roots) if (val_sources == i).any()}

    probabilities, y_test = scored("clean")
    test = classification_report(y_test, probabilities.argmax(1), labels)
    # The paper's protocol: two classes (a mask worn wrong counts as none), at the shipped operating point.
    test_two_class = two_class_accuracy(probabilities, y_test, labels, point)
    by_size = {}
    for px in EVAL_FACE_SIZES:
        probabilities, y_px = scored(f"px{px}")
        by_size[str(px)] = classification_report(y_px, probabilities.argmax(1), labels)
    probabilities, y_hand = scored("hand")
    bare = y_hand == labels.index(WITHOUT_MASK)
    hand_accuracy = float((probabilities[bare].argmax(1) == y_hand[bare]).mean()) if bare.any() else None
    probabilities, y_paint = scored("paint")
    paint_accuracy = float((probabilities.argmax(1) == y_paint).mean()) if len(y_paint) else None
    below_nose_accuracy = None  # bare test faces with a mask painted below the nose, called incorrect_mask
    if INCORRECT_MASK in labels:
        probabilities, y_under = scored("under")
        below_nose_accuracy = float((probabilities.argmax(1) == y_under).mean()) if len(y_under) else None

    if backbone is None:
        backbone = feature_module(_backbone_module(spec.name, size, config.backbone_weights), config.head)
    freeze(backbone)
    backbone = backbone.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]  # stubs lack it
    model = MaskNet(backbone, head, activation)
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
        "test_two_class_accuracy": test_two_class,
        "operating_point": {**point.to_dict(), "search": operating_search},
        "val_by_source": {root: {k: r[k] for k in ("n", "accuracy", "balanced_accuracy")}
                          for root, r in val_by_source.items()},
        "test_accuracy_by_face_px": {k: v["accuracy"] for k, v in by_size.items()},
        "test_bare_with_hand_accuracy": hand_accuracy,
        "test_bare_with_painted_mask_accuracy": paint_accuracy,
        "test_bare_with_mask_painted_below_nose_accuracy": below_nose_accuracy,
        "face_threshold": config.face_threshold,
        "trained": time.strftime("%Y-%m-%d"),
        "maskwatch_train_config": {k: v for k, v in asdict(config).items() if k not in ("out_dir", "cache_dir")},
    }
    model_path = export_onnx(model, out / MODEL_FILE_NAME, size, metadata)
    torch.save(head.state_dict(), out / "head.pt")
    if config.unfreeze != "0":  # a fine-tuned backbone: keep it, so that a later run can go on from it
        torch.save(backbone.state_dict(), out / BACKBONE_STATE)

    report = {
        "config": asdict(config),
        "labels": labels,
        "counts": prep.counts,
        "unreadable": prep.unreadable,
        "test": test,
        "test_two_class_accuracy": test_two_class,
        "test_by_face_px": by_size,
        "operating_point": {**point.to_dict(), "search": operating_search},
        "val_by_source": val_by_source,
        "test_bare_with_hand_accuracy": hand_accuracy,
        "test_bare_with_painted_mask_accuracy": paint_accuracy,
        "test_bare_with_mask_painted_below_nose_accuracy": below_nose_accuracy,
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
    loss_fn = make_loss(output_activation(config), classes, class_weights(y_train, classes, config.class_balance))
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


def source_report(probabilities: np.ndarray, y: np.ndarray, labels: list[str], point: OperatingPoint) -> dict:
    """One source's validation figures at the operating point: accuracy, balanced accuracy, per class, confusion."""
    predicted = point.indices(probabilities, labels)
    report = classification_report(y, predicted, labels)
    report["balanced_accuracy"] = balanced_accuracy(y, predicted, range(len(labels)))
    report["two_class_accuracy"] = two_class_accuracy(probabilities, y, labels, point)
    return report


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


def source_counts(samples: list[Sample], roots: list[Path]) -> dict[str, dict]:
    """Samples per data folder, split and label: what each source brought to the run."""
    result: dict[str, dict] = {}
    for s in samples:
        by_split = result.setdefault(str(roots[s.source]), {})
        by_label = by_split.setdefault(s.split, {})
        by_label[s.label] = by_label.get(s.label, 0) + 1
    return result


def _limit_per_class(samples: list[Sample], limit: int, seed: int) -> list[Sample]:
    """At most ``limit`` samples of each label from each source and split (quick runs and tests)."""
    rng = np.random.default_rng(seed)
    kept = []
    for key in sorted({(s.source, s.split, s.label) for s in samples}):
        members = [s for s in samples if (s.source, s.split, s.label) == key]
        index = rng.permutation(len(members))[:limit]
        kept += [members[i] for i in sorted(index)]
    return kept
