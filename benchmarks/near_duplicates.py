"""Test accuracy with and without near-duplicate grouping: the same recipe, several head seeds.

    python benchmarks/near_duplicates.py [--seeds 5] [--data ../shared/datasets/face-mask]

Two splits of the same images, both stratified 60/20/20 with seed 0:
- grouped: byte-identical files and near-duplicate face crops (dHash within 4 bits) share a split
  (what ``maskwatch train`` does);
- plain: only byte-identical files are grouped (``maskwatch train --no-near-duplicates``).

For each, the frozen backbone's features (cached, as in training) feed a head trained
with the given settings from several seeds; the test accuracy is printed as mean,
standard deviation and range. On the plain split the test images with a near-copy
in train are also scored apart from the rest: that gap is the leakage.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from maskwatch.training.train import TrainConfig, fit_head, near_copies_in_train, predict, prepare, training_features

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets" / "face-mask"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--seeds", type=int, default=5, help="head seeds per split")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--painted-views", type=int, default=TrainConfig.painted_views)
    args = parser.parse_args()

    print(f"head: lr {args.lr}, dropout {args.dropout}, hidden {args.hidden}, weight decay {args.weight_decay}, "
          f"painted views {args.painted_views}; seeds 0..{args.seeds - 1}")
    print(f"{'split':>8} {'groups':>7} {'test':>5} {'mean acc':>9} {'sd':>7} {'min':>7} {'max':>7}  "
          "near-copy test images: n, accuracy (rest)")
    with tempfile.TemporaryDirectory() as scratch:
        for name, grouped in (("grouped", True), ("plain", False)):
            config = TrainConfig(data_dir=args.data, out_dir=str(Path(scratch) / name), lr=args.lr,
                                 dropout=args.dropout, hidden=args.hidden, weight_decay=args.weight_decay,
                                 painted_views=args.painted_views, near_duplicates=grouped)
            prep = prepare(config)
            x_train, y_train, x_val, y_val = training_features(prep)
            x_test, y_test = prep.features("test", ["clean"])
            leaked = near_copies_in_train(prep.samples, prep.hashes)
            is_leaked = np.array([s.sha256 in leaked for s in prep.by_split["test"]])
            accuracy, leaked_accuracy, rest_accuracy = [], [], []
            for seed in range(args.seeds):
                head, _ = fit_head(x_train, y_train, x_val, y_val, prep.feature_dim, len(prep.labels),
                                   replace(config, seed=seed))
                right = predict(head, x_test).argmax(1) == y_test
                accuracy.append(right.mean())
                rest_accuracy.append(right[~is_leaked].mean())
                if is_leaked.any():
                    leaked_accuracy.append(right[is_leaked].mean())
            leaks = (f"{int(is_leaked.sum())}, {statistics.mean(leaked_accuracy):.4f} "
                     f"({statistics.mean(rest_accuracy):.4f})" if leaked_accuracy else "0")
            print(f"{name:>8} {prep.counts['near_duplicate_groups']:>7} {len(y_test):>5} "
                  f"{statistics.mean(accuracy):9.4f} {statistics.stdev(accuracy) if len(accuracy) > 1 else 0:7.4f} "
                  f"{min(accuracy):7.4f} {max(accuracy):7.4f}  {leaks}", flush=True)


if __name__ == "__main__":
    main()
