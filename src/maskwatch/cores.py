"""How many cores this process may use: what both ONNX models size their onnxruntime thread pools by."""

from __future__ import annotations

import os


def usable_cores() -> int:
    """The cores this process may run on (a container pinned to 2 cores gets 2), not all the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
