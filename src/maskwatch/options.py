"""One options object behind every entry point: ``maskwatch detect``, ``watch``, ``serve``, ``evaluate`` and Python.

    from maskwatch import MaskDetector, Options
    detector = MaskDetector.from_options(Options.video(mask_threshold=0.9))

Every model setting lives here once, with two presets: ``Options.photo()`` (the passes the face model's file
asks for: one for the shipped model, three for the stock YuNet) and ``Options.video()`` (one pass per frame,
frames kept between 640 and 1280 px).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from maskwatch.images import DEFAULT_MAX_PIXELS

# Video: frames are detected near their own size: small ones enlarged to 640 px (YuNet misses faces under
# ~20 px) and big ones shrunk to 1280 px, which bounds the cost per frame without halving a 720p camera's
# faces the way a fixed 640 would.
VIDEO_MIN_DETECT_SIZE = 640
VIDEO_MAX_DETECT_SIZE = 1280
# Extra detector passes enlarge the image by more than 1x and at most this (a 2x and a 3x pass are the stock
# model's photo default; past 8x a pass costs 64x the pixels for faces of a few pixels).
MAX_EXTRA_SCALE = 8.0


@dataclass(frozen=True)
class Options:
    """Every setting of the two models. ``None`` means the model's own measured default."""

    detector: str = "yunet"  # face detector, by registry name: "yunet" or "retinaface"
    face_model: str | None = None  # the detector's model file (YuNet: a path or "stock"; None: the shipped one)
    face_threshold: float | None = None  # minimum face score; None: the face model's own
    extra_scales: tuple[float, ...] | None = None  # extra detector passes (x the base scale); None: the model's own
    mirror_extra_passes: bool | None = None  # also run each extra pass on the mirrored image; None: the model's way
    extra_pass_max_face: float | None = None  # tallest face (px) a 2x pass may add, half at 3x; None: the model's
    min_detect_size: int | None = None  # images with a shorter long side are enlarged before detection
    max_detect_size: int | None = None  # and longer ones shrunk
    classifier: str | None = None  # mask classifier ONNX file; None: the shipped one
    mask_threshold: float | None = None  # with_mask when P(with_mask) >= this; None: the threshold in the model
    two_class: bool = False  # report incorrect_mask as without_mask
    threads: int | None = None  # classifier threads; None: the usable cores
    max_pixels: int = DEFAULT_MAX_PIXELS  # refuse larger images before decoding them

    def __post_init__(self) -> None:
        """Refuse (ValueError) what the command line would refuse, so that Python gets the same checks."""
        if self.extra_scales is not None:
            if isinstance(self.extra_scales, (str, bytes)) or not hasattr(self.extra_scales, "__iter__"):
                raise ValueError(f"extra_scales takes a sequence of scales, e.g. (2.0,), not {self.extra_scales!r}")
            object.__setattr__(self, "extra_scales", tuple(self.extra_scales))  # a list becomes a tuple
            for scale in self.extra_scales:
                check_number("each of extra_scales", scale, low=1.0, high=MAX_EXTRA_SCALE, low_open=True)
        if self.face_threshold is not None:
            check_number("face_threshold", self.face_threshold, low=0.0, high=1.0)
        if self.mask_threshold is not None:
            check_number("mask_threshold", self.mask_threshold, low=0.0, high=1.0)
        if self.extra_pass_max_face is not None:
            check_number("extra_pass_max_face", self.extra_pass_max_face, low=0.0, low_open=True)
        for name in ("min_detect_size", "max_detect_size", "threads", "max_pixels"):
            if getattr(self, name) is not None:  # (max_pixels is never None: checked as a count)
                object.__setattr__(self, name, check_count(name, getattr(self, name)))
        if self.min_detect_size and self.max_detect_size and self.min_detect_size > self.max_detect_size:
            raise ValueError(f"min_detect_size {self.min_detect_size} is above max_detect_size {self.max_detect_size}")
        for name in ("two_class", "mirror_extra_passes"):
            value = getattr(self, name)
            if isinstance(value, np.bool_):  # numpy's own True and False
                object.__setattr__(self, name, bool(value))
            elif not (isinstance(value, bool) or (value is None and name != "two_class")):
                raise ValueError(f"{name} must be True or False, not {value!r}")

    @classmethod
    def photo(cls, **changes: Any) -> Options:
        """Photos: the face model's own passes and threshold, everything else default."""
        return cls(**changes)

    @classmethod
    def video(cls, detect_size: int | None = None, **changes: Any) -> Options:
        """Video: one detector pass per frame; ``detect_size`` fixes the long side frames are detected at."""
        low, high = (detect_size, detect_size) if detect_size else (VIDEO_MIN_DETECT_SIZE, VIDEO_MAX_DETECT_SIZE)
        settings: dict[str, Any] = {"extra_scales": (), "min_detect_size": low, "max_detect_size": high}
        return cls(**{**settings, **changes})

    def replace(self, **changes: Any) -> Options:
        return dataclasses.replace(self, **changes)

    def detector_settings(self) -> dict[str, Any]:
        """Keyword arguments for the face detector's constructor: only the settings that were given."""
        names = {"face_model": "model_path", "face_threshold": "score_threshold", "extra_scales": "extra_scales",
                 "mirror_extra_passes": "mirror_extra_passes", "extra_pass_max_face": "extra_pass_max_face",
                 "min_detect_size": "min_long_side", "max_detect_size": "max_long_side"}
        settings = {target: getattr(self, name) for name, target in names.items() if getattr(self, name) is not None}
        settings.setdefault("model_path", None)
        return settings


def check_number(name: str, value: Any, low: float, high: float = math.inf, low_open: bool = False) -> None:
    """A real number (not a bool or a string) in [low, high] ((low, high] with ``low_open``); else ValueError."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (low < value <= high if low_open else low <= value <= high):
        if not low_open:
            where = f"between {low:g} and {high:g}" if high < math.inf else f"at least {low:g}"
        else:
            where = f"above {low:g}" + (f" and at most {high:g}" if high < math.inf else "")
        raise ValueError(f"{name} must be {where}, not {value!r}")


def check_count(name: str, value: Any) -> int:
    """``value`` as a positive whole number (an int, or a float with nothing after the point, e.g. 50e6);
    else ValueError."""
    whole = isinstance(value, numbers.Integral) or (
        isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer())
    if not whole or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")
    return int(value)
