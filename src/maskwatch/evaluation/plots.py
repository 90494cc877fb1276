"""PNG figures for ``evaluation.md``, drawn with matplotlib's object API on the Agg canvas.

``Figure`` is used without ``pyplot``: no global state, no GUI backend, safe in threads
and inside a training process that has already chosen a backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _figure(width: float = 4.8, height: float = 4.0) -> Figure:
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, ax: Axes, path: Path, xlabel: str, ylabel: str, title: str, legend: str) -> Path:
    """Label a one-axis plot, add its legend, write it to ``path``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc=cast(Any, legend))  # matplotlib's stubs list the locations as literals
    figure.savefig(path)
    return path


def confusion_matrix(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    matrix = np.asarray(confusion)
    figure = _figure()
    ax = figure.subplots()
    ax.imshow(matrix, cmap="Blues", vmin=0)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = matrix.max() if matrix.size else 0
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", color="white" if count > peak / 2 else "black")
    ax.set_title("Test confusion matrix")
    figure.savefig(path)
    return path


def reliability(series: Sequence[tuple[str, dict]], path: Path) -> Path:
    """Accuracy against mean confidence per bin (marker area ~ images in the bin), one line per model.

    Points on the diagonal are perfectly calibrated; below it, the model is over-confident.
    """
    figure = _figure()
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    bins = 0
    for name, table in series:
        keep = [i for i, n in enumerate(table["count"]) if n]
        counts = np.array([table["count"][i] for i in keep])
        confidence = [table["confidence"][i] for i in keep]
        accuracy = [table["accuracy"][i] for i in keep]
        (line,) = ax.plot(confidence, accuracy, "-", linewidth=1, label=name)
        ax.scatter(confidence, accuracy, s=20 + 200 * counts / max(counts.sum(), 1), color=line.get_color(),
                   alpha=0.7)
        bins = len(table["count"])
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    return _save(figure, ax, path, "mean confidence in bin (top label)", "accuracy in bin",
                 f"Reliability, {bins} equal-width bins (test)", "upper left")


def roc(fpr: np.ndarray, tpr: np.ndarray, auc: float | None, positive: str, path: Path) -> Path:
    figure = _figure()
    ax = figure.subplots()
    ax.plot(fpr, tpr, drawstyle="default", label=f"AUC = {auc:.4f}" if auc is not None else "AUC undefined")
    ax.plot([0, 1], [0, 1], "k:", linewidth=1)
    return _save(figure, ax, path, "false positive rate", "true positive rate",
                 f"ROC, positive class {positive} (test)", "lower right")


def training_curves(history: list[dict[str, float]], path: Path) -> Path:
    epochs = [row["epoch"] for row in history]
    figure = _figure(8.0, 3.6)
    loss_ax, acc_ax = figure.subplots(1, 2)
    loss_ax.plot(epochs, [row["train_loss"] for row in history], label="train")
    loss_ax.plot(epochs, [row["val_loss"] for row in history], label="validation")
    best = int(epochs[int(np.argmin([row["val_loss"] for row in history]))])
    loss_ax.axvline(best, color="grey", linestyle=":", label=f"best epoch {best}")
    finetuned = [row["epoch"] for row in history if row.get("phase") == 2]
    if finetuned:  # phase 2 trains the backbone too: mark where it starts
        for ax in (loss_ax, acc_ax):
            ax.axvline(finetuned[0] - 0.5, color="tab:red", linestyle="--", label="fine-tuning starts")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.legend()
    acc_ax.plot(epochs, [row["val_accuracy"] for row in history], color="tab:green")
    acc_ax.axvline(best, color="grey", linestyle=":")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("validation accuracy")
    figure.savefig(path)
    return path


def accuracy_by_face_size(sizes: Sequence[str], accuracy: Sequence[float], clean: float, path: Path) -> Path:
    figure = _figure()
    ax = figure.subplots()
    ax.plot([int(s) for s in sizes], accuracy, "o-", label="face shrunk to this height")
    ax.axhline(clean, color="grey", linestyle="--", label=f"full-size crop ({clean:.3f})")
    ax.set_ylim(min([*accuracy, clean, 0.5]) - 0.02, 1.01)
    return _save(figure, ax, path, "face height (px)", "test accuracy", "Accuracy by face size (test)", "lower right")


def contact_sheet(tiles: Sequence[tuple[np.ndarray, Sequence[str]]], path: Path, tile: int = 128,
                  columns: int = 8) -> Path:
    """A grid of BGR crops, each with a few caption lines under it; written with OpenCV."""
    line_height, pad = 14, 4
    lines = max((len(caption) for _, caption in tiles), default=0)
    cell_w, cell_h = tile + 2 * pad, tile + 2 * pad + lines * line_height
    rows = max(1, -(-len(tiles) // columns))
    sheet = np.full((rows * cell_h, min(columns, max(1, len(tiles))) * cell_w, 3), 255, np.uint8)
    for i, (crop, caption) in enumerate(tiles):
        top, left = (i // columns) * cell_h + pad, (i % columns) * cell_w + pad
        sheet[top:top + tile, left:left + tile] = cv2.resize(crop, (tile, tile), interpolation=cv2.INTER_AREA)
        for j, text in enumerate(caption):
            y = top + tile + (j + 1) * line_height - 3
            cv2.putText(sheet, text, (left, y), cv2.FONT_HERSHEY_SIMPLEX, 0.36, (0, 0, 0), 1, cv2.LINE_AA)
    if not cv2.imwrite(str(path), sheet):
        raise OSError(f"could not write {path}")
    return path
