"""Video: files, webcams and network streams, with face tracking, counters and events.

    maskwatch watch video.mp4 --out annotated.mp4 --events events.jsonl

In Python, the pieces compose: ``VideoSource`` decodes in a thread,
``VideoAnalyzer`` detects, tracks and smooths labels frame by frame, and
``StreamWatcher`` adds counters, alerts and outputs.
"""

from __future__ import annotations

import importlib
from typing import Any

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

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'maskwatch.video' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
