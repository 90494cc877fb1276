"""``maskwatch detect`` as a user runs it: a real process, real files, good and bad mixed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from badfiles import BAD, write_bad_inputs
from conftest import BARE_JPG, MASKED_JPG

from maskwatch.labels import LABELS

CONTRACT_KEYS = {"file", "width", "height", "faces", "error"}
FACE_KEYS = {"box", "score", "landmarks", "label", "mask_probability", "probabilities"}


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskwatch.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("inputs")
    write_bad_inputs(folder / "odd", BARE_JPG)
    shutil.copy(MASKED_JPG, folder / "masked.jpg")
    shutil.copy(BARE_JPG, folder / "bare.jpg")
    return folder


def test_folder_with_bad_files(mixed_folder: Path, tmp_path: Path) -> None:
    result = run_cli("detect", str(mixed_folder), "--out", str(tmp_path / "annotated"), "--quiet")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    files = sorted(p for p in mixed_folder.rglob("*") if p.is_file())
    assert len(lines) == len(files)  # one line per input, bad ones included
    assert result.returncode == 1 and "inputs failed" in result.stderr
    by_name = {Path(line["file"]).name: line for line in lines}
    for line in lines:
        assert set(line) == CONTRACT_KEYS
        for face in line["faces"]:
            assert set(face) == FACE_KEYS
            assert face["label"] in LABELS and set(face["probabilities"]) <= set(LABELS)
    for name in BAD:
        assert by_name[name]["error"], name
        assert by_name[name]["faces"] == []
    assert by_name["masked.jpg"]["error"] is None
    assert [f["label"] for f in by_name["masked.jpg"]["faces"]][:1] == ["with_mask"]
    assert [f["label"] for f in by_name["bare.jpg"]["faces"]][:1] == ["without_mask"]
    assert by_name["rotated_exif.jpg"]["faces"], "EXIF-rotated photo must still show its face"
    written = sorted(p.relative_to(tmp_path / "annotated") for p in (tmp_path / "annotated").rglob("*.jpg"))
    assert Path("masked.jpg") in written and Path("odd/rgba.jpg") in written
    assert len(written) == len(files) - len(BAD)


def test_single_good_file_json_option_and_exit_zero(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    result = run_cli("detect", str(MASKED_JPG), "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    (line,) = [json.loads(x) for x in out.read_text().splitlines()]
    assert line["file"] == str(MASKED_JPG) and line["error"] is None
    assert (line["width"], line["height"]) == (976, 1024)


def test_glob_and_missing_file(mixed_folder: Path) -> None:
    result = run_cli("detect", str(mixed_folder / "*.jpg"), str(mixed_folder / "absent.jpg"),
                     str(mixed_folder / "*.nomatch"), "--quiet")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(x["file"]).name for x in lines] == ["bare.jpg", "masked.jpg", "absent.jpg", "*.nomatch"]
    assert "no such file" in lines[2]["error"]
    assert lines[3]["error"] == f"no file matches {mixed_folder / '*.nomatch'}"
    assert result.returncode == 1


def test_annotated_copies_never_overwrite_an_input(tmp_path: Path) -> None:
    shutil.copy(BARE_JPG, tmp_path / "bare.jpg")
    before = (tmp_path / "bare.jpg").read_bytes()
    result = run_cli("detect", str(tmp_path), "--out", str(tmp_path), "--quiet")  # --out: the photos' own folder
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "bare.jpg").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare-2.jpg", "bare.jpg"]
    assert f"the run reads the input {tmp_path / 'bare.jpg'}; the copy of" in result.stderr


def test_a_broken_link_in_a_folder_gets_its_line(tmp_path: Path) -> None:
    shutil.copy(BARE_JPG, tmp_path / "bare.jpg")
    (tmp_path / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    result = run_cli("detect", str(tmp_path), "--quiet")
    lines = {Path(x["file"]).name: x for x in map(json.loads, result.stdout.splitlines())}
    assert set(lines) == {"bare.jpg", "dangling.jpg"}
    assert lines["dangling.jpg"]["error"].startswith("no such file") and lines["bare.jpg"]["error"] is None
    assert result.returncode == 1


def test_model_options(tmp_path: Path, yunet_path: Path) -> None:
    result = run_cli("detect", str(MASKED_JPG), "--face-model", str(yunet_path), "--face-threshold", "0.99")
    assert result.returncode == 0
    assert json.loads(result.stdout)["faces"] == []  # nothing scores 0.99
    missing = run_cli("detect", str(MASKED_JPG), "--classifier", str(tmp_path / "none.onnx"))
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad_face_model = run_cli("detect", str(MASKED_JPG), "--face-model", str(tmp_path / "none.onnx"))
    assert bad_face_model.returncode == 2 and "does not exist" in bad_face_model.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--unfreeze", "top"], "number of top blocks or 'all'"),
    (["--unfreeze", "0,2"], "train takes one --unfreeze value"),
    (["--painted-views", "-1"], "must not be negative"),
    (["--below-nose-views", "-1"], "must not be negative"),
])
def test_train_refuses_bad_fine_tuning_options(tmp_path: Path, args: list[str], message: str) -> None:
    pytest.importorskip("torch", reason="training needs the train extra")
    result = run_cli("train", str(tmp_path), "--out", str(tmp_path / "run"), *args)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "run").exists()  # refused before any work


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--face-threshold", "-1", "between 0 and 1"),
    ("--face-threshold", "1.5", "between 0 and 1"),
    ("--face-threshold", "nan", "between 0 and 1"),
    ("--max-pixels", "0", "must be at least 1"),
    ("--max-pixels", "-5", "must be at least 1"),
    ("--extra-scales", "abc", "numbers separated by commas"),
    ("--extra-scales", "0.5", "above 1 and at most 8"),
])
def test_bad_model_option_is_a_usage_error(option: str, value: str, message: str) -> None:
    """Refused by the argument parser, naming the option, before any model loads or photo is read."""
    result = run_cli("detect", str(MASKED_JPG), option, value)
    assert result.returncode == 2 and message in result.stderr and option in result.stderr, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert "cannot load the models" not in result.stderr


def test_empty_path_is_an_error_not_the_current_folder(tmp_path: Path) -> None:
    shutil.copy(MASKED_JPG, tmp_path / "masked.jpg")  # what an empty path must not pick up
    result = run_cli("detect", "", "--quiet", cwd=tmp_path)
    (line,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert "empty path" in line["error"] and line["faces"] == [] and line["file"] == ""  # as typed, not "."
    assert result.returncode == 1
