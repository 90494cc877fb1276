"""The work of one batch worker: decode photos and video frames, run both models, return result rows.

``BatchAnalyzer`` is the callable class handed to Ray Data's ``map_batches``: Ray builds one per worker
process, so the models load once per worker, not once per batch. It needs no Ray itself, and runs as well
in a plain loop (the tests use it that way too).
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import numpy as np

from maskwatch.options import Options
from maskwatch.results import ImageResult

# A gap of more sampled frames than this is crossed by seeking; a shorter one by decoding frame after frame,
# which is cheaper than a seek (a seek decodes from the previous key frame, typically 1-2 s of video).
SEEK_AFTER_FRAMES = 48


class BatchAnalyzer:
    """Built once per worker from the driver's ``Options``; called with batches of work items."""

    def __init__(self, options: Options, cpus: float = 1.0) -> None:
        import cv2

        from maskwatch.pipeline import MaskDetector

        threads = max(1, int(cpus))
        # OpenCV and onnxruntime would each start a thread per core of the machine; a worker owns
        # ``cpus`` of them, and more threads than that only fight with the other workers.
        cv2.setNumThreads(threads)
        self.detector = MaskDetector.from_options(options.replace(threads=options.threads or threads))
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: Any) -> Any:
        """A batch of items (an Arrow table from Ray, or a list of dicts) -> an Arrow table of result rows."""
        from maskwatch.batch.store import to_table

        items = batch.to_pylist() if hasattr(batch, "to_pylist") else list(batch)
        rows: list[dict[str, Any]] = []
        for item in items:
            rows.extend(self.analyze_item(item))
        return to_table(rows)

    def analyze_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows of one item; never raises: whatever goes wrong becomes the rows' ``error``."""
        if item.get("error"):
            return [self._row(ImageResult(file=item["file"], error=item["error"]), item, None, 0.0)]
        if item["kind"] == "image":
            started = time.perf_counter()
            try:
                result, _image = self.detector.analyze(item["file"], name=item["file"])
            except Exception as exc:  # noqa: BLE001 - a bad input is a row's error, never a failed job
                result = ImageResult(file=item["file"], error=f"{type(exc).__name__}: {exc}")
            return [self._row(result, item, None, time.perf_counter() - started)]
        return self._video_rows(item)

    def _video_rows(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        import cv2

        started = time.perf_counter()
        capture = cv2.VideoCapture(item["file"], cv2.CAP_FFMPEG)
        rows = []
        try:
            opened = capture.isOpened()
            position = 0  # index of the frame the next grab() decodes
            for frame in item["frames"]:
                image = None
                if opened:
                    if frame - position > SEEK_AFTER_FRAMES or frame < position:
                        capture.set(cv2.CAP_PROP_POS_FRAMES, frame)
                        position = frame
                    while position < frame and capture.grab():
                        position += 1
                    ok, image = capture.read() if position == frame else (False, None)
                    position += 1 if ok else 0
                    image = image if ok else None
                rows.append(self._frame_row(item, frame, image, opened, started))
                started = time.perf_counter()
        finally:
            capture.release()
        return rows

    def _frame_row(self, item: dict[str, Any], frame: int, image: np.ndarray | None, opened: bool,
                   started: float) -> dict[str, Any]:
        if image is None:
            why = f"frame {frame} could not be decoded" if opened else "cannot open the video"
            return self._row(ImageResult(file=item["file"], error=why), item, frame,
                             time.perf_counter() - started)
        try:
            result, _ = self.detector.analyze(image, name=item["file"])
        except Exception as exc:  # noqa: BLE001 - as for photos
            result = ImageResult(file=item["file"], error=f"{type(exc).__name__}: {exc}")
        return self._row(result, item, frame, time.perf_counter() - started)

    def _row(self, result: ImageResult, item: dict[str, Any], frame: int | None, seconds: float) -> dict[str, Any]:
        fps = item.get("fps") or 0.0
        return {
            **result.to_dict(),
            "source": item["source"],
            "frame": frame,
            "frame_time": round(frame / fps, 3) if frame is not None and fps else None,
            "worker": self.worker,
            "seconds": round(seconds, 4),
        }
