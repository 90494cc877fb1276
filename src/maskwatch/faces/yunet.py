"""YuNet, OpenCV's small CNN face detector, through onnxruntime or ``cv2.FaceDetectorYN``.

This file finds the model (the shipped one, the stock one, a path) and runs the net on one image;
``faces/passes.py`` chooses the scales and merges the passes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict

import cv2
import numpy as np

from maskwatch.cores import usable_cores
from maskwatch.faces.base import register_detector
from maskwatch.faces.passes import (
    DEFAULT_NMS_THRESHOLD,
    EXTRA_PASS_MAX_FACE,
    MAX_LONG_SIDE,
    MIN_LONG_SIDE,
    MultiPassDetector,
)
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
# The file name of a face model maskwatch writes (`train-detector`, `average`) and ships.
FACE_MODEL_FILE_NAME = "face_detector.onnx"
SHIPPED_FACE_MODEL = Path(__file__).resolve().parent.parent / "models" / FACE_MODEL_FILE_NAME
# Its sha256, checked when it loads: a damaged install fails with a clear message, not with odd faces.
SHIPPED_FACE_MODEL_SHA256 = "d5bcb4778079480452f51fe358670cb524fa0a92ec0c70fa257d5b8807587958"
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
# The stock model's photo default: extra passes at 2x and 3x the base scale find small and masked faces that
# one pass misses (scene benchmark, faces of 24+ px: masked recall 0.67 -> 0.91). A model of ours says in its
# metadata which passes it needs (METADATA_EXTRA_SCALES); video uses one pass for speed.
STOCK_PHOTO_EXTRA_SCALES = (2.0, 3.0)
# Metadata keys of a face model trained here (`maskwatch train-detector`): the defaults chosen for it on val.
METADATA_SCORE_THRESHOLD = "maskwatch.score_threshold"
METADATA_EXTRA_SCALES = "maskwatch.photo_extra_scales"
# How an extra pass (`--extra-scales`) runs: mirrored too or not, and the tallest face (px at the base scale)
# a 2x pass may add. Without these keys (the stock file): mirrored, up to EXTRA_PASS_MAX_FACE.
METADATA_MIRROR_EXTRA_PASSES = "maskwatch.mirror_extra_passes"
METADATA_EXTRA_PASS_MAX_FACE = "maskwatch.extra_pass_max_face"
# What the models trained here store (`train-detector`, `average`). Measured on the shipped model, 2x pass
# (MODEL_CARD.md, "Extra passes"): against the stock way (mirrored, up to 128 px), on mask-scenes val the
# same masked faces, more bare ones, fewer false faces and a higher face AP, and on the synthetic scenes
# as many small masked faces, in half the time. Mirroring helps the stock model (README, "Small faces").
class ExtraPasses(TypedDict):
    """How extra passes run: YuNetDetector's keyword arguments of that name."""

    mirror_extra_passes: bool
    extra_pass_max_face: float


OWN_EXTRA_PASSES = ExtraPasses(mirror_extra_passes=False, extra_pass_max_face=48.0)
# The stock model's way, measured for it (faces/passes.py): what a file without the entries gets.
STOCK_EXTRA_PASSES = ExtraPasses(mirror_extra_passes=True, extra_pass_max_face=EXTRA_PASS_MAX_FACE)
# OpenCV's net keeps the buffers of the largest input it has run on for as long as it lives: after a 40 MP
# photo (passes up to 4096x2731) a worker thread held 690 MB more than before, for good. A thread whose
# pass was larger than this drops its net afterwards; creating a new one from the bytes takes about 4 ms.
KEEP_NET_MAX_PIXELS = 4_000_000


@register_detector("yunet")
class YuNetDetector(MultiPassDetector):
    """Face boxes, five landmarks and a score for every face YuNet finds (passes: ``faces/passes.py``)."""

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        score_threshold: float | None = None,
        nms_threshold: float = DEFAULT_NMS_THRESHOLD,
        min_long_side: int = MIN_LONG_SIDE,
        max_long_side: int = MAX_LONG_SIDE,
        extra_scales: tuple[float, ...] | None = None,
        mirror_extra_passes: bool | None = None,
        extra_pass_max_face: float | None = None,
        top_k: int = 5000,
        engine: str | None = None,
        threads: int | None = None,
    ) -> None:
        """``score_threshold``, ``extra_scales`` and how the extra passes run (``mirror_extra_passes``,
        ``extra_pass_max_face``) default to what the model file's metadata says (chosen when it was trained),
        else to the stock model's: DEFAULT_SCORE_THRESHOLD, STOCK_PHOTO_EXTRA_SCALES, mirrored, 128 px.

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
        self.top_k = top_k
        ort_net = OrtYuNet.load(self._model_bytes.tobytes(), threads or usable_cores())
        self.metadata = ort_net.metadata() if ort_net is not None else {}
        if score_threshold is None:
            score_threshold = float(self.metadata.get(METADATA_SCORE_THRESHOLD, DEFAULT_SCORE_THRESHOLD))
        if extra_scales is None:
            stored = self.metadata.get(METADATA_EXTRA_SCALES)
            extra_scales = tuple(json.loads(stored)) if stored is not None else STOCK_PHOTO_EXTRA_SCALES
        if mirror_extra_passes is None:
            stored = self._stored(METADATA_MIRROR_EXTRA_PASSES, "true or false", lambda v: isinstance(v, bool))
            mirror_extra_passes = STOCK_EXTRA_PASSES["mirror_extra_passes"] if stored is None else stored
        if extra_pass_max_face is None:
            stored = self._stored(METADATA_EXTRA_PASS_MAX_FACE, "a positive number of pixels", _is_pixels)
            extra_pass_max_face = STOCK_EXTRA_PASSES["extra_pass_max_face"] if stored is None else float(stored)
        super().__init__(score_threshold, nms_threshold, min_long_side, max_long_side, extra_scales,
                         mirror_extra_passes, extra_pass_max_face)
        usable = ort_net is not None and runs_any_size(ort_net.session)
        self._ort = ort_net if usable and engine != "opencv" else None
        if self._ort is None:
            self._detector()  # a corrupt or foreign file fails here, at load time, not at the first photo
        if engine == "onnxruntime" and not usable:
            raise ModelFileError(f"{self.model_path} fixes its input size; onnxruntime needs a free one "
                                 "(use engine 'opencv', or a model exported by maskwatch train-detector)")

    def _stored(self, key: str, expected: str, valid: Callable[[object], bool]) -> Any:
        """A metadata entry as JSON, None without it; one that is not ``valid`` is refused by name. Entries are
        read through onnxruntime, like the photo defaults: a file only OpenCV can load runs its extra passes
        the stock model's way."""
        stored = self.metadata.get(key)
        if stored is None:
            return None
        try:
            value = json.loads(stored)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise ModelFileError(f"{self.model_path}: its metadata entry {key} is {stored!r}, not {expected}")
        return value

    @property
    def engine(self) -> str:
        """What runs the net: "onnxruntime" or "opencv"."""
        return "onnxruntime" if self._ort is not None else "opencv"

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

    def _run(self, image: np.ndarray) -> np.ndarray:
        if self._ort is not None:
            return self._ort.detect(image, self.score_threshold, self.nms_threshold, self.top_k)
        detector = self._detector()
        detector.setInputSize((image.shape[1], image.shape[0]))
        return detector.detect(image)[1]

    def _after_detect(self, largest_pass_pixels: float) -> None:
        if largest_pass_pixels > KEEP_NET_MAX_PIXELS:
            self._local.detector = None  # give its large buffers back (see KEEP_NET_MAX_PIXELS)


def _is_pixels(value: object) -> bool:
    """A positive, finite JSON number (not a boolean)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf


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
