"""The models set up for video: one fast YuNet pass per frame (``Options.video``).

Photo defaults (multi-scale YuNet) are tuned for accuracy on one image; a video runs
the two models back to back thirty times a second.
"""

from __future__ import annotations

import os

from maskwatch.options import Options
from maskwatch.pipeline import MaskDetector


def video_detector(
    face_model: str | os.PathLike | None = None,
    classifier: str | os.PathLike | None = None,
    detect_size: int | None = None,
    **changes: object,
) -> MaskDetector:
    """A MaskDetector with the video preset: YuNet in a single pass, frames scaled to ``detect_size`` px.

    ``detect_size`` trades small faces for speed; None keeps frames between 640 and 1280 px. Other
    ``Options`` fields may be given as keywords.
    """
    options = Options.video(detect_size=detect_size, face_model=None if face_model is None else str(face_model),
                            classifier=None if classifier is None else str(classifier), **changes)
    return MaskDetector.from_options(options)
