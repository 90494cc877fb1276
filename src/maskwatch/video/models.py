"""The models set up for video: one fast YuNet pass per frame.

Photo defaults (multi-scale YuNet) are tuned for accuracy on one image; a video runs
the two models back to back thirty times a second.
"""

from __future__ import annotations

import os

from maskwatch.faces import YuNetDetector, create_detector
from maskwatch.pipeline import MaskDetector

# Without --detect-size, frames are detected near their own size: small ones enlarged to 640 px
# (YuNet misses faces under ~20 px) and big ones shrunk to 1280 px, which bounds the cost per frame
# without halving a 720p camera's faces the way a fixed 640 would.
MIN_DETECT_SIZE = 640
MAX_DETECT_SIZE = 1280


def video_detector(
    detector: str = "yunet",
    face_model: str | os.PathLike | None = None,
    classifier: str | os.PathLike | None = None,
    face_threshold: float | None = None,
    mask_threshold: float = 0.5,
    detect_size: int | None = None,
) -> MaskDetector:
    """A MaskDetector for video: YuNet in a single pass, frames scaled to ``detect_size`` px (long side).

    ``detect_size`` trades small faces for speed; None keeps frames between 640 and 1280 px.
    """
    if detector == "yunet":
        low, high = (detect_size, detect_size) if detect_size else (MIN_DETECT_SIZE, MAX_DETECT_SIZE)
        faces = YuNetDetector(model_path=face_model, extra_scales=(), min_long_side=low, max_long_side=high)
    else:
        faces = create_detector(detector, model_path=face_model)
    return MaskDetector(face_detector=faces, classifier=classifier,
                        face_threshold=face_threshold, mask_threshold=mask_threshold)
