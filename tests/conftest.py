"""Shared fixtures: the real YuNet model and real images from ../shared (never downloaded in tests)."""

from __future__ import annotations

import csv
import functools
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MASKWATCH_SHARED", ROOT.parent / "shared"))
YUNET_PATH = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
DATASET = SHARED / "datasets" / "face-mask"

# Tests must never reach the network: point the detector at the shared copy and the cache at a temp dir.
os.environ.setdefault("MASKWATCH_FACE_MODEL", str(YUNET_PATH))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["MASKWATCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def yunet_path() -> Path:
    if not YUNET_PATH.is_file():
        pytest.fail(f"YuNet model missing at {YUNET_PATH}; tests need ../shared/models")
    return YUNET_PATH


@pytest.fixture(scope="session")
def manifest() -> list[dict[str, str]]:
    with open(DATASET / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# Single-face photos from the TEST split of the shipped model (seed 0, near-duplicates grouped: see
# MODEL_CARD.md), so labels are not memorised.
MASKED_JPG = DATASET / "with_mask" / "with_mask_0003.jpg"
BARE_JPG = DATASET / "without_mask" / "without_mask_0003.jpg"
TEST_SPLIT_FACES = {
    "with_mask": [DATASET / "with_mask" / f"with_mask_{i:04d}.jpg" for i in (3, 10, 22, 23, 36)],
    "without_mask": [DATASET / "without_mask" / f"without_mask_{i:04d}.jpg" for i in (3, 5, 15, 18, 23)],
}


@pytest.fixture(scope="session")
def detector(yunet_path: Path):
    from maskwatch import MaskDetector

    return MaskDetector(face_model=yunet_path)


@contextmanager
def serve_directory(folder: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``folder``: stands in for model download sites in tests."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
