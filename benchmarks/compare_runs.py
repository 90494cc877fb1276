"""Training runs side by side, from the reports they wrote: one Markdown table, a column per run.

    python benchmarks/compare_runs.py runs/paint0 runs/paint2 runs/ft2 [--names frozen,painted,top2]

Reads each run's ``report.json`` and ``evaluation.json`` (``maskwatch train`` writes both).
Runs compare only on the same test split: the split fingerprint is the first row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def rows(report: dict, evaluation: dict) -> dict[str, object]:
    by_px = report.get("test_by_face_px", {})  # none for an average (maskwatch average)
    averaged = "averaged_from" in report  # maskwatch average: the config is its first run's, not its own
    out: dict[str, object] = {
        # An average of runs split apart has no single split fingerprint.
        "split fingerprint": report.get("metadata", {}).get("split_fingerprint"),
        "unfreeze": None if averaged else report["config"].get("unfreeze", "0"),
        "painted views": None if averaged else report["config"].get("painted_views", 0),
        "below-nose views": None if averaged else report["config"].get("below_nose_views", 0),
        "test accuracy": report["test"]["accuracy"],
        **{f"test accuracy, {px} px faces": by_px[px]["accuracy"] for px in by_px},
        "ROC AUC": evaluation["test"]["roc_auc"],
        "ECE": evaluation["test"]["ece"],
        "bare + hand, called bare": report.get("test_bare_with_hand_accuracy"),
        "bare + painted mask, called masked": report.get("test_bare_with_painted_mask_accuracy"),
        "bare + mask painted below the nose, called so": report.get("test_bare_with_mask_painted_below_nose_accuracy"),
    }
    for kind, scores in evaluation.get("test_masked_recall_by_appearance", {}).items():
        for view in ("clean", "16", "24"):
            name = "full size" if view == "clean" else f"{view} px"
            out[f"{kind} masks (n={scores['n']}), {name}: called masked"] = scores.get(view)
    finetune = report.get("finetune")
    if "model" in report:  # a training run (an average has no history of its own)
        out["best validation loss"] = min(h["val_loss"] for h in _history(report))
        out["training seconds (caches as they were)"] = round(report["seconds"])
    if finetune:
        out["fine-tuning seconds"] = round(finetune["seconds"])
    return out


def _history(report: dict) -> list[dict]:
    path = Path(report["model"]).parent / "history.csv"
    lines = path.read_text().splitlines()
    keys = lines[0].split(",")
    return [{k: float(v) for k, v in zip(keys, line.split(","), strict=True)} for line in lines[1:]]


def cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--names", help="column names, comma-separated (default: the folder names)")
    args = parser.parse_args()
    names = args.names.split(",") if args.names else [Path(run).name for run in args.runs]
    tables = [rows(json.loads((Path(run) / "report.json").read_text()),
                   json.loads((Path(run) / "evaluation.json").read_text())) for run in args.runs]
    keys = list(dict.fromkeys(key for table in tables for key in table))
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for key in keys:
        print(f"| {key} | " + " | ".join(cell(table.get(key)) for table in tables) + " |")


if __name__ == "__main__":
    main()
