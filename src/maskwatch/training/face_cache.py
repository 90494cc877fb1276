"""Cut the training face crops once, keyed by file hash, so later runs skip decoding and detection.

Every image, whatever its format or size, goes through the same path as at
inference: decode -> YuNet -> the square crop of ``maskwatch.crops``. The
largest face above the detector threshold is the sample's face; when there is
none, the best face down to the fallback score (when one is set), else the
whole image, which is counted. A scene sample comes with its annotated box,
which is cropped as it is (no detector run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from maskwatch.crops import DEFAULT_MARGIN, face_crop, whole_image_box
from maskwatch.faces import YuNetDetector
from maskwatch.faces.yunet import DEFAULT_SCORE_THRESHOLD
from maskwatch.images import ImageError, load_image
from maskwatch.model_files import cache_dir as cache_root
from maskwatch.model_files import sha256_of
from maskwatch.training.data import Sample, deal_split, dhash, scan_dataset

# Detections down to this score are stored, so that thresholds can be studied later without re-running.
STORE_THRESHOLD = 0.1
# Crops are cached larger than any model input, then resized for the chosen backbone.
CACHE_CROP_SIZE = 160


@dataclass
class CropRecord:
    sha256: str
    width: int
    height: int
    detections: list[list[float]]  # [x1, y1, x2, y2, score] for every face down to STORE_THRESHOLD
    used_box: list[float] | None  # the box that was cropped; None when decoding failed
    whole_image: bool  # True when no face passed the threshold (nor the fallback score, when one is set)
    error: str | None = None
    fallback: bool = False  # True when the box is the likeliest face under the threshold (``face_fallback``)


def check_fallback(fallback: float, threshold: float) -> None:
    """A fallback face score is 0 (off), or at least the lowest score stored and under the face threshold."""
    if fallback and not STORE_THRESHOLD <= fallback < threshold:
        raise ValueError(f"a fallback face score must be 0 (off), or from {STORE_THRESHOLD:g} up to (not "
                         f"including) the face threshold {threshold:g}, not {fallback:g}")


class FaceCropCache:
    """Crops and detections for each image hash in ``folder`` (PNG crops plus one JSON line each)."""

    def __init__(self, folder: Path, detector: YuNetDetector, margin: float, threshold: float,
                 fallback: float = 0.0) -> None:
        check_fallback(fallback, threshold)
        # Keyed by the face model too: another detector finds other boxes, so its crops are other crops.
        model = sha256_of(detector.model_path)[:8]
        rule = f"t{threshold:g}" + (f"-b{fallback:g}" if fallback else "")
        self.folder = Path(folder) / f"crops-m{margin:g}-{rule}-s{CACHE_CROP_SIZE}-f{model}"
        self.threshold = threshold
        self.fallback = fallback
        self.folder.mkdir(parents=True, exist_ok=True)
        self.detector = detector
        self.margin = margin
        self.index_path = self.folder / "index.jsonl"
        self.records: dict[str, CropRecord] = {}
        self._decoded: tuple[Path, np.ndarray | ImageError] | None = None  # a scene's faces decode it once
        if self.index_path.exists():
            for line in self.index_path.read_text().splitlines():
                record = CropRecord(**json.loads(line))
                self.records[record.sha256] = record

    def with_fallback(self, fallback: float) -> FaceCropCache:
        """The same cache's crops as another fallback face score cuts them (in their own folder)."""
        return FaceCropCache(self.folder.parent, self.detector, self.margin, self.threshold, fallback)

    def crop_path(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.png"

    def build(self, samples: list[Sample]) -> dict[str, CropRecord]:
        """Make sure every sample has a cached crop; returns the records by hash."""
        todo = [s for s in {s.sha256: s for s in samples}.values() if s.sha256 not in self.records]
        low = self.detector.score_threshold
        self.detector.score_threshold = STORE_THRESHOLD
        try:
            with open(self.index_path, "a") as index:
                for sample in tqdm(todo, desc="face crops", unit="img", disable=not todo):
                    record = self._crop_one(sample)
                    self.records[record.sha256] = record
                    index.write(json.dumps(record.__dict__) + "\n")
        finally:
            self.detector.score_threshold = low
        return self.records

    def load(self, sha256: str) -> np.ndarray:
        crop = cv2.imread(str(self.crop_path(sha256)), cv2.IMREAD_COLOR)
        if crop is None:
            raise FileNotFoundError(self.crop_path(sha256))
        return crop

    def crop_hash(self, sample: Sample) -> int:
        """The difference hash of the sample's crop, by which near-copies are found."""
        return dhash(self.load(sample.sha256))

    def _decode(self, path: Path) -> np.ndarray:
        if self._decoded is None or self._decoded[0] != path:
            try:
                self._decoded = (path, load_image(path))
            except ImageError as exc:
                self._decoded = (path, exc)
        image = self._decoded[1]
        if isinstance(image, ImageError):
            raise image
        return image

    def _crop_one(self, sample: Sample) -> CropRecord:
        try:
            image = self._decode(sample.path)
        except ImageError as exc:
            return CropRecord(sample.sha256, 0, 0, [], None, False, f"{sample.path}: {exc}")
        height, width = image.shape[:2]
        if sample.box is not None:
            try:
                crop = face_crop(image, sample.box, CACHE_CROP_SIZE, self.margin)
            except ValueError as exc:  # a box beyond the image (its XML gave no size to check it against)
                return CropRecord(sample.sha256, width, height, [], None, False, f"{sample.path}: {exc}")
            cv2.imwrite(str(self.crop_path(sample.sha256)), crop)
            return CropRecord(sample.sha256, width, height, [], list(sample.box), False)
        faces = self.detector.detect(image)
        detections = [[*map(float, f.box), float(f.score)] for f in faces]
        good = [f for f in faces if f.score >= self.threshold]
        weak = [f for f in faces if self.fallback and f.score >= self.fallback]
        # The largest good face; else (the photo holds a face: its folder says so) the likeliest weak one beats
        # the whole photo.
        face = max(good, key=lambda f: f.width * f.height) if good else max(weak, key=lambda f: f.score, default=None)
        if face is not None:
            box, margin, whole = list(face.box), self.margin, False
        else:
            box, margin, whole = list(whole_image_box(image)), 0.0, True
        crop = face_crop(image, box, CACHE_CROP_SIZE, margin)
        cv2.imwrite(str(self.crop_path(sample.sha256)), crop)
        return CropRecord(sample.sha256, width, height, detections, box, whole, fallback=bool(weak) and not good)


def split_portraits(root: str | Path, detector: YuNetDetector, folder: Path, seed: int = 0,
                    margin: float = DEFAULT_MARGIN) -> tuple[list[Sample], FaceCropCache]:
    """A class-per-folder set cut and split as the training command splits it (without ``--face-fallback``):
    one face per photo found by ``detector``, near-duplicate crops grouped, stratified 60/20/20 with ``seed``.

    The scene benchmark pastes faces of its test split, and detector training pastes faces of its train split,
    so no benchmark face is ever learnt.
    """
    samples, _ = scan_dataset(root)
    cache = FaceCropCache(folder, detector, margin, DEFAULT_SCORE_THRESHOLD)
    cache.build(samples)
    deal_split(samples, cache.crop_hash, seed=seed)
    return samples, cache


def found_face(cache: FaceCropCache, sample: Sample) -> bool:
    """Whether the sample's crop is a face the detector found (not the whole photo, not an unreadable file)."""
    record = cache.records[sample.sha256]
    return record.used_box is not None and not record.whole_image


def run_crop_cache(config: dict, cache_dir: str | Path | None = None,
                   face_model: str | Path | None = None) -> FaceCropCache:
    """A training run's own crop cache (its report's ``config``): same folder, face model, margin, threshold and
    fallback (none in a configuration from before it)."""
    folder = Path(cache_dir or config.get("cache_dir") or cache_root() / "train")
    detector = YuNetDetector(face_model or config.get("face_model"), score_threshold=config["face_threshold"],
                             extra_scales=())  # as training cut its crops
    return FaceCropCache(folder, detector, config["crop_margin"], config["face_threshold"],
                         config.get("face_fallback", 0.0))
