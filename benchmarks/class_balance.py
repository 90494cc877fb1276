"""What the class weighting does for the rare class (a mask below the nose), on the frozen-backbone head.

    python benchmarks/class_balance.py ../shared/datasets/face-mask ../shared/datasets/mask-scenes \
        --cache runs/cache [--views 4 --lr 3e-4 --dropout 0.2 --weight-decay 0.01 --seeds 3]

The same cached features (as ``maskwatch train`` makes them) feed one head per weighting and seed:
none, 1/sqrt(share) and 1/share. Each is scored on the validation faces of the scene sets (clean crops of
the annotated boxes), at the default cut (0.5 / 0.5) and at the operating point chosen on those faces
(macro F1, as training chooses it), and on the face-mask validation split; mean over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace

import numpy as np

from maskwatch.classifier.decision import OperatingPoint
from maskwatch.labels import INCORRECT_MASK, WITH_MASK
from maskwatch.training.objective import CLASS_BALANCE
from maskwatch.training.operating_point import balanced_accuracy, choose_operating_point, macro_f1
from maskwatch.training.train import TrainConfig, fit_head, predict, prepare, training_features


def incorrect_scores(y: np.ndarray, predicted: np.ndarray, k: int) -> tuple[float, float]:
    said, actual = predicted == k, y == k
    return (float((said & actual).sum() / actual.sum()) if actual.any() else float("nan"),
            float((said & actual).sum() / said.sum()) if said.any() else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--cache", required=True)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        config = TrainConfig(data_dir=args.data[0], extra_data=args.data[1:], out_dir=scratch, cache_dir=args.cache,
                             views=args.views, lr=args.lr, dropout=args.dropout, weight_decay=args.weight_decay)
        prep = prepare(config)
        x_train, y_train, x_val, y_val = training_features(prep)
        x_clean, y_clean = prep.features("val", ["clean"])
    labels = prep.labels
    k = labels.index(INCORRECT_MASK)
    scene = np.array([s.box is not None for s in prep.by_split["val"]])
    classes = range(len(labels))
    counts = np.bincount(y_train, minlength=len(labels))
    print("training views per class: " + ", ".join(f"{label} {n}" for label, n in zip(labels, counts, strict=True)))
    print(f"scene val faces {int(scene.sum())}, face-mask val images {int((~scene).sum())}; seeds 0..{args.seeds - 1}")
    header = (f"{'weights':>8} | {'scene bal.acc 0.5':>17} {'incorrect R/P':>13} | {'macro F1 chosen':>15} "
              f"{'bal.acc':>7} {'incorrect R/P':>13} {'masked R':>8} {'cut':>11} | {'face-mask val acc':>17}")
    print(header)
    for mode in CLASS_BALANCE:
        rows = []
        for seed in range(args.seeds):
            head, _ = fit_head(x_train, y_train, x_val, y_val, prep.feature_dim, len(labels),
                               replace(config, class_balance=mode, seed=seed))
            p = predict(head, x_clean)
            ps, ys = p[scene], y_clean[scene]
            default = OperatingPoint().indices(ps, labels)
            point, _ = choose_operating_point(ps, ys, labels)
            chosen = point.indices(ps, labels)
            portrait = OperatingPoint().indices(p[~scene], labels) == y_clean[~scene]
            masked = labels.index(WITH_MASK)
            rows.append([balanced_accuracy(ys, default, classes), *incorrect_scores(ys, default, k),
                         macro_f1(ys, chosen, classes), balanced_accuracy(ys, chosen, classes),
                         *incorrect_scores(ys, chosen, k), float((chosen[ys == masked] == masked).mean()),
                         point.mask_threshold, point.incorrect_threshold, float(portrait.mean())])
        m = [statistics.mean(col) for col in zip(*rows, strict=True)]
        print(f"{mode:>8} | {m[0]:17.3f} {m[1]:6.3f}/{m[2]:.3f} | {m[3]:15.3f} {m[4]:7.3f} {m[5]:6.3f}/{m[6]:.3f} "
              f"{m[7]:8.3f} {m[8]:5.3f}/{m[9]:.3f} | {m[10]:17.4f}", flush=True)


if __name__ == "__main__":
    main()
