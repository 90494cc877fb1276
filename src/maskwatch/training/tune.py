"""``maskwatch tune``: choose the head's hyperparameters on the validation split, touch the test split once.

The backbone is frozen, so every trial reuses the same cached features and only
trains a head (seconds each): a search of 8+ trials costs little more than one run.
"""

from __future__ import annotations

import csv
import itertools
import random
from dataclasses import replace
from pathlib import Path

from maskwatch.training.train import TrainConfig, finish, fit_head, prepare, training_features

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
    write_table(rows, best_row["trial"], prep.out)
    # Only the chosen head ever sees the test split.
    return finish(prep, head, history, best_config, extra={"tune": {"trials": rows, "chosen": best_row["trial"]}})


def write_table(rows: list[dict], chosen: int, out: Path) -> None:
    with open(out / "tune.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in sorted(rows, key=lambda r: r["val_loss"]):
        mark = " **(chosen)**" if row["trial"] == chosen else ""
        lines.append("| " + " | ".join(str(row[c]) for c in columns) + mark + " |")
    (out / "tune.md").write_text(
        "# Hyperparameter search (chosen on validation loss; test split scored once, for the chosen trial)\n\n"
        + "\n".join(lines) + "\n"
    )
