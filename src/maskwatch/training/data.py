"""Training data: class-per-folder sets and VOC scene sets, and a stratified, leakage-free train/val/test split.

A class-per-folder set gives one sample per image (its face is found by YuNet when the crops are cut); a
scene set gives one sample per annotated face box. Scene sets bring their own fixed split (``manifest.csv``);
class-per-folder sets are split 60/20/20 here with duplicates kept on one side.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from maskwatch.images import IMAGE_SUFFIXES
from maskwatch.labels import LABEL_ALIASES, LABELS, canonical_label

SPLITS = ("train", "val", "test")
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)  # the paper's 60/20/20


@dataclass
class Sample:
    """One training face: a whole image (class-per-folder sets) or one annotated box of a scene."""

    path: Path
    label: str
    # The item's key everywhere (crop cache, views, fingerprints): the file's sha256 for a whole image; for a
    # scene box, the sha256 of "<file sha256>:<box>" (one image holds many faces).
    sha256: str
    group: str = ""  # samples sharing a group always land in the same split
    split: str = ""
    box: tuple[float, float, float, float] | None = None  # the annotated face in a scene; None: find it with YuNet
    source: int = 0  # index of the data folder it came from (TrainConfig.data_dirs)

    def relative(self, root: Path) -> str:
        return self.path.relative_to(root).as_posix()


# Annotated faces lower than this are left out of training: a few pixels carry no mask to learn.
MIN_SCENE_FACE_PX = 8


def box_key(image_sha256: str, box: tuple[float, float, float, float]) -> str:
    return hashlib.sha256(f"{image_sha256}:{','.join(f'{v:g}' for v in box)}".encode()).hexdigest()


def is_scene_set(root: Path) -> bool:
    """A VOC scene set has .xml annotations (beside the images, or in ``annotations/``)."""
    return (root / "annotations").is_dir() or any(root.glob("*.xml"))


def scan_dataset(root: str | Path, source: int = 0) -> tuple[list[Sample], list[str]]:
    """Every image under ``root/<label>/`` with its sha256; labels are the sorted folder names."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) < 2:
        raise ValueError(f"{root} needs one folder per class (at least two), found {folders}")
    samples = []
    for folder in folders:
        label = known_label(folder, f"class folder {root / folder}")
        found = [path for path in sorted((root / folder).rglob("*")) if path.is_file()
                 and path.suffix.lower() in IMAGE_SUFFIXES
                 and not any(part.startswith(".") for part in path.relative_to(root).parts)]
        if not found:
            raise ValueError(f"class folder {root / folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for path in found:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            samples.append(Sample(path=path, label=label, sha256=digest, group=digest, source=source))
    labels = sorted({s.label for s in samples})
    if len(labels) < 2:
        raise ValueError(f"{root}: the class folders {folders} name fewer than two classes")
    return samples, labels


def known_label(name: str, where: str) -> str:
    """The maskwatch label of a data set's class name; a ValueError naming ``where`` for any other name, so a
    misspelt folder or VOC class never trains a class of its own."""
    label = canonical_label(name)
    if label not in LABELS:
        raise ValueError(f"{where}: unknown class {name!r}; use one of {', '.join(LABELS)} (or an alias: "
                         f"{', '.join(sorted(set(LABEL_ALIASES) - set(LABELS)))})")
    return label


def scan_scenes(root: str | Path, source: int = 0) -> tuple[list[Sample], list[str]]:
    """One sample per annotated face of a VOC scene set, labels mapped to maskwatch's (``labels.py``).

    The split comes from the set's ``manifest.csv`` (``split`` column) when it has one; the faces of one
    image share a group, so a set without a manifest is split image by image.
    """
    from maskwatch.voc import find_scenes, manifest_splits, read_voc

    root = Path(root)
    pairs, skipped = find_scenes(root)
    if skipped:
        logging.getLogger("maskwatch.training").warning(
            "%s: %d annotation file(s) without their image skipped, e.g. %s", root, len(skipped), skipped[0])
    if not pairs:
        raise ValueError(f"no VOC annotation (.xml) files with their images under {root}")
    splits = manifest_splits(root)
    samples = []
    for image, xml in pairs:
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        split = splits.get(xml.relative_to(root).as_posix(), "")
        for name, box, _difficult in read_voc(xml)[1]:
            if box[3] - box[1] < MIN_SCENE_FACE_PX:
                continue
            samples.append(Sample(path=image, label=known_label(name, str(xml)), sha256=box_key(digest, box),
                                  group=digest, split=split, box=box, source=source))
    return samples, sorted({s.label for s in samples})


def scan_sources(roots: Sequence[str | Path]) -> tuple[list[Sample], list[str]]:
    """Samples of every data folder (class-per-folder or VOC scenes), each tagged with its folder's index;
    the labels are the sorted union."""
    samples: list[Sample] = []
    labels: set[str] = set()
    for index, root in enumerate(roots):
        scan = scan_scenes if is_scene_set(Path(root)) else scan_dataset
        found, names = scan(root, source=index)
        samples += found
        labels.update(names)
    return samples, sorted(labels)


def split_samples(
    samples: list[Sample], seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> list[Sample]:
    """Assign ``sample.split`` per class so each split gets its fraction, whole groups at a time.

    Groups (byte-identical files by default; near-duplicates when grouped so) are
    shuffled with ``seed`` and dealt to whichever split is furthest below its target,
    so no image has a copy on the other side of the split.
    """
    rng = random.Random(seed)
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if not sample.split:  # a scene set's fixed split is kept
            groups[sample.group or sample.sha256].append(sample)
    # Stratify by the group's majority label; a group is never cut, even if its labels differ.
    by_label: dict[str, list[list[Sample]]] = defaultdict(list)
    for key in sorted(groups):
        members = groups[key]
        majority = max(sorted({s.label for s in members}), key=lambda lab: sum(s.label == lab for s in members))
        by_label[majority].append(members)
    for label in sorted(by_label):
        label_groups = by_label[label]
        rng.shuffle(label_groups)
        total = sum(len(g) for g in label_groups)
        targets = [f * total for f in fractions]
        counts = [0, 0, 0]
        for group in label_groups:
            chosen = max(range(3), key=lambda i: targets[i] - counts[i])
            counts[chosen] += len(group)
            for sample in group:
                sample.split = SPLITS[chosen]
    return samples


def write_split(samples: list[Sample], roots: list[Path], path: Path) -> None:
    """One row per sample: its file relative to its data folder (``source`` indexes the folders) and its box."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "sha256", "group", "split", "source", "box"])
        for s in sorted(samples, key=lambda s: (s.source, s.relative(roots[s.source]), s.sha256)):
            box = " ".join(f"{v:g}" for v in s.box) if s.box else ""
            writer.writerow([s.relative(roots[s.source]), s.label, s.sha256, s.group, s.split, s.source, box])


def read_split(path: Path, roots: list[Path]) -> list[Sample]:
    """The samples ``write_split`` wrote; files written before sources existed belong to ``roots[0]``."""
    samples = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            source = int(row.get("source") or 0)
            box_text = row.get("box") or ""
            box = tuple(float(v) for v in box_text.split()) if box_text else None
            samples.append(Sample(path=Path(roots[source]) / row["file"], label=row["label"], sha256=row["sha256"],
                                  group=row["group"], split=row["split"], box=box, source=source))  # type: ignore[arg-type]
    return samples


def apply_split_file(samples: list[Sample], path: str | Path) -> None:
    """Give each sample the split and group that a ``split.csv`` (another run's) gave it, to train another recipe
    (other crops, another face model) on the same photos. Every sample must be in the file."""
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            if missing_columns := {"sha256", "split", "group"} - set(reader.fieldnames or []):
                raise ValueError(f"{path} is not a run's split.csv: no column {', '.join(sorted(missing_columns))}")
            rows = {row["sha256"]: row for row in reader}
    except (OSError, KeyError, csv.Error) as exc:
        raise ValueError(f"cannot read the split file {path}: {exc}") from None
    missing = [s for s in samples if s.sha256 not in rows]
    if missing:
        raise ValueError(f"{len(missing)} samples are not in the split file {path}, e.g. {missing[0].path}")
    for sample in samples:
        row = rows[sample.sha256]
        sample.split, sample.group = row["split"], row["group"]


def deal_split(samples: list[Sample], crop_hash: Callable[[Sample], int], *, seed: int, near_duplicates: bool = True,
               split_from: str | Path | None = None) -> None:
    """How a training run splits its samples: as ``split_from`` (a split file) says, else near-copies grouped on
    their crops' ``crop_hash`` (a scene set brings its own split) and the groups dealt with ``seed``."""
    if split_from:
        apply_split_file(samples, split_from)
        return
    if near_duplicates:
        unsplit = [s for s in samples if not s.split]
        group_near_duplicates(unsplit, {s.sha256: crop_hash(s) for s in unsplit})
    split_samples(samples, seed=seed)


def fingerprint(samples: list[Sample], with_split: bool = False) -> str:
    """A short hash of the data (and, optionally, the split), stored with a model to trace it back."""
    return _fingerprint([(s.sha256, s.label, s.split) for s in samples], with_split)


def split_file_fingerprint(path: Path) -> tuple[str, dict[str, str]]:
    """The split fingerprint of a ``split.csv`` (as ``fingerprint(..., with_split=True)``) and its sha256 -> split."""
    with open(path, newline="") as handle:
        rows = [(row["sha256"], row["label"], row["split"]) for row in csv.DictReader(handle)]
    return _fingerprint(rows, with_split=True), {sha256: split for sha256, _, split in rows}


def _fingerprint(rows: list[tuple[str, str, str]], with_split: bool) -> str:
    digest = hashlib.sha256()
    for sha256, label, split in sorted(rows):
        digest.update(f"{sha256},{label}".encode())
        if with_split:
            digest.update(f",{split}".encode())
    return digest.hexdigest()[:16]


# Near-duplicates: the same photo resized, re-encoded or saved as "copy N". Grouping them keeps a
# near-copy of a test image out of training (at distance <= 4, about 48 test images of a plain split
# have one). 4 of 64 bits tolerates re-encoding and small crops, not different people.
NEAR_DUPLICATE_BITS = 4


def dhash(image: np.ndarray) -> int:
    """64-bit difference hash: is each pixel of a 9x8 grayscale thumbnail brighter than its right neighbour."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def near_duplicate_groups(hashes: dict[str, int], max_bits: int = NEAR_DUPLICATE_BITS) -> dict[str, str]:
    """Map each key to a group id: keys whose hashes differ in at most ``max_bits`` bits share one (transitively)."""
    keys = sorted(hashes)
    values = np.array([hashes[k] for k in keys], dtype=np.uint64)
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(keys)):
        differing = np.bitwise_xor(values[i + 1:], values[i])
        distance = np.unpackbits(differing.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        for j in np.nonzero(distance <= max_bits)[0]:
            a, b = root(i), root(i + 1 + int(j))
            if a != b:
                parent[max(a, b)] = min(a, b)
    return {key: keys[root(i)] for i, key in enumerate(keys)}


def group_near_duplicates(samples: list[Sample], hashes: dict[str, int]) -> None:
    """Give near-duplicate samples (by the dHash of their face crops) one ``group``, so they share a split."""
    groups = near_duplicate_groups(hashes)
    for sample in samples:
        sample.group = groups.get(sample.sha256, sample.sha256)


def read_run_report(run: Path) -> dict[str, Any]:
    """``run``/report.json, checked to be what `maskwatch train` writes (FileNotFoundError, ValueError)."""
    if not run.is_dir():
        raise FileNotFoundError(f"no such run folder: {run}")
    path = run / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run} is not a `maskwatch train` run folder (it has no report.json)")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a `maskwatch train` report (not JSON: {exc})") from None
    missing = [key for key in ("config", "labels") if not isinstance(report, dict) or key not in report]
    if missing:
        raise ValueError(f"{path} is not a `maskwatch train` report (no {' or '.join(missing)})")
    return report
