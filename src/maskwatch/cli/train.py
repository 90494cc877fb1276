"""``maskwatch train`` and ``maskwatch tune``: fine-tune a mask classifier, then write its evaluation."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from maskwatch.cli.common import non_negative_int, positive_float, positive_int, unfreeze_option


def add_command(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a mask classifier on class-per-folder images and VOC scene sets")
    add_train_options(train)
    train.set_defaults(func=cmd_train)
    tune = sub.add_parser("tune", help="search the head's hyperparameters on the validation split, then train")
    add_train_options(tune)
    tune.add_argument("--trials", type=int, default=12, help="trials to run (default 12)")
    # tune also chooses how deep to fine-tune (train keeps the paper's frozen backbone unless told otherwise):
    # it is the slow, thorough command.
    tune.set_defaults(unfreeze="0,2,all")
    tune.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from maskwatch.model_files import ModelFileError

    try:
        from maskwatch.training.train import TrainConfig, train
        from maskwatch.training.tune import tune
    except ImportError as exc:
        print(f"maskwatch: training needs the train extra (pip install -e '.[train]'): {exc}", file=sys.stderr)
        return 2

    if problem := run_folder_problem(Path(args.out)):  # before any data is read
        print(f"maskwatch: {problem}", file=sys.stderr)
        return 2
    if args.preset == "paper":
        # The paper: Keras ResNet50V2 (ImageNet, frozen) at 224 px, Flatten -> Dense(1024) -> Dropout -> Dense(2).
        # Its output is a sigmoid per class, as the paper had.
        args.backbone, args.head, args.input_size, args.hidden, args.dropout = "resnet50v2", "paper", 224, 1024, 0.5
        args.views = min(args.views, 2)  # each view is a 100,352-value feature map: bound the cache
    try:
        config = TrainConfig(
            data_dir=args.data_dir[0], extra_data=args.data_dir[1:], class_balance=args.class_balance,
            out_dir=args.out, backbone=args.backbone, input_size=args.input_size,
            seed=args.seed, split_seed=args.split_seed, split_from=args.split_from,
            views=args.views, hidden=args.hidden, dropout=args.dropout,
            lr=args.lr, weight_decay=args.weight_decay, patience=args.patience, face_model=args.face_model,
            face_fallback=args.face_fallback,
            cache_dir=args.cache, limit=args.limit, near_duplicates=args.near_duplicates, occlusion=args.occlusion,
            painted_views=args.painted_views, below_nose_views=args.below_nose_views, head=args.head,
            backbone_weights=args.backbone_weights,
            unfreeze=args.unfreeze, finetune_lr=args.finetune_lr, finetune_epochs=args.finetune_epochs,
            init_from=args.init_from,
        )
    except ValueError as exc:  # settings that contradict each other: said before any data is read
        print(f"maskwatch: {exc}", file=sys.stderr)
        return 2
    if args.command == "train" and "," in args.unfreeze:
        print("maskwatch: train takes one --unfreeze value; tune takes a list", file=sys.stderr)
        return 2
    try:
        report = tune(config, trials=args.trials, seed=args.seed) if args.command == "tune" else train(config)
    except (ValueError, ImportError, ModelFileError) as exc:  # unknown backbone, missing weights package or file
        print(f"maskwatch: {exc}", file=sys.stderr)
        return 2
    test = report["test"]
    print(f"test accuracy {test['accuracy']:.4f} on {test['n']} images; "
          f"by face size: " + ", ".join(f"{px}px {r['accuracy']:.3f}" for px, r in report["test_by_face_px"].items()))
    # Plots, calibration and the contact sheet of mistakes beside the report: the command composes training
    # and evaluation, so neither library package imports the other.
    from maskwatch.evaluation.run_report import write_evaluation

    write_evaluation(args.out, cache_dir=config.cache_dir, face_model=config.face_model)
    print(f"model: {report['model']}  report: {Path(args.out) / 'report.json'}  evaluation: "
          f"{Path(args.out) / 'evaluation.md'}")
    return 0


# What a run folder holds once a run has started: a new run there would mix its files with the old one's, and a
# failed one would leave the old model beside a new split.
RUN_FILES = ("report.json", "split.csv", "mask_classifier.onnx")


def run_folder_problem(out: Path) -> str | None:
    """Why ``--out`` cannot take a new run, or None: it is a file, or it holds a run already."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file; give a folder for the run (it is created)"
    if held := [name for name in RUN_FILES if (out / name).exists()]:
        return f"--out {out} already holds a run ({', '.join(held)}): give a new folder, or remove it first"
    return None


def add_train_options(train: argparse.ArgumentParser) -> None:
    train.add_argument("data_dir", nargs="+", metavar="DATA",
                       help="data folders, trained on together: one sub-folder of images per class, or a VOC scene "
                            "set (images with .xml face boxes; its manifest.csv split is kept)")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="run folder for the model and reports")
    train.add_argument("--preset", choices=["paper"],
                       help="paper: the published ResNet50V2 + Flatten/Dense(1024) head (needs Keras' ImageNet file)")
    train.add_argument("--backbone", default="efficientnet_lite0",
                       help="ImageNet backbone from the registry: efficientnet_lite0 (default), efficientnet_lite1, "
                            "efficientnet_lite2 (each needs its weights package), resnet50v2")
    train.add_argument("--backbone-weights", metavar="PATH",
                       help="pretrained weights file for the backbone (resnet50v2: Keras' notop .h5)")
    train.add_argument("--head", default="gap", choices=["gap", "paper"],
                       help="gap: pooled features -> Dense -> Dropout -> Dense (default); paper: Flatten head")
    train.add_argument("--input-size", type=int, default=0, help="crop size (default: the backbone's)")
    train.add_argument("--seed", type=int, default=0,
                       help="initialisation, augmentation and order (tune: its trials too); the split too, "
                            "unless --split-seed")
    train.add_argument("--split-seed", type=int, default=None,
                       help="the split's own seed (default: --seed): train again with another --seed on the same "
                            "split, e.g. for `maskwatch average`")
    train.add_argument("--split-from", metavar="SPLIT_CSV",
                       help="keep another run's split (its split.csv) instead of dealing one: to compare recipes "
                            "that cut other crops (--face-fallback, --face-model) on the same test photos")
    train.add_argument("--views", type=int, default=8, help="augmented views per training image")
    train.add_argument("--hidden", type=int, default=256)
    train.add_argument("--dropout", type=float, default=0.3)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--patience", type=int, default=20, help="early-stopping patience in epochs")
    train.add_argument("--face-model", metavar="PATH")
    train.add_argument("--face-fallback", type=float, default=0.0, metavar="SCORE",
                       help="a class-per-folder photo with no face at the face threshold (0.5): crop its likeliest "
                            "face scoring at least SCORE (from 0.1, under the threshold) instead of the whole "
                            "photo (default 0: the whole photo)")
    train.add_argument("--cache", metavar="DIR", help="crop and feature cache (default: the user cache)")
    train.add_argument("--limit", type=int, default=0, help="use at most N images per class")
    train.add_argument("--no-near-duplicates", dest="near_duplicates", action="store_false",
                       help="group only byte-identical files, not near-duplicate crops, into one split")
    train.add_argument("--no-occlusion", dest="occlusion", action="store_false",
                       help="no hands over bare mouths as hard negatives")
    train.add_argument("--unfreeze", default="0", type=unfreeze_option, metavar="N|all",
                       help="phase 2: fine-tune the top N blocks of the backbone (or all) with the head, end to end; "
                            "0 keeps it frozen as the paper did (train's default). tune takes a list and chooses "
                            "on validation loss (tune's default: 0,2,all)")
    train.add_argument("--finetune-lr", type=positive_float, default=1e-5, help="phase 2 learning rate (default 1e-5)")
    train.add_argument("--finetune-epochs", type=positive_int, default=8, help="phase 2 epochs at most")
    train.add_argument("--init-from", metavar="RUN_DIR",
                       help="phase 2 starts from this run's fine-tuned backbone and head (backbone.pt, head.pt) "
                            "instead of ImageNet: go on training a model")
    train.add_argument("--class-balance", choices=["none", "sqrt", "inverse"], default="none",
                       help="loss weight per class from its share of the training faces: none (default: the "
                            "operating point handles rare classes), 1/sqrt(share) or 1/share")
    train.add_argument("--painted-views", type=non_negative_int, default=0, metavar="N",
                       help="views of each bare training face with a painted black, coloured or patterned mask, "
                            "labelled with_mask (default 0: measured, they did not help on real masks)")
    train.add_argument("--below-nose-views", type=non_negative_int, default=0, metavar="N",
                       help="views of each bare training face with a mask painted below the nose, labelled "
                            "incorrect_mask (needs a scene set with that class; default 0)")


