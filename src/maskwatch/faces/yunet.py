"""YuNet, OpenCV's small CNN face detector, through ``cv2.FaceDetectorYN``.

The whole use of the model fits in this file: pick a detection scale, run the
net, map boxes back, and merge the passes of a multi-scale run.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from maskwatch.cores import usable_cores
from maskwatch.faces.base import Face, register_detector
from maskwatch.faces.yunet_ort import OrtYuNet, runs_any_size
from maskwatch.model_files import ModelFile, ModelFileError, describe_load_error, resolve, sha256_of

YUNET = ModelFile(
    name="face_detection_yunet_2023mar.onnx",
    url=(
        "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
        "face_detection_yunet_2023mar.onnx"
    ),
    sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
    env_var="MASKWATCH_FACE_MODEL",
    url_env_var="MASKWATCH_FACE_MODEL_URL",
    option="--face-model",
)

# maskwatch's own YuNet: the stock weights fine-tuned on masked, bare and badly masked faces of real scenes
# (`maskwatch train-detector`; MODEL_CARD.md has the command and figures). Ships inside the package: the default.
SHIPPED_FACE_MODEL = Path(__file__).resolve().parent.parent / "models" / "face_detector.onnx"
# Its sha256, checked when it loads: a damaged install fails with a clear message, not with odd faces.
SHIPPED_FACE_MODEL_SHA256 = "3f371271ee0db6c3d0f5c39319b8ea1656c2250a3fea20462764aa4ea287d24f"
# `--face-model stock` (or Options(face_model="stock")): OpenCV Zoo's file above, from $MASKWATCH_FACE_MODEL,
# the cache or a verified download.
STOCK_MODEL_NAMES = ("stock", "yunet-2023mar")


def face_model_path(model: str | os.PathLike | None = None) -> Path:
    """The face model file: the shipped one by default, the stock YuNet for "stock", else the given path."""
    if model is None:
        if not SHIPPED_FACE_MODEL.is_file():
            raise ModelFileError(f"the packaged face model {SHIPPED_FACE_MODEL} is missing: reinstall maskwatch, "
                                 "or pass --face-model PATH (or 'stock')")
        if sha256_of(SHIPPED_FACE_MODEL) != SHIPPED_FACE_MODEL_SHA256:
            raise ModelFileError(f"the packaged face model {SHIPPED_FACE_MODEL} does not have its pinned sha256 "
                                 f"{SHIPPED_FACE_MODEL_SHA256}: reinstall maskwatch")
        return SHIPPED_FACE_MODEL
    if str(model) in STOCK_MODEL_NAMES:
        return resolve(YUNET)
    return resolve(YUNET, model)


# Chosen from `python benchmarks/face_threshold.py` (see README, "Face score threshold"):
# masked faces score far lower than bare ones, so OpenCV Zoo's 0.9 would miss most of them
# (15% found at 0.9, 91% at 0.5); below 0.5 false faces on face-free photos rise quickly.
DEFAULT_SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.3
# Images whose long side is shorter than this are enlarged before detection: YuNet misses
# faces under ~20 px, and crowd photos are often small.
MIN_LONG_SIDE = 640
MAX_UPSCALE = 4.0
# Larger images are shrunk to this long side, which bounds the cost per image.
MAX_LONG_SIDE = 1920
# The stock model's photo default: extra passes at 2x and 3x the base scale find small and masked faces that
# one pass misses (scene benchmark, faces of 24+ px: masked recall 0.67 -> 0.91). A model of ours says in its
# metadata which passes it needs (METADATA_EXTRA_SCALES); video uses one pass for speed.
STOCK_PHOTO_EXTRA_SCALES = (2.0, 3.0)
# Metadata keys of a face model trained here (`maskwatch train-detector`): the defaults chosen for it on val.
METADATA_SCORE_THRESHOLD = "maskwatch.score_threshold"
METADATA_EXTRA_SCALES = "maskwatch.photo_extra_scales"
# Each enlarged pass also runs on the mirrored image: YuNet finds some masked faces only one way round
# (scene benchmark, masked faces of 24+ px: recall 0.878 -> 0.901, at about twice the cost of a photo).
MIRRORED_LANDMARKS = [1, 0, 2, 4, 3]
# No pass is run on an image larger than this long side: it bounds the cost of the extra passes.
MAX_PASS_LONG_SIDE = 4096
# A 2x pass keeps only faces up to this height (px at the base scale), a 3x pass half of it: larger
# ones are found by the base pass, and what an enlarged pass finds at that size is mostly false
# (a hand, a mission badge: seen on held-out photos and on examples/astronaut.jpg).
EXTRA_PASS_MAX_FACE = 128
# Faces lower than this (px in the image) are dropped: too small to classify, and mostly texture.
MIN_FACE_PX = 12
# OpenCV's net keeps the buffers of the largest input it has run on for as long as it lives: after a 40 MP
# photo (passes up to 4096x2731) a worker thread held 690 MB more than before, for good. A thread whose
# pass was larger than this drops its net afterwards; creating a new one from the bytes takes about 4 ms.
KEEP_NET_MAX_PIXELS = 4_000_000


def detection_scale(width: int, height: int, min_long_side: int = MIN_LONG_SIDE,
                    max_long_side: int = MAX_LONG_SIDE) -> float:
    """The scale of a photo's first pass: small ones enlarged to ``min_long_side`` (at most 4x), large ones
    shrunk to ``max_long_side``. Detector training rescales its views around it."""
    long_side = max(width, height)
    if long_side < min_long_side:
        return min(min_long_side / long_side, MAX_UPSCALE)
    if long_side > max_long_side:
        return max_long_side / long_side
    return 1.0


@register_detector("yunet")
class YuNetDetector:
    """Face boxes, five landmarks and a score for every face YuNet finds.

    ``extra_scales`` adds passes at multiples of the base scale (e.g. ``(2.0,)``)
    whose boxes are merged with non-maximum suppression: slower, finds smaller faces.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        score_threshold: float | None = None,
        nms_threshold: float = NMS_THRESHOLD,
        min_long_side: int = MIN_LONG_SIDE,
        max_long_side: int = MAX_LONG_SIDE,
        extra_scales: tuple[float, ...] | None = None,
        mirror_extra_passes: bool = True,
        top_k: int = 5000,
        engine: str | None = None,
        threads: int | None = None,
    ) -> None:
        """``score_threshold`` and ``extra_scales`` default to what the model file's metadata says (chosen on
        val when it was trained), else to the stock model's DEFAULT_SCORE_THRESHOLD and STOCK_PHOTO_EXTRA_SCALES.

        ``engine``: "onnxruntime" (our decoding, the same rows, 1.5-2.5x as fast here) or "opencv"
        (``cv2.FaceDetectorYN``); by default onnxruntime when the file lets it (free input size: the models
        trained here), else OpenCV (the stock file). ``threads``: onnxruntime's, default the usable cores.
        """
        if engine not in (None, "onnxruntime", "opencv"):
            raise ValueError(f"unknown YuNet engine {engine!r}: 'onnxruntime' or 'opencv'")
        self.model_path = face_model_path(model_path)
        self._model_bytes = np.frombuffer(self.model_path.read_bytes(), np.uint8)
        # cv2.FaceDetectorYN keeps per-call state (input size): one instance per thread.
        self._local = threading.local()
        self.score_threshold = DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k
        ort_net = OrtYuNet.load(self._model_bytes.tobytes(), threads or usable_cores())
        self.metadata = ort_net.metadata() if ort_net is not None else {}
        if score_threshold is None:
            self.score_threshold = float(self.metadata.get(METADATA_SCORE_THRESHOLD, DEFAULT_SCORE_THRESHOLD))
        if extra_scales is None:
            stored = self.metadata.get(METADATA_EXTRA_SCALES)
            extra_scales = tuple(json.loads(stored)) if stored is not None else STOCK_PHOTO_EXTRA_SCALES
        self.min_long_side = min_long_side
        self.max_long_side = max_long_side
        self.extra_scales = tuple(extra_scales)
        self.mirror_extra_passes = mirror_extra_passes
        usable = ort_net is not None and runs_any_size(ort_net.session)
        self._ort = ort_net if usable and engine != "opencv" else None
        if self._ort is None:
            self._detector()  # a corrupt or foreign file fails here, at load time, not at the first photo
        if engine == "onnxruntime" and not usable:
            raise ModelFileError(f"{self.model_path} fixes its input size; onnxruntime needs a free one "
                                 "(use engine 'opencv', or a model exported by maskwatch train-detector)")

    @property
    def engine(self) -> str:
        """What runs the net: "onnxruntime" or "opencv"."""
        return "onnxruntime" if self._ort is not None else "opencv"

    def base_scale(self, width: int, height: int) -> float:
        return detection_scale(width, height, self.min_long_side, self.max_long_side)

    def pass_scales(self, width: int, height: int) -> list[float]:
        """The base scale, then each extra pass, clamped to MAX_PASS_LONG_SIDE and to MAX_UPSCALE.

        Enlarging more than 4x invents no detail: a thumbnail already enlarged to 640 px gets no extra pass.
        """
        base = self.base_scale(width, height)
        largest = min(MAX_PASS_LONG_SIDE / max(width, height), MAX_UPSCALE)
        scales = [base]
        for extra in self.extra_scales:
            scale = min(base * extra, largest)
            if scale > scales[-1] * 1.2:  # a pass barely larger than the last finds nothing new
                scales.append(scale)
        return scales

    def detect(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        scales = self.pass_scales(width, height)
        rows = [self._detect_at(image, scales[0])]
        for scale in scales[1:]:
            # An enlarged pass is there for small faces; big "faces" it finds are hands, badges and shelves.
            # The more a pass enlarges, the smaller the faces it is trusted with: 128 px at 2x, 64 at 3x.
            extra = self._detect_at(image, scale)
            if self.mirror_extra_passes:
                extra = np.concatenate([extra, self._detect_mirrored(image, scale)])
            limit = EXTRA_PASS_MAX_FACE / max(1.0, scale / scales[0] - 1.0)
            rows.append(extra[extra[:, 3] * scales[0] <= limit])
        found = np.concatenate(rows)
        found = found[found[:, 3] >= MIN_FACE_PX]
        if len(rows) > 1 and len(found):
            found = self._suppress(found)
        found = drop_face_parts(found[np.argsort(-found[:, 14])])
        if max(scales) ** 2 * width * height > KEEP_NET_MAX_PIXELS:
            self._local.detector = None  # give its large buffers back (see KEEP_NET_MAX_PIXELS)
        return [self._to_face(row, width, height) for row in found]

    def _detector(self) -> cv2.FaceDetectorYN:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            try:
                with quiet_opencv():
                    detector = cv2.FaceDetectorYN.create(
                        "onnx", self._model_bytes, np.zeros(0, np.uint8), (320, 320),
                        self.score_threshold, self.nms_threshold, self.top_k,
                    )
            except cv2.error as exc:
                raise ModelFileError(f"cannot load the face model {self.model_path}: not a YuNet ONNX file "
                                     f"OpenCV can read ({describe_load_error(exc)})") from None
            self._local.detector = detector
        detector.setScoreThreshold(self.score_threshold)
        return detector

    def _detect_at(self, image: np.ndarray, scale: float) -> np.ndarray:
        """Run YuNet on ``image`` resized by ``scale``; rows come back in original pixels."""
        height, width = image.shape[:2]
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        if size != (width, height):
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, size, interpolation=interpolation)
        if self._ort is not None:
            faces = self._ort.detect(image, self.score_threshold, self.nms_threshold, self.top_k)
        else:
            detector = self._detector()
            detector.setInputSize(size)
            faces = detector.detect(image)[1]
        if faces is None or not len(faces):
            return np.zeros((0, 15), np.float32)
        faces = faces.astype(np.float32).copy()
        faces[:, :14] /= np.float32(scale)
        return faces

    def _detect_mirrored(self, image: np.ndarray, scale: float) -> np.ndarray:
        """YuNet on the mirrored image, rows mapped back: it finds some masked faces only one way round."""
        rows = self._detect_at(np.ascontiguousarray(image[:, ::-1]), scale)
        width = image.shape[1]
        rows[:, 0] = width - rows[:, 0] - rows[:, 2]
        points = rows[:, 4:14].reshape(-1, 5, 2).copy()
        points[:, :, 0] = width - points[:, :, 0]
        rows[:, 4:14] = points[:, MIRRORED_LANDMARKS].reshape(-1, 10)  # the right eye is the left one mirrored
        return rows

    def _suppress(self, rows: np.ndarray) -> np.ndarray:
        boxes = [[float(v) for v in row[:4]] for row in rows]
        keep = cv2.dnn.NMSBoxes(boxes, rows[:, 14].tolist(), self.score_threshold, self.nms_threshold)
        return rows[np.asarray(keep, dtype=int).reshape(-1)]

    @staticmethod
    def _to_face(row: np.ndarray, width: int, height: int) -> Face:
        x, y, w, h = (float(v) for v in row[:4])
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(float(width), x + w), min(float(height), y + h)
        return Face(box=(x1, y1, x2, y2), score=float(row[14]), landmarks=row[4:14].reshape(5, 2).copy())


def read_face_model_metadata(path: Path) -> dict[str, str]:
    """The ``maskwatch.*`` metadata of a face model file ({} for the stock one, or one onnxruntime cannot read)."""
    net = OrtYuNet.load(path.read_bytes(), threads=1)
    return net.metadata() if net is not None else {}


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """OpenCV logs at ERROR only while a net is created: OpenCV 5 warns on every creation that
    "Targets are not supported by the new graph engine" (a target we never set). Errors still show, and
    failures still raise cv2.error. The level is process-wide, so another thread's warning in these few
    milliseconds is lost too; no other code of ours logs through OpenCV."""
    logging = cv2.utils.logging
    previous = logging.getLogLevel()
    logging.setLogLevel(min(previous, logging.LOG_LEVEL_ERROR))
    try:
        yield
    finally:
        logging.setLogLevel(previous)


# Parts of a face that YuNet, mostly in an enlarged pass, takes for faces of their own: a chin or a
# mask's print inside the face's box, an ear beside it. A real face there would be hidden by the other.
CONTAINED_FRACTION = 0.6
# A face less than half as tall as a better-scoring face, centred within this fraction of that face's
# size around its box, is taken to be one of its parts (measured: ears on held-out portraits).
NEIGHBOUR_REACH = 0.25
PART_SIZE_RATIO = 0.5


def drop_face_parts(rows: np.ndarray) -> np.ndarray:
    """Drop rows (x, y, w, h, ..., score; best score first) that look like parts of a better face."""
    kept: list[np.ndarray] = []
    for row in rows:
        if not any(_is_part_of(row, better) for better in kept):
            kept.append(row)
    return np.array(kept, dtype=np.float32).reshape(-1, rows.shape[1])


def _is_part_of(row: np.ndarray, better: np.ndarray) -> bool:
    x, y, w, h = row[:4]
    bx, by, bw, bh = better[:4]
    overlap_w = min(x + w, bx + bw) - max(x, bx)
    overlap_h = min(y + h, by + bh) - max(y, by)
    if overlap_w > 0 and overlap_h > 0 and overlap_w * overlap_h > CONTAINED_FRACTION * w * h:
        return True
    if h >= PART_SIZE_RATIO * bh:
        return False
    cx, cy = x + w / 2, y + h / 2
    reach_x, reach_y = NEIGHBOUR_REACH * bw, NEIGHBOUR_REACH * bh
    return bool(bx - reach_x <= cx <= bx + bw + reach_x and by - reach_y <= cy <= by + bh + reach_y)
