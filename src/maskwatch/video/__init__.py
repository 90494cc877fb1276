"""Video: files, webcams and network streams, with face tracking, counters and events.

    maskwatch watch video.mp4 --out annotated.mp4 --events events.jsonl

In Python, the pieces compose: ``VideoSource`` decodes in a thread,
``VideoAnalyzer`` detects, tracks and smooths labels frame by frame, and
``StreamWatcher`` adds counters, alerts and outputs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as a type checker sees them; at run time they load on first use (below)
    from maskwatch.video.analyzer import FrameResult, TrackedFace, VideoAnalyzer
    from maskwatch.video.events import NoMaskAlerts
    from maskwatch.video.runner import StreamWatcher, WatchOutputs
    from maskwatch.video.smoothing import LabelSmoother
    from maskwatch.video.source import SourceError, VideoSource, parse_source
    from maskwatch.video.stats import StreamStats
    from maskwatch.video.tracker import IoUTracker
    from maskwatch.video.webhook import WebhookSink
    from maskwatch.video.writers import VideoFileWriter

# Imported on first use: `maskwatch --help` loads this package, and should not pay for OpenCV.
_EXPORTS = {
    "FrameResult": "maskwatch.video.analyzer",
    "TrackedFace": "maskwatch.video.analyzer",
    "VideoAnalyzer": "maskwatch.video.analyzer",
    "IoUTracker": "maskwatch.video.tracker",
    "LabelSmoother": "maskwatch.video.smoothing",
    "StreamStats": "maskwatch.video.stats",
    "NoMaskAlerts": "maskwatch.video.events",
    "WebhookSink": "maskwatch.video.webhook",
    "VideoSource": "maskwatch.video.source",
    "SourceError": "maskwatch.video.source",
    "parse_source": "maskwatch.video.source",
    "StreamWatcher": "maskwatch.video.runner",
    "WatchOutputs": "maskwatch.video.runner",
    "VideoFileWriter": "maskwatch.video.writers",
}

__all__ = [  # the keys of _EXPORTS, written out so that linters and type checkers read them
    "FrameResult", "IoUTracker", "LabelSmoother", "NoMaskAlerts", "SourceError", "StreamStats", "StreamWatcher",
    "TrackedFace", "VideoAnalyzer", "VideoFileWriter", "VideoSource", "WatchOutputs", "WebhookSink", "parse_source",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'maskwatch.video' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
