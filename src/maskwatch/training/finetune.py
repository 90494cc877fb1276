"""Phase 2 of training: unfreeze the top of the backbone and train it with the head, end to end.

The paper froze its backbone, and phase 1 does the same (a head on cached frozen
features). This phase starts from that head, makes the top ``unfreeze`` blocks of
the backbone (or ``"all"``) trainable, and trains on fresh augmented views every
epoch -- no feature cache can help once the backbone changes -- with early stopping
on the same validation views as phase 1, so the two phases' losses compare.

Choices, and why:
- Batch-norm statistics stay frozen (the backbone runs in eval mode), as Keras'
  fine-tuning guide advises: batches of 32 would spoil ImageNet's statistics.
- The learning rate is well below the head's: large steps would wipe out the
  pretrained features that make 2,500 images enough.
- Tensors and weights are channels-last: on this CPU that roughly halves a step
  (``benchmarks/train_speed.py`` measures it).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from maskwatch.classifier.onnx_classifier import normalise
from maskwatch.training.backbones import backbone_spec, create_backbone
from maskwatch.training.config import Prepared, TrainConfig
from maskwatch.training.data import read_run_report
from maskwatch.training.features import to_channels_last, torch_features
from maskwatch.training.model import feature_module, freeze
from maskwatch.training.objective import VALIDATION_KINDS, class_weights, make_loss, output_activation

BATCH = 32
# A fresh random view of every training image each epoch; these view numbers are not used by phase 1's views.
FIRST_VIEW = 100


def parse_unfreeze(text: str) -> str:
    """"0" (frozen), a number of top blocks, or "all"; raises ValueError otherwise."""
    text = text.strip().lower()
    if text == "all" or (text.isdigit() and int(text) >= 0):
        return str(int(text)) if text.isdigit() else text
    raise ValueError(f"unfreeze takes a number of top blocks or 'all', not {text!r}")


def unfreeze_description(unfreeze: str) -> str:
    return "whole backbone" if unfreeze == "all" else f"top {unfreeze} blocks"


def set_trainable(module: nn.Module, unfreeze: str) -> int:
    """Freeze ``module``, then make its top ``unfreeze`` blocks trainable; returns the trainable parameter count."""
    freeze(module)
    backbone = getattr(module, "backbone", module)  # the paper head's SpatialFeatures wraps the backbone
    blocks: list[nn.Module] = backbone.blocks()  # type: ignore[operator]  # every registered backbone has blocks()
    chosen = blocks if unfreeze == "all" else blocks[len(blocks) - int(unfreeze):]
    for block in chosen:
        for parameter in block.parameters():
            parameter.requires_grad = True
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


@dataclass
class Finetuned:
    module: nn.Module  # the fine-tuned feature module (frozen again, in eval mode)
    head: nn.Module
    history: list[dict]
    summary: dict  # what the report records about this phase


def finetune(prep: Prepared, head: nn.Module, config: TrainConfig, first_epoch: int = 1) -> Finetuned:
    """Train the top of the backbone with a copy of ``head``, keeping the weights of the best validation loss.

    That may be the start -- phase 1's head on the pretrained backbone -- when no epoch improves on it;
    the summary's ``improved`` says whether phase 2 changed anything.
    """
    spec = backbone_spec(config.backbone)
    module = feature_module(
        create_backbone(spec.name, pretrained=True, input_size=prep.size, weights_path=config.backbone_weights),
        config.head,
    )
    head = copy.deepcopy(head)
    if config.init_from:
        load_run_weights(Path(config.init_from), module, head, prep.labels)
    trainable = set_trainable(module, config.unfreeze)
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs miss memory_format
    parameters = [p for p in module.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.finetune_lr, weight_decay=config.weight_decay)
    _, y_train = prep.items("train", ["clean"])
    loss_fn = make_loss(output_activation(config), len(prep.labels),
                        class_weights(y_train, len(prep.labels), config.class_balance))
    val_kinds = VALIDATION_KINDS
    val_names, y_val = prep.items("val", val_kinds)
    yv = torch.from_numpy(y_val).long()
    by_epoch = []  # validation accuracy of each view (clean, 16 px...) after each epoch: does it help small faces?

    def validate() -> tuple[float, float]:
        head.eval()
        with torch.no_grad():
            logits = head(torch.from_numpy(torch_features(module, spec, val_names, prep.view)))
        loss, right = float(loss_fn(logits, yv)), (logits.argmax(1) == yv).float()
        by_view = dict(zip(val_kinds, right.reshape(len(val_kinds), -1).mean(1).tolist(), strict=True))
        by_epoch.append({"val_loss": loss, "val_accuracy_by_view": by_view})
        print("  validation accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in by_view.items()), flush=True)
        return loss, float(right.mean())

    start_loss, start_accuracy = validate()
    print(f"fine-tune ({unfreeze_description(config.unfreeze)}, {trainable:,} trainable parameters): "
          f"start val loss {start_loss:.4f}, val accuracy {start_accuracy:.4f}", flush=True)
    best_loss, best_state = start_loss, _state(module, head)
    history: list[dict] = []
    waited, began, names = 0, time.time(), list[str]()
    rng = np.random.default_rng(config.seed)
    for epoch in range(config.finetune_epochs):
        started = time.time()
        names, y = _epoch_items(prep, config, epoch, rng)
        train_loss = train_epoch(module, head, optimizer, loss_fn, names, y, prep, spec, epoch)
        val_loss, val_accuracy = validate()
        history.append({"epoch": first_epoch + epoch, "phase": 2, "train_loss": train_loss, "val_loss": val_loss,
                        "val_accuracy": val_accuracy, "seconds": round(time.time() - started, 1)})
        print(f"fine-tune epoch {epoch + 1}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
              f"val accuracy {val_accuracy:.4f} ({history[-1]['seconds']} s)", flush=True)
        if val_loss < best_loss - 1e-5:
            best_loss, waited = val_loss, 0
            best_state = _state(module, head)
        else:
            waited += 1
            if waited >= config.finetune_patience:
                break
    module.load_state_dict(best_state[0])
    head.load_state_dict(best_state[1])
    freeze(module)
    head.eval()
    summary = {"unfreeze": config.unfreeze, "trainable_parameters": trainable, "lr": config.finetune_lr,
               "start_val_loss": start_loss, "start_val_accuracy": start_accuracy, "best_val_loss": best_loss,
               "improved": best_loss < start_loss, "epochs": len(history),
               "validation_by_epoch": by_epoch,  # the first entry is the start: phase 1's head, pretrained backbone
               "seconds": round(time.time() - began, 1), "images_per_epoch": len(names)}
    return Finetuned(module, head, history, summary)


def _epoch_items(prep: Prepared, config: TrainConfig, epoch: int, rng: np.random.Generator
                 ) -> tuple[list[str], np.ndarray]:
    """One fresh view of every training image, plus painted-mask views of bare faces at phase 1's rates."""
    names, y = prep.items("train", [f"v{FIRST_VIEW + epoch}"])
    for prefix, count in config.painted_view_counts.items():
        if count:
            painted, y_painted = prep.items("train", [f"{prefix}{FIRST_VIEW + epoch}"])
            keep = rng.random(len(painted)) < count / config.views
            names += [name for name, kept in zip(painted, keep, strict=True) if kept]
            y = np.concatenate([y, y_painted[keep]])
    return names, y


def train_epoch(module: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, names: list[str],
                 y: np.ndarray, prep: Prepared, spec, epoch: int) -> float:
    module.eval()  # frozen batch-norm statistics; gradients still flow through the unfrozen weights
    head.train()
    order = np.random.default_rng([prep.config.seed, epoch]).permutation(len(names))
    total = 0.0
    for start in tqdm(range(0, len(order), BATCH), desc=f"fine-tune epoch {epoch + 1}", unit="batch"):
        index = order[start:start + BATCH]
        batch = normalise([prep.view(names[i]) for i in index], np.array(spec.mean), np.array(spec.std), "RGB")
        optimizer.zero_grad()
        loss = loss_fn(head(module(to_channels_last(batch))), torch.from_numpy(y[index]).long())
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
    return total / len(order)


def load_run_weights(run: Path, module: nn.Module, head: nn.Module, labels: list[str]) -> None:
    """Load a finished run's fine-tuned backbone and head into ``module`` and ``head`` (phase 2 goes on from them).

    Only tensors are read (``weights_only``): a run folder from elsewhere cannot run code here.
    """
    report = read_run_report(run)
    if report["labels"] != labels:
        raise ValueError(f"--init-from {run}: its labels {report['labels']} are not this run's {labels}")
    state = run / "backbone.pt"
    if not state.is_file():
        raise ValueError(f"--init-from {run}: no backbone.pt (only runs with a fine-tuned backbone have one)")
    module.load_state_dict(torch.load(state, map_location="cpu", weights_only=True))
    head.load_state_dict(torch.load(run / "head.pt", map_location="cpu", weights_only=True))


def _state(module: nn.Module, head: nn.Module) -> tuple[dict, dict]:
    return ({k: v.clone() for k, v in module.state_dict().items()},
            {k: v.clone() for k, v in head.state_dict().items()})
