"""Find model files: an explicit path, an environment variable, the user cache, or a verified download.

Downloads are checked against a pinned sha256 before they are moved into the
cache, so a truncated or tampered file never reaches OpenCV or onnxruntime.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


class ModelFileError(RuntimeError):
    """A model file could not be found, downloaded or verified; the message says how to supply it."""


def model_load_errors() -> tuple[type[BaseException], ...]:
    """What loading a missing, corrupt or incompatible model file can raise: ours, OpenCV's and onnxruntime's.

    Every command catches these around building its models and exits 2 with the message, never a traceback.
    """
    import cv2
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    ort_errors = tuple(value for value in vars(ort_state).values()
                       if isinstance(value, type) and issubclass(value, Exception))
    return (ModelFileError, OSError, ValueError, RuntimeError, cv2.error, *ort_errors)


def describe_load_error(exc: BaseException) -> str:
    """One line for a model that failed to load: the first line of OpenCV's or onnxruntime's message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"


@dataclass(frozen=True)
class ModelFile:
    """A downloadable model file pinned by its hash."""

    name: str  # file name in the cache
    url: str
    sha256: str  # the pinned digest; with algorithm="md5", an md5 (Keras publishes only md5 for its weights)
    env_var: str  # environment variable that may hold a local path
    url_env_var: str = ""  # environment variable that may override the URL (mirrors, tests)
    option: str = "the model option"  # the command-line option that takes a local path ("": none takes one)
    algorithm: str = "sha256"


def cache_dir() -> Path:
    """Where maskwatch keeps downloaded models: $MASKWATCH_CACHE, else $XDG_CACHE_HOME/maskwatch."""
    if os.environ.get("MASKWATCH_CACHE"):
        return Path(os.environ["MASKWATCH_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "maskwatch"


def sha256_of(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file (sha256 unless ``algorithm`` says otherwise)."""
    digest = hashlib.new(algorithm, usedforsecurity=algorithm != "md5")
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def resolve(model: ModelFile, path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return a local path for ``model``, in this order of preference:

    1. ``path``, when given (it must exist);
    2. the environment variable ``model.env_var``;
    3. the cached copy from an earlier download (re-verified);
    4. a download from ``model.url`` (or ``model.url_env_var``), verified by sha256;
    otherwise raise ModelFileError that says how to supply the file.
    """
    if path is not None:
        return _existing(Path(path), "the given path")
    if os.environ.get(model.env_var):
        return _existing(Path(os.environ[model.env_var]), f"${model.env_var}")
    cached = cache_dir() / model.name
    if cached.is_file():
        if sha256_of(cached, model.algorithm) == model.sha256:
            return cached
        cached.unlink()  # a stale or damaged copy: fetch it again
    url = os.environ.get(model.url_env_var) if model.url_env_var else None
    url = url or model.url
    if not download:
        raise ModelFileError(_how_to_supply(model, "downloads are disabled"))
    try:
        return download_verified(url, model.sha256, cached, algorithm=model.algorithm)
    except ModelFileError as exc:
        raise ModelFileError(_how_to_supply(model, str(exc))) from None


def download_verified(url: str, sha256: str, dest: Path, timeout: float = 60.0, algorithm: str = "sha256") -> Path:
    """Download ``url`` to ``dest`` atomically, refusing it unless its digest matches."""
    if not url.startswith(("https://", "http://")):
        raise ModelFileError(f"refusing to download from a non-HTTP URL: {url!r}")
    digest = hashlib.new(algorithm, usedforsecurity=algorithm != "md5")
    try:
        with atomic_file(dest) as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
            if digest.hexdigest() != sha256:
                raise ModelFileError(
                    f"downloaded file from {url} has {algorithm} {digest.hexdigest()}, expected {sha256}; refused"
                )
        return dest
    except ModelFileError:
        raise
    except OSError as exc:  # URLError, HTTPError and socket errors are OSErrors
        raise ModelFileError(f"download from {url} failed: {exc}") from None


def _read_umask() -> int:
    """The process umask (only os.umask reads it, by setting it: done once, at import, not while threads write)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_file(dest: Path) -> Iterator[BinaryIO]:
    """A file beside ``dest`` to write; it replaces ``dest`` when the block ends, and is removed if it raises,
    so a reader never sees a partial model file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            yield out
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp made it 0600; a file open() writes gets 0666 less the umask
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _existing(path: Path, where: str) -> Path:
    if not path.is_file():
        raise ModelFileError(f"model file from {where} does not exist: {path}")
    return path


def _how_to_supply(model: ModelFile, reason: str) -> str:
    path = f"pass its path ({model.option} PATH) or " if model.option else ""
    return (
        f"cannot get {model.name}: {reason}. Download it from {model.url} "
        f"({model.algorithm} {model.sha256}) and {path}set ${model.env_var}, or put it in {cache_dir()}."
    )
