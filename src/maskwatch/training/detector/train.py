"""Fine-tune YuNet on faces from real scenes (masked, bare, badly masked: all "face"), then export it.

Starts from the stock 2023mar weights and keeps what they know: a low learning rate with warm-up and cosine
decay, the first layers frozen, landmarks taught by the stock model where the data has none, and early
stopping on the validation loss of the set's own val split.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
from tqdm import tqdm

from maskwatch.faces.yunet import FACE_MODEL_FILE_NAME
from maskwatch.model_files import sha256_of
from maskwatch.training.detector.box_style import BoxStyle, align_box_styles, measure_box_styles, reference_source
from maskwatch.training.detector.data import (
    CROP_SIZE,
    DetectorSample,
    View,
    ViewStep,
    read_sample,
    scan_scene_boxes,
    training_view,
    validation_view,
)
from maskwatch.training.detector.loss import Target, detection_loss
from maskwatch.training.detector.pasted import DEFAULT_PASTE_PROBABILITY, PortraitFace, paste_faces, portrait_faces
from maskwatch.training.detector.yunet_net import YuNetNet

DETECTOR_FILE = FACE_MODEL_FILE_NAME
WARMUP_STEPS = 50
# With --ema, the average's decay ramps up over about this many steps (early steps move the weights most).
EMA_RAMP_STEPS = 200
# Stock faces at least this sure measure each source's box style.
STYLE_SCORE_THRESHOLD = 0.6


@dataclass
class DetectorConfig:
    data: list[str]  # VOC scene sets with a manifest split (e.g. ../shared/datasets/mask-scenes)
    out: str
    base_model: str  # the stock YuNet ONNX file to start from (and whose graph the export keeps)
    epochs: int = 16
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 5e-4
    freeze: int = 4  # the first N convolutions keep the stock weights (edges and blobs at full resolution)
    crop_size: int = CROP_SIZE
    patience: int = 5
    distill_landmarks: bool = True  # the stock model teaches landmarks where the data has none
    keep_stock_faces: bool = False  # and keeps unboxed faces it is sure of from being learnt as background
    distill: float = 0.0  # weight of keeping outputs near the stock model's where it sees a face
    align_boxes: bool = False  # move every source's training boxes into one box style (box_style.py; measured:
    # recall up on the reference source, down more on the others, as val keeps each source's style)
    paste_from: list[str] = field(default_factory=list)  # class-per-folder sets whose train-split faces are
    # pasted into views (pasted.py): small masked and bare faces the scene sets have few of
    paste_probability: float = DEFAULT_PASTE_PROBABILITY
    decoys: int = 0  # with pasted faces, up to this many face-free patches of the view pasted the same way
    ema: float = 0.0  # decay of an exponential moving average of the weights, which is validated and exported
    # (0: off, the last step's weights); it smooths the epoch-to-epoch swings of val AP
    train_split: str = "train"
    val_split: str = "val"
    limit: int | None = None  # use only the first N training and N/4 val images (tests, quick checks)
    seed: int = 0
    threads: int | None = None

    @property
    def val_limit(self) -> int | None:
        """With ``limit``, how many val images every val figure uses: a quarter as many."""
        return max(1, self.limit // 4) if self.limit else None


def _tensor(views: list[View]) -> torch.Tensor:
    batch = np.stack([v.image for v in views]).astype(np.float32)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def _targets(views: list[View]) -> list[Target]:
    targets = []
    for view in views:
        faces = torch.from_numpy(view.faces.reshape(-1, 4))
        targets.append(Target(faces, torch.zeros(len(faces), 5, 2), torch.zeros(len(faces)),
                              torch.from_numpy(view.ignore.reshape(-1, 4))))
    return targets


def _loss(net: YuNetNet, teacher: YuNetNet | None, views: list[View], keep_teacher_faces: bool = False,
          distill: float = 0.0) -> dict[str, torch.Tensor]:
    images = _tensor(views)
    outputs = net(images)
    teacher_outputs = None
    if teacher is not None:
        with torch.no_grad():
            teacher_outputs = teacher(images)
    return detection_loss(outputs, _targets(views), images.shape[2], images.shape[3], teacher_outputs,
                          keep_teacher_faces, distill)


@torch.no_grad()
def validation_loss(net: YuNetNet, teacher: YuNetNet | None, samples: list[DetectorSample],
                    keep_teacher_faces: bool = False, distill: float = 0.0) -> dict[str, float]:
    totals: dict[str, float] = {}
    for sample in samples:
        parts = _loss(net, teacher, [validation_view(sample)], keep_teacher_faces, distill)
        for name, value in parts.items():
            totals[name] = totals.get(name, 0.0) + float(value)
    mean = {name: value / max(1, len(samples)) for name, value in totals.items()}
    mean["total"] = sum(mean.values())
    return mean


def data_fingerprint(samples: list[DetectorSample]) -> str:
    digest = hashlib.sha256()
    for sample in sorted(samples, key=lambda s: (s.split, s.image.name)):
        digest.update(f"{sample.split}:{sample.image.name}:{np.round(sample.boxes, 1).tolist()}\n".encode())
    return digest.hexdigest()[:16]


def train_detector(config: DetectorConfig, progress: bool = True,
                   validate: Callable[[Path], float] | None = None) -> dict:
    """Fine-tune, keep the best epoch on val, export ``face_detector.onnx`` into ``config.out``.

    ``validate`` scores an exported model file (higher is better, e.g. face AP@0.5 on the val photos through
    cv2.FaceDetectorYN): when given, it picks the best epoch and stops early, instead of the val loss, whose
    objectness part swings with faces nobody boxed. The caller composes it (training does not import evaluation).
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    train, val = [], []
    for root in config.data:
        train += scan_scene_boxes(root, config.train_split)
        val += scan_scene_boxes(root, config.val_split)
    if config.limit:
        train, val = train[:config.limit], val[:config.val_limit]
    if not train or not val:
        raise ValueError(f"no annotated images in the {config.train_split!r} and {config.val_split!r} splits "
                         f"of {config.data}")
    styles: dict[str, BoxStyle] = {}
    reference = None
    if config.align_boxes:
        styles = measure_box_styles(train, _stock_boxes(config.base_model))
        reference = reference_source(styles)
        train = align_box_styles(train, styles, reference)
        for source, style in sorted(styles.items()):
            print(f"box style of {source}: {_style_text(style)}" + (" (the reference)" if source == reference
                                                                       else ""), file=sys.stderr)
    portraits: list[PortraitFace] = []
    for root in config.paste_from:
        portraits += portrait_faces(root, config.base_model)
    add = _paster(portraits, config.paste_probability, config.decoys) if portraits else None
    if config.paste_from:
        print(f"faces to paste: {len(portraits)} from {', '.join(config.paste_from)}", file=sys.stderr)
    net = YuNetNet.from_onnx(config.base_model)
    use_teacher = config.distill_landmarks or config.keep_stock_faces or config.distill > 0
    teacher = YuNetNet.from_onnx(config.base_model).eval() if use_teacher else None
    if teacher is not None:
        teacher.requires_grad_(False)
    frozen = list(net.convs.values())[:config.freeze]
    for conv in frozen:
        conv.requires_grad_(False)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs

    def rate(step: int) -> float:
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        return 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    average = _moving_average(net, config.ema) if config.ema > 0 else None
    # what is validated, kept and exported: the average when there is one (its module is a copy of net)
    kept = net if average is None else cast(YuNetNet, average.module)
    start = validation_loss(net, teacher, val, config.keep_stock_faces, config.distill)
    print(f"stock YuNet: val loss {start['total']:.4f} ({_parts(start)})", file=sys.stderr)
    probe = out / "epoch_model.onnx"

    def score(loss: dict[str, float]) -> float:
        if validate is None:
            return -loss["total"]
        kept.to_onnx(config.base_model, probe)
        return validate(probe)

    start_score = score(start)
    best_score, best_loss, best_state, best_epoch, waited = start_score, start["total"], _copy(net), 0, 0
    history = [{"epoch": 0, "train_loss": None, "val_score": start_score,
                **{f"val_{k}": v for k, v in start.items()}}]
    began = time.time()
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = rng.permutation(len(train))
        running, seen = 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"detector epoch {epoch}", unit="batch", disable=not progress,
                   file=sys.stderr)
        for step in bar:
            chosen = order[step * config.batch_size:(step + 1) * config.batch_size]
            views = [training_view(train, int(i), rng, config.crop_size, add) for i in chosen]
            parts = _loss(net, teacher, views, config.keep_stock_faces, config.distill)
            loss = torch.stack(list(parts.values())).sum()
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 10.0)
            optimizer.step()
            scheduler.step()
            if average is not None:
                average.update_parameters(net)
            running += loss.item() * len(chosen)
            seen += len(chosen)
            bar.set_postfix(loss=f"{running / seen:.3f}")
        net.eval()
        kept.eval()
        val_loss = validation_loss(kept, teacher, val, config.keep_stock_faces, config.distill)
        epoch_score = score(val_loss)
        history.append({"epoch": epoch, "train_loss": running / max(1, seen), "val_score": epoch_score,
                        **{f"val_{k}": v for k, v in val_loss.items()}})
        print(f"epoch {epoch}: train loss {running / max(1, seen):.4f}, val loss {val_loss['total']:.4f} "
              f"({_parts(val_loss)})" + (f", val score {epoch_score:.4f}" if validate else ""), file=sys.stderr)
        if epoch_score > best_score + 1e-4:
            best_score, best_loss, best_epoch, waited = epoch_score, val_loss["total"], epoch, 0
            best_state = _copy(kept)
        else:
            waited += 1
            if waited >= config.patience:
                print(f"early stop: no better val {'score' if validate else 'loss'} for {waited} epochs",
                      file=sys.stderr)
                break
    net.load_state_dict(best_state)
    probe.unlink(missing_ok=True)
    torch.save(best_state, out / "detector.pt")
    report = {
        "config": asdict(config), "train_images": len(train), "val_images": len(val),
        "train_faces": int(sum(len(s.boxes) for s in train)), "val_faces": int(sum(len(s.boxes) for s in val)),
        "data_fingerprint": data_fingerprint(train + val), "base_model_sha256": sha256_of(Path(config.base_model)),
        "start_val_loss": start["total"], "best_val_loss": best_loss, "best_epoch": best_epoch,
        "selected_by": "val score (face AP@0.5)" if validate else "val loss", "start_val_score": start_score,
        "best_val_score": best_score,
        "pasted_faces": _count_labels(portraits),
        "box_styles": {source: asdict(style) for source, style in styles.items()}, "box_style_reference": reference,
        "epochs_run": len(history) - 1, "train_seconds": round(time.time() - began, 1), "history": history,
    }
    net.to_onnx(config.base_model, out / DETECTOR_FILE, detector_metadata(report))
    (out / "detector_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def detector_metadata(report: dict, figures: dict | None = None) -> dict[str, str]:
    """What the exported file says about itself: where it came from, on what data, with what val figures."""
    config = report["config"]
    metadata = {
        "maskwatch.kind": "face_detector",
        "maskwatch.architecture": "yunet-2023mar",
        "maskwatch.base_model_sha256": report["base_model_sha256"],
        "maskwatch.data": json.dumps([Path(d).name for d in config["data"]]),
        "maskwatch.data_fingerprint": report["data_fingerprint"],
        "maskwatch.train_images": str(report["train_images"]),
        "maskwatch.val_loss": f"{report['best_val_loss']:.4f}",
        "maskwatch.start_val_loss": f"{report['start_val_loss']:.4f}",
        "maskwatch.best_epoch": str(report["best_epoch"]),
        "maskwatch.training": json.dumps({k: config[k] for k in ("epochs", "batch_size", "lr", "weight_decay",
                                                                  "freeze", "crop_size", "distill_landmarks",
                                                                  "keep_stock_faces", "distill",
                                                                  "align_boxes", "paste_probability", "ema",
                                                                  "decoys")
                                      if k in config}),
    }
    if report.get("pasted_faces"):
        metadata["maskwatch.pasted_faces"] = json.dumps({"from": [Path(d).name for d in config["paste_from"]],
                                                         "faces": report["pasted_faces"]})
    if report.get("box_style_reference"):
        metadata["maskwatch.box_style_reference"] = report["box_style_reference"]
    if figures is not None:
        metadata["maskwatch.val_figures"] = json.dumps(figures)
    return metadata


def _paster(portraits: list[PortraitFace], probability: float, decoys: int = 0) -> ViewStep:
    """Paste portrait faces into a share ``probability`` of the training views."""

    def add(view: View, rng: np.random.Generator) -> View:
        return paste_faces(view, portraits, rng, decoys) if rng.random() < probability else view

    return add


def _count_labels(portraits: list[PortraitFace]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for face in portraits:
        counts[face.label] = counts.get(face.label, 0) + 1
    return dict(sorted(counts.items()))


def _stock_boxes(base_model: str) -> Callable[[DetectorSample], np.ndarray]:
    """The boxes the stock model is sure of (one pass at the pipeline's scale): the ruler for box styles."""
    from maskwatch.faces.yunet import YuNetDetector

    detector = YuNetDetector(base_model, score_threshold=STYLE_SCORE_THRESHOLD, extra_scales=())

    def detect(sample: DetectorSample) -> np.ndarray:
        faces = detector.detect(read_sample(sample))
        return np.array([face.box for face in faces], np.float32).reshape(-1, 4)

    return detect


def _style_text(style: BoxStyle) -> str:
    return (f"the stock box is {style.sw:.2f} x the width, {style.sh:.2f} x the height, centre moved "
            f"{style.dx:+.2f} w, {style.dy:+.2f} h ({style.matches} faces)")


def _moving_average(net: YuNetNet, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``net``'s weights whose decay ramps up to ``decay`` (as in YOLOv5):
    the average follows the fast early steps, then smooths over about 1 / (1 - decay) steps."""

    def update(averaged: torch.Tensor, current: torch.Tensor, updates: torch.Tensor | int) -> torch.Tensor:
        keep = decay * (1 - math.exp(-float(updates) / EMA_RAMP_STEPS))
        return keep * averaged + (1 - keep) * current

    return torch.optim.swa_utils.AveragedModel(net, avg_fn=update, use_buffers=True)


def _copy(net: YuNetNet) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _parts(loss: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in loss.items() if k != "total")
