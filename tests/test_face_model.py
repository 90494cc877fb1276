"""The face model maskwatch ships: pinned, described by its own metadata, the default everywhere, and better
than the stock YuNet at what it was trained for (masked faces in real scenes); the stock one stays an option."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SCENES

from maskwatch import MaskDetector, Options
from maskwatch.faces.passes import EXTRA_PASS_MAX_FACE, MultiPassDetector
from maskwatch.faces.yunet import (
    METADATA_EXTRA_PASS_MAX_FACE,
    METADATA_EXTRA_SCALES,
    METADATA_MIRROR_EXTRA_PASSES,
    METADATA_SCORE_THRESHOLD,
    OWN_EXTRA_PASSES,
    SHIPPED_FACE_MODEL,
    SHIPPED_FACE_MODEL_SHA256,
    STOCK_EXTRA_PASSES,
    STOCK_PHOTO_EXTRA_SCALES,
    YUNET,
    YuNetDetector,
    read_face_model_metadata,
)
from maskwatch.model_files import ModelFileError, sha256_of

ASTRONAUT = ROOT / "examples" / "astronaut.jpg"


def test_the_shipped_file_is_pinned_and_describes_itself() -> None:
    assert sha256_of(SHIPPED_FACE_MODEL) == SHIPPED_FACE_MODEL_SHA256
    assert SHIPPED_FACE_MODEL.stat().st_size < 1_000_000  # a few hundred KB
    metadata = read_face_model_metadata(SHIPPED_FACE_MODEL)
    assert metadata["maskwatch.kind"] == "face_detector"
    assert metadata["maskwatch.base_model_sha256"] == YUNET.sha256  # fine-tuned from OpenCV Zoo's file
    assert json.loads(metadata["maskwatch.data"]) == ["mask-scenes"]
    figures = json.loads(metadata["maskwatch.val_figures"])["mask-scenes"]
    assert figures["images"] == 341 and figures["min_face"] == 16
    assert figures["score_threshold"] == float(metadata[METADATA_SCORE_THRESHOLD])
    masked = figures["recall"]["with_mask"]
    bare = figures["recall"]["without_mask"]
    # What README and MODEL_CARD report for it (one pass), against the stock model's photo default on the same
    # photos (masked 0.805 at 24 px and up, 1.45 false faces per image).
    assert masked["24+"]["recall"] >= 0.87 and figures["false_faces_per_image"] <= 0.80
    assert bare["24+"]["recall"] >= 0.88 and figures["face_ap50"] >= 0.81
    # It is the mean of a fine-tuned model's weights and the stock ones (`maskwatch average`), 0.7 / 0.3.
    members = json.loads(metadata["maskwatch.averaged_from"])
    assert [m["weight"] for m in members] == [0.7, 0.3] and members[1]["sha256"] == YUNET.sha256


def test_defaults_come_from_the_model_and_stock_is_one_option_away(yunet_path: Path) -> None:
    shipped = YuNetDetector()
    metadata = read_face_model_metadata(SHIPPED_FACE_MODEL)
    assert shipped.model_path == SHIPPED_FACE_MODEL
    assert shipped.score_threshold == float(metadata[METADATA_SCORE_THRESHOLD])
    assert list(shipped.extra_scales) == json.loads(metadata[METADATA_EXTRA_SCALES])
    # How an extra pass runs (`--extra-scales 2`): the shipped model's file says not mirrored, faces up to 48 px;
    # the stock file says nothing, so mirrored, up to 128 px; an option still wins over the file.
    assert metadata[METADATA_MIRROR_EXTRA_PASSES] == json.dumps(OWN_EXTRA_PASSES["mirror_extra_passes"]) == "false"
    assert float(metadata[METADATA_EXTRA_PASS_MAX_FACE]) == OWN_EXTRA_PASSES["extra_pass_max_face"] == 48
    assert (shipped.mirror_extra_passes, shipped.extra_pass_max_face) == (False, 48)
    chosen = MaskDetector.from_options(Options.photo(mirror_extra_passes=True, extra_pass_max_face=64)).faces
    assert (chosen.mirror_extra_passes, chosen.extra_pass_max_face) == (True, 64)  # type: ignore[attr-defined]
    stock = YuNetDetector("stock")  # $MASKWATCH_FACE_MODEL, the cache or a verified download
    assert sha256_of(stock.model_path) == YUNET.sha256
    assert stock.extra_scales == STOCK_PHOTO_EXTRA_SCALES and stock.score_threshold == 0.5
    assert (stock.mirror_extra_passes, stock.extra_pass_max_face) == (True, EXTRA_PASS_MAX_FACE)
    assert STOCK_EXTRA_PASSES == {"mirror_extra_passes": True, "extra_pass_max_face": EXTRA_PASS_MAX_FACE}
    pipeline = MaskDetector.from_options(Options.photo(face_model="stock"))
    assert pipeline.faces.model_path == stock.model_path  # type: ignore[attr-defined]
    assert MaskDetector().detect(str(ASTRONAUT))  # the default pipeline finds the astronaut with the shipped model


class _OneFaceNet(MultiPassDetector):
    """A net that finds one square face of ``size`` px (at the photo's own scale) at every scale, and counts runs."""

    def __init__(self, size: float, **options: object) -> None:
        super().__init__(0.5, extra_scales=(2.0,), **options)  # type: ignore[arg-type]
        self.size, self.runs = size, 0

    def _run(self, image: np.ndarray) -> np.ndarray:
        self.runs += 1
        scale = image.shape[1] / 640
        row = np.zeros((1, 15), np.float32)
        row[0, :4] = [(320 - self.size / 2) * scale, 100 * scale, self.size * scale, self.size * scale]  # centred
        row[0, 14] = 0.9 if scale > 1 else 0.0  # only the 2x pass sees it
        return row[row[:, 14] >= self.score_threshold]


@pytest.mark.parametrize(("size", "max_face", "kept"), [(40, 48, True), (60, 48, False), (60, 128, True)])
@pytest.mark.parametrize("mirror", [True, False])
def test_an_extra_pass_adds_faces_up_to_its_limit_and_mirrors_when_asked(size: float, max_face: float, kept: bool,
                                                                        mirror: bool) -> None:
    net = _OneFaceNet(size, mirror_extra_passes=mirror, extra_pass_max_face=max_face)
    faces = net.detect(np.zeros((480, 640, 3), np.uint8))
    assert len(faces) == kept
    assert net.runs == (3 if mirror else 2)  # the photo's pass, the 2x pass, and its mirrored copy if asked


@pytest.mark.parametrize("max_face", [0.0, -1.0, float("nan")])
def test_an_extra_pass_limit_must_be_positive(max_face: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        _OneFaceNet(10, extra_pass_max_face=max_face)


@pytest.mark.parametrize(("key", "value"), [(METADATA_MIRROR_EXTRA_PASSES, "True"), (METADATA_MIRROR_EXTRA_PASSES, "1"),
                                            (METADATA_EXTRA_PASS_MAX_FACE, "abc"), (METADATA_EXTRA_PASS_MAX_FACE, "0"),
                                            (METADATA_EXTRA_PASS_MAX_FACE, "Infinity"),
                                            (METADATA_EXTRA_PASS_MAX_FACE, "true")])
def test_a_malformed_extra_pass_entry_is_refused_by_name(key: str, value: str, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(SHIPPED_FACE_MODEL))
    next(p for p in model.metadata_props if p.key == key).value = value
    onnx.save(model, str(tmp_path / "face_detector.onnx"))
    with pytest.raises(ModelFileError, match=f"{key} is '{value}'"):
        YuNetDetector(tmp_path / "face_detector.onnx")


@pytest.mark.parametrize("threshold", [-1.0, 1.5, float("nan")])
def test_a_face_threshold_outside_0_to_1_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        YuNetDetector(score_threshold=threshold)
    with pytest.raises(ValueError, match="between 0 and 1"):
        MaskDetector.from_options(Options.photo(face_threshold=threshold))


def test_a_damaged_packaged_model_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import maskwatch.faces.yunet as yunet

    damaged = tmp_path / "face_detector.onnx"
    shutil.copy(SHIPPED_FACE_MODEL, damaged)
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0xFF
    damaged.write_bytes(bytes(data))
    monkeypatch.setattr(yunet, "SHIPPED_FACE_MODEL", damaged)
    with pytest.raises(ModelFileError, match="pinned sha256"):
        YuNetDetector()
    monkeypatch.setattr(yunet, "SHIPPED_FACE_MODEL", tmp_path / "gone.onnx")
    with pytest.raises(ModelFileError, match="missing"):
        YuNetDetector()


@pytest.mark.skipif(not SCENES.is_dir(), reason="needs mask-scenes: set MASKWATCH_SHARED")
def test_it_finds_more_masked_faces_than_the_stock_model(yunet_path: Path) -> None:
    from maskwatch.evaluation.detector import evaluate_detector

    results = [evaluate_detector(SCENES, YuNetDetector(model, extra_scales=()), split="val", limit=60)
               for model in (None, yunet_path)]
    masked = [r["recall"]["with_mask"]["all"]["recall"] for r in results]
    bare = [r["recall"]["without_mask"]["all"]["recall"] for r in results]
    assert masked[0] >= masked[1] + 0.05 and bare[0] >= bare[1] - 0.02


@pytest.mark.skipif(not SCENES.is_dir(), reason="needs mask-scenes: set MASKWATCH_SHARED")
def test_a_lower_overlap_shows_the_misses_that_are_box_style() -> None:
    from maskwatch.evaluation.detector import sweep_thresholds

    detector = YuNetDetector()
    strict, loose = (sweep_thresholds(SCENES, detector, [0.5], split="val", limit=40, iou_threshold=iou)[0]
                     for iou in (0.5, 0.3))
    assert (strict["iou_threshold"], loose["iou_threshold"]) == (0.5, 0.3)
    # The same detections: an overlap of 0.3 finds every face 0.5 finds and more, and leaves fewer false faces.
    assert loose["found"] > strict["found"] and loose["false_faces"] < strict["false_faces"]


def test_evaluate_faces_only_scores_the_detector_alone(tmp_path: Path) -> None:
    from conftest import scene_subset
    from test_cli import run_cli

    scenes = scene_subset(tmp_path / "scenes", per_split=6, splits=("val",))
    out = tmp_path / "faces.json"
    done = run_cli("evaluate", "--scenes", str(scenes), "--split", "val", "--faces-only", "--min-face", "16",
                   "--json", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "face AP@0.5" in done.stdout and "recall 24+ px" in done.stdout
    result = json.loads(out.read_text())
    assert result["images"] == 6 and 0 < result["found"] <= result["faces"]
    assert set(result["recall"]) == {"with_mask", "without_mask", "mask_weared_incorrect"}
    assert result["score_threshold"] == YuNetDetector().score_threshold
    by_source = result["recall_by_source"]  # from the manifest's source_repo column; they add up to the whole
    assert by_source and all("@" in source for source in by_source)
    assert sum(cells[name]["all"]["found"] for cells in by_source.values() for name in cells) == result["found"]
    assert "Recall by source" in done.stdout
    stock = run_cli("evaluate", "--scenes", str(scenes), "--faces-only", "--face-model", "stock", "--quiet")
    assert stock.returncode == 0 and "face_detection_yunet_2023mar.onnx" in stock.stdout
    wrong = run_cli("evaluate", "--faces", str(scenes), "--faces-only")
    assert wrong.returncode == 2 and "--faces-only goes with --scenes" in wrong.stderr


def test_the_onnxruntime_engine_gives_opencvs_rows(yunet_path: Path) -> None:
    import cv2
    import numpy as np

    from maskwatch import load_image

    images = [load_image(ASTRONAUT), cv2.resize(load_image(ASTRONAUT), (333, 517))]
    if SCENES.is_dir():
        images += [load_image(p) for p in sorted((SCENES / "images").glob("*.jpg"))[:6]]
    fast, reference = YuNetDetector(extra_scales=()), YuNetDetector(extra_scales=(), engine="opencv")
    assert (fast.engine, reference.engine) == ("onnxruntime", "opencv")
    for image in images:
        ours, theirs = fast.detect(image), reference.detect(image)
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=0.05)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.05)
            assert a.score == pytest.approx(b.score, abs=1e-4)
    assert YuNetDetector(yunet_path).engine == "opencv"  # the stock file fixes its input size
    with pytest.raises(ModelFileError, match="fixes its input size"):
        YuNetDetector(yunet_path, engine="onnxruntime")
