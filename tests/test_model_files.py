"""The YuNet download path, against a real HTTP server on 127.0.0.1 serving the shared copy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import serve_directory

from maskwatch.faces.yunet import YUNET, YuNetDetector
from maskwatch.model_files import ModelFileError, resolve, sha256_of


@pytest.fixture()
def model_server(tmp_path: Path, yunet_path: Path) -> Iterator[str]:
    """Serves the real model at /good.onnx and a one-byte-corrupted copy at /bad.onnx."""
    shutil.copy(yunet_path, tmp_path / "good.onnx")
    data = bytearray(yunet_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.onnx").write_bytes(bytes(data))
    with serve_directory(tmp_path) as url:
        yield url


@pytest.fixture()
def no_local_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.delenv("MASKWATCH_FACE_MODEL", raising=False)
    monkeypatch.setenv("MASKWATCH_CACHE", str(cache))
    return cache


def test_shared_copy_matches_the_pinned_hash(yunet_path: Path) -> None:
    assert sha256_of(yunet_path) == YUNET.sha256


def test_download_is_verified_and_cached(model_server: str, no_local_model: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKWATCH_FACE_MODEL_URL", f"{model_server}/good.onnx")
    path = resolve(YUNET)
    assert path == no_local_model / YUNET.name and sha256_of(path) == YUNET.sha256
    # The second call uses the cache: the server may be gone.
    monkeypatch.setenv("MASKWATCH_FACE_MODEL_URL", f"{model_server}/missing.onnx")
    assert resolve(YUNET) == path
    assert YuNetDetector("stock").model_path == path  # the stock model, when asked for, comes from the cache


def test_corrupted_download_is_refused(model_server: str, no_local_model: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKWATCH_FACE_MODEL_URL", f"{model_server}/bad.onnx")
    with pytest.raises(ModelFileError, match="sha256"):
        resolve(YUNET)
    assert not any(no_local_model.glob("*"))  # nothing half-written is left in the cache


def test_damaged_cache_is_replaced(model_server: str, no_local_model: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    no_local_model.mkdir(parents=True)
    (no_local_model / YUNET.name).write_bytes(b"not a model")
    monkeypatch.setenv("MASKWATCH_FACE_MODEL_URL", f"{model_server}/good.onnx")
    assert sha256_of(resolve(YUNET)) == YUNET.sha256


def test_unreachable_url_says_how_to_supply_the_file(no_local_model: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from maskwatch.cli import main
    from maskwatch.faces.yunet import SHIPPED_FACE_MODEL

    monkeypatch.setenv("MASKWATCH_FACE_MODEL_URL", "http://127.0.0.1:9/none.onnx")
    with pytest.raises(ModelFileError) as info:
        resolve(YUNET)
    message = str(info.value)
    assert "MASKWATCH_FACE_MODEL" in message and "--face-model" in message and YUNET.sha256 in message
    # A command without the option (maskwatch average) is not told to use it.
    assert main(["average", str(SHIPPED_FACE_MODEL), "stock", "--scenes", str(no_local_model.parent),
                 "--out", str(no_local_model.parent / "soup")]) == 2
    message = capsys.readouterr().err
    assert "MASKWATCH_FACE_MODEL" in message and "--face-model" not in message and YUNET.sha256 in message


def test_explicit_path_and_environment_come_first(yunet_path: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKWATCH_FACE_MODEL", str(yunet_path))
    assert resolve(YUNET) == yunet_path
    copy = tmp_path / "copy.onnx"
    shutil.copy(yunet_path, copy)
    assert resolve(YUNET, copy) == copy
    with pytest.raises(ModelFileError, match="does not exist"):
        resolve(YUNET, tmp_path / "nope.onnx")
    monkeypatch.setenv("MASKWATCH_FACE_MODEL", str(tmp_path / "nope.onnx"))
    with pytest.raises(ModelFileError, match="MASKWATCH_FACE_MODEL"):
        resolve(YUNET)


def test_non_http_urls_are_refused(no_local_model: Path, monkeypatch: pytest.MonkeyPatch, yunet_path: Path) -> None:
    monkeypatch.setenv("MASKWATCH_FACE_MODEL_URL", f"file://{yunet_path}")
    with pytest.raises(ModelFileError, match="non-HTTP"):
        resolve(YUNET)
