"""YuNet through onnxruntime: the same outputs as ``cv2.FaceDetectorYN``, 1.5-2.5x as fast on this CPU.

``cv2.FaceDetectorYN`` pads the image right and down to a multiple of 32, feeds it as BGR float pixels, and
decodes each stride's grid: score ``sqrt(clip(cls) * clip(obj))``, box centre ``(cell + d) * stride``, size
``exp(d) * stride``, landmarks ``(cell + d) * stride``; then non-maximum suppression. This module does the
same with onnxruntime (``tests/test_face_model.py`` checks that the rows match OpenCV's).

Why: measured with ``python benchmarks/speed.py``, one 640x480 pass takes 6.6 ms in onnxruntime against 10-18 ms
in OpenCV 5's graph engine. onnxruntime needs a model whose input height and width are
free (the stock 2023mar file fixes them at 640x640); the models ``maskwatch train-detector`` exports are.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from maskwatch.cores import face_detector_session
from maskwatch.faces.passes import suppress

STRIDES = (8, 16, 32)  # the grids of YuNet's three heads, in the order of its outputs
OUTPUT_NAMES = tuple(f"{head}_{stride}" for head in ("cls", "obj", "bbox", "kps") for stride in STRIDES)


def runs_any_size(session: ort.InferenceSession) -> bool:
    """True for a YuNet (its twelve outputs) that takes any height and width, as onnxruntime needs for photos."""
    shape = session.get_inputs()[0].shape
    free = len(shape) == 4 and not isinstance(shape[2], int) and not isinstance(shape[3], int)
    return free and set(OUTPUT_NAMES) <= {o.name for o in session.get_outputs()}


class OrtYuNet:
    """One YuNet session; ``detect`` gives OpenCV's rows: x, y, w, h, 5 landmarks (x, y), score."""

    def __init__(self, model: bytes, threads: int) -> None:
        """``model``: the ONNX file's bytes. Raises onnxruntime's errors for a file it cannot load."""
        self.session = face_detector_session(model, threads)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    @classmethod
    def load(cls, model: bytes, threads: int) -> OrtYuNet | None:
        """The session, or None when onnxruntime cannot load the file (OpenCV's load says why, or copes)."""
        try:
            return cls(model, threads)
        except Exception:  # onnxruntime raises classes of its own for every kind of bad file
            return None

    def metadata(self) -> dict[str, str]:
        """The ``maskwatch.*`` entries of the file's metadata (none in the stock file)."""
        stored = self.session.get_modelmeta().custom_metadata_map
        return {k: v for k, v in stored.items() if k.startswith("maskwatch.")}

    def detect(self, image: np.ndarray, score_threshold: float, nms_threshold: float, top_k: int) -> np.ndarray:
        height, width = image.shape[:2]
        pad_h, pad_w = -(-height // 32) * 32, -(-width // 32) * 32
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        blob[0, :, :height, :width] = image.transpose(2, 0, 1)
        outputs = dict(zip(self.output_names, self.session.run(None, {self.input_name: blob}), strict=True))
        rows = [self._decode(outputs, stride, pad_w // stride, score_threshold) for stride in STRIDES]
        found = np.concatenate(rows)
        if not len(found):
            return found
        order = np.argsort(-found[:, 14], kind="stable")[:top_k]
        return suppress(found[order], score_threshold, nms_threshold)

    @staticmethod
    def _decode(outputs: dict[str, np.ndarray], stride: int, cols: int, threshold: float) -> np.ndarray:
        cls = np.clip(outputs[f"cls_{stride}"][0, :, 0], 0, 1)
        obj = np.clip(outputs[f"obj_{stride}"][0, :, 0], 0, 1)
        score = np.sqrt(cls * obj)
        index = np.nonzero(score >= threshold)[0]
        if not len(index):
            return np.zeros((0, 15), np.float32)
        cell = np.stack([index % cols, index // cols], axis=1).astype(np.float32)
        bbox = outputs[f"bbox_{stride}"][0, index]
        centre = (cell + bbox[:, :2]) * stride
        size = np.exp(bbox[:, 2:]) * stride
        kps = outputs[f"kps_{stride}"][0, index].reshape(-1, 5, 2)
        points = ((kps + cell[:, None, :]) * stride).reshape(-1, 10)
        return np.concatenate([centre - size / 2, size, points, score[index, None]], axis=1).astype(np.float32)
