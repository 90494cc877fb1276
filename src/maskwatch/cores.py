"""How many cores this process may use: what both ONNX models size their onnxruntime thread pools by."""

from __future__ import annotations

import os

import onnxruntime as ort


def usable_cores() -> int:
    """The cores this process may run on (a container pinned to 2 cores gets 2), not all the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def face_detector_session(model: bytes | str, threads: int | None = None) -> ort.InferenceSession:
    """The onnxruntime session a face detector runs in: ``threads`` (default: the usable cores), one inter-op
    thread, and no memory arena, which would keep the buffers of the largest photo for good (a 40 MP photo's
    passes). Raises onnxruntime's own errors for a file it cannot load."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
