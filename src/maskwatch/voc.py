"""PASCAL VOC face annotations: the format of the public face-mask scene sets, read for training and evaluation.

One XML file per image, ``<object><name>with_mask</name><bndbox><xmin>..`` per face, either beside the
images or in an ``annotations/`` folder next to an ``images/`` folder. A set may carry a ``manifest.csv``
with a fixed ``split`` column (``mask-scenes`` does): training and evaluation both honour it.
"""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from maskwatch.images import IMAGE_SUFFIXES

MANIFEST = "manifest.csv"


def read_voc(path: Path) -> tuple[str, list[tuple[str, tuple[float, float, float, float], bool]]]:
    """The image file name and (class, box, difficult) objects of one VOC XML file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{path}: not a readable VOC XML file ({exc})") from None
    width, height = (_number(root.findtext(f"size/{k}")) for k in ("width", "height"))
    objects = []
    for obj in root.iter("object"):
        bndbox = obj.find("bndbox")
        if bndbox is None:
            continue
        x1, y1, x2, y2 = (float(bndbox.findtext(k, "nan")) for k in ("xmin", "ymin", "xmax", "ymax"))
        box = (x1, y1, x2, y2)
        if not all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"{path}: bad box {box}")
        if width and height and (box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height):
            raise ValueError(f"{path}: box {box} lies wholly outside the {width:g}x{height:g} image")
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append(((obj.findtext("name") or "").strip(), box, difficult))
    return (root.findtext("filename") or "").strip(), objects


def _number(text: str | None) -> float:
    """A VOC size field as a number; 0 when it is missing or not a positive number (then nothing is checked)."""
    try:
        value = float(text or 0)
    except ValueError:
        return 0.0
    return value if np.isfinite(value) and value > 0 else 0.0


def manifest_splits(root: Path) -> dict[str, str]:
    """The split of each annotation file (relative to ``root``) from the set's ``manifest.csv``; {} without one.

    The manifest has a ``split`` column and an ``annotation`` (or ``file``) column, as mask-scenes has.
    """
    return manifest_column(root, "split")


def manifest_sources(root: Path) -> dict[str, str]:
    """Where each annotation file came from (the manifest's ``source_repo`` column); {} without one.

    Sources annotate faces in their own box style (mask-scenes: two of its three draw boxes about a quarter
    taller than the third), which detector training aligns (``maskwatch.training.detector.box_style``).
    """
    return manifest_column(root, "source_repo")


def manifest_column(root: Path, column: str) -> dict[str, str]:
    """``column`` of the set's ``manifest.csv`` for each annotation file (relative to ``root``, ``.xml``).

    {} when there is no manifest or it lacks the column.
    """
    manifest = root / MANIFEST
    if not manifest.is_file():
        return {}
    with open(manifest, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or column not in rows[0]:
        return {}
    key = "annotation" if "annotation" in rows[0] else "file"
    return {Path(row[key]).with_suffix(".xml").as_posix(): row[column] for row in rows}


def split_members(root: Path, split: str) -> set[str]:
    """The annotation files (relative to ``root``) that the set's manifest puts in ``split``."""
    splits = manifest_splits(root)
    if not splits:
        raise ValueError(f"a split needs {root / MANIFEST} with 'split' and 'annotation' columns")
    if split not in set(splits.values()):
        raise ValueError(f"split {split!r} is not in {root / MANIFEST}; it has {sorted(set(splits.values()))}")
    return {name for name, value in splits.items() if value == split}


def find_scenes(root: Path, split: str | None = None) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(image, annotation) pairs under ``root``, and the annotation files whose image was not found.

    With ``split``, only the annotations that the set's ``manifest.csv`` puts in that split.
    """
    pairs, lost = [], []
    members = split_members(root, split) if split else None
    for xml in sorted(root.rglob("*.xml")):
        if members is not None and xml.relative_to(root).as_posix() not in members:
            continue
        filename, _ = read_voc(xml)
        image = _image_for(xml, filename)
        if image is None:
            lost.append(str(xml.relative_to(root)))
        else:
            pairs.append((image, xml))
    return pairs, lost


def _image_for(xml: Path, filename: str) -> Path | None:
    """The image an annotation describes: its <filename>, else the same stem, beside it or in ../images/."""
    folders = [xml.parent, xml.parent.parent / "images"]
    for folder in folders:
        if filename and (folder / filename).is_file():
            return folder / filename
        for suffix in sorted(IMAGE_SUFFIXES):
            for candidate in (folder / (xml.stem + suffix), folder / (xml.stem + suffix.upper())):
                if candidate.is_file():
                    return candidate
    return None


