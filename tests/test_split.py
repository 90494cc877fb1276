"""The train/val/test split: stratified 60/20/20, reproducible, and no duplicate on both sides."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import pytest
from conftest import DATASET

from maskwatch.training.data import Sample, read_split, split_samples, write_split


def manifest_samples(manifest: list[dict[str, str]]) -> list[Sample]:
    return [Sample(path=DATASET / row["file"], label=row["label"], sha256=row["sha256"], group=row["sha256"])
            for row in manifest]


def test_split_is_stratified_60_20_20(manifest: list[dict[str, str]]) -> None:
    samples = split_samples(manifest_samples(manifest), seed=0)
    for label in ("with_mask", "without_mask"):
        counts = Counter(s.split for s in samples if s.label == label)
        total = sum(counts.values())
        assert abs(counts["train"] / total - 0.6) < 0.01
        assert abs(counts["val"] / total - 0.2) < 0.01
        assert abs(counts["test"] / total - 0.2) < 0.01


def test_split_is_deterministic_and_seeded(manifest: list[dict[str, str]]) -> None:
    first = {s.path: s.split for s in split_samples(manifest_samples(manifest), seed=0)}
    again = {s.path: s.split for s in split_samples(list(reversed(manifest_samples(manifest))), seed=0)}
    other = {s.path: s.split for s in split_samples(manifest_samples(manifest), seed=1)}
    assert first == again  # input order does not matter
    assert first != other


def test_byte_identical_duplicates_share_a_split(manifest: list[dict[str, str]]) -> None:
    samples = split_samples(manifest_samples(manifest), seed=0)
    splits_by_hash: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        splits_by_hash[s.sha256].add(s.split)
    duplicated = [h for h, n in Counter(s.sha256 for s in samples).items() if n > 1]
    assert len(duplicated) == 86  # the data set's README: 86 groups of byte-identical files
    assert all(len(splits_by_hash[h]) == 1 for h in duplicated)


def test_split_file_round_trips(manifest: list[dict[str, str]], tmp_path: Path) -> None:
    samples = split_samples(manifest_samples(manifest)[:50], seed=0)
    write_split(samples, [DATASET], tmp_path / "split.csv")
    loaded = read_split(tmp_path / "split.csv", [DATASET])
    assert sorted((s.path, s.split, s.label) for s in loaded) == sorted((s.path, s.split, s.label) for s in samples)


@pytest.mark.parametrize("seed", [0, 3])
def test_group_never_straddles(seed: int) -> None:
    samples = [Sample(Path(f"{i}.jpg"), "a" if i % 2 else "b", f"h{i}", group=f"g{i // 7}") for i in range(200)]
    split_samples(samples, seed=seed)
    by_group: dict[str, set[str]] = defaultdict(set)
    for s in samples:
        by_group[s.group].add(s.split)
    assert all(len(v) == 1 for v in by_group.values())


def test_near_duplicates_are_grouped_and_strangers_are_not() -> None:
    import cv2

    from maskwatch.images import load_image
    from maskwatch.training.data import dhash, near_duplicate_groups

    original = load_image(DATASET / "with_mask" / "with_mask_0003.jpg")
    smaller = cv2.resize(original, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    _, encoded = cv2.imencode(".jpg", smaller, [cv2.IMWRITE_JPEG_QUALITY, 40])
    recoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    stranger = load_image(DATASET / "without_mask" / "without_mask_0003.jpg")
    groups = near_duplicate_groups({"a": dhash(original), "b": dhash(recoded), "c": dhash(stranger)})
    assert groups["a"] == groups["b"] != groups["c"]
