"""``maskwatch tune``: choose the head's hyperparameters on the validation split, touch the test split once.

Phase 1 freezes the backbone, so every trial reuses the same cached features and
only trains a head (seconds each): a search of 8+ trials costs little more than one
run. Phase 2 is optional (``--unfreeze 0,2,all``): the chosen head's backbone is
fine-tuned at each listed depth, and the depth with the lowest validation loss wins
-- "0", the frozen phase-1 model, competes too.
"""

from __future__ import annotations

import csv
import itertools
import random
from dataclasses import replace
from pathlib import Path

from torch import nn

from maskwatch.training.finetune import Finetuned, finetune
from maskwatch.training.train import Prepared, TrainConfig, finish, fit_head, prepare, training_features

SEARCH_SPACE: dict[str, tuple] = {
    "lr": (3e-4, 1e-3, 3e-3),
    "dropout": (0.2, 0.3, 0.5),
    "hidden": (128, 256, 512),
    "weight_decay": (1e-4, 1e-3, 1e-2),
}


def sample_trials(config: TrainConfig, trials: int, seed: int) -> list[dict]:
    """The given config first, then distinct random points of the grid."""
    keys = sorted(SEARCH_SPACE)
    grid = [dict(zip(keys, values, strict=True)) for values in itertools.product(*(SEARCH_SPACE[k] for k in keys))]
    first = {k: getattr(config, k) for k in keys}
    rest = [point for point in grid if point != first]
    random.Random(seed).shuffle(rest)
    return [first, *rest[: max(0, trials - 1)]]


def tune(config: TrainConfig, trials: int = 8, seed: int = 0) -> dict:
    prep = prepare(config)
    x_train, y_train, x_val, y_val = training_features(prep)
    rows, best = [], None
    for number, params in enumerate(sample_trials(config, trials, seed), start=1):
        trial = replace(config, **params)
        head, history = fit_head(x_train, y_train, x_val, y_val, prep.feature_dim, len(prep.labels), trial)
        best_epoch = min(history, key=lambda h: h["val_loss"])
        row = {"trial": number, **params, "epochs": len(history), "best_epoch": best_epoch["epoch"],
               "val_loss": round(best_epoch["val_loss"], 5), "val_accuracy": round(best_epoch["val_accuracy"], 5)}
        rows.append(row)
        if best is None or row["val_loss"] < best[0]["val_loss"]:
            best = (row, trial, head, history)
    assert best is not None
    best_row, best_config, head, history = best
    write_table(rows, "trial", best_row["trial"], prep.out / "tune", "Hyperparameter search (chosen on validation "
                "loss; test split scored once, for the chosen trial)")
    extra: dict = {"tune": {"trials": rows, "chosen": best_row["trial"]}}
    unfreeze, tuned = "0", None
    if config.unfreeze != "0":
        unfreeze, tuned, extra["unfreeze"] = choose_unfreeze(prep, head, history, best_config,
                                                             config.unfreeze.split(","))
    # Only the chosen model ever sees the test split.
    if tuned is None:
        return finish(prep, head, history, replace(best_config, unfreeze="0"), extra=extra)
    extra["finetune"] = tuned.summary
    return finish(prep, tuned.head, history + tuned.history, replace(best_config, unfreeze=unfreeze), extra=extra,
                  backbone=tuned.module)


def choose_unfreeze(prep: Prepared, head: nn.Module, history: list[dict], config: TrainConfig, candidates: list[str]
                    ) -> tuple[str, Finetuned | None, dict]:
    """Fine-tune the chosen head's backbone at each depth; the lowest validation loss wins ("0": phase 1 as is)."""
    phase1_loss = min(h["val_loss"] for h in history)
    rows, best_loss, chosen, tuned = [], phase1_loss, "0", None
    for unfreeze in candidates:
        if unfreeze == "0":
            rows.append({"unfreeze": "0", "trainable_parameters": sum(p.numel() for p in head.parameters()),
                         "epochs": 0, "best_epoch": 0, "seconds": 0, "val_loss": round(phase1_loss, 5),
                         "val_accuracy": round(min(history, key=lambda h: h["val_loss"])["val_accuracy"], 5)})
            continue
        result = finetune(prep, head, replace(config, unfreeze=unfreeze), first_epoch=len(history) + 1)
        summary = result.summary
        best_epoch = min(result.history, key=lambda h: h["val_loss"])
        rows.append({"unfreeze": unfreeze, "trainable_parameters": summary["trainable_parameters"],
                     "epochs": summary["epochs"], "best_epoch": best_epoch["epoch"] if summary["improved"] else 0,
                     "seconds": summary["seconds"], "val_loss": round(summary["best_val_loss"], 5),
                     "val_accuracy": round(best_epoch["val_accuracy"] if summary["improved"]
                                           else summary["start_val_accuracy"], 5)})
        if summary["improved"] and summary["best_val_loss"] < best_loss:
            best_loss, chosen, tuned = summary["best_val_loss"], unfreeze, result
    write_table(rows, "unfreeze", chosen, prep.out / "tune_unfreeze",
                "Phase 2: fine-tuning the top of the backbone (chosen on validation loss; 0 = frozen, phase 1)")
    return chosen, tuned, {"rows": rows, "chosen": chosen}


def write_table(rows: list[dict], key: str, chosen: object, stem: Path, title: str) -> None:
    """``stem``.csv and ``stem``.md, best validation loss first, the chosen row marked."""
    with open(stem.with_suffix(".csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in sorted(rows, key=lambda r: r["val_loss"]):
        mark = " **(chosen)**" if row[key] == chosen else ""
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + mark + " |")
    stem.with_suffix(".md").write_text(f"# {title}\n\n" + "\n".join(lines) + "\n")
