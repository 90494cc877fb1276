"""The Python API end to end: real YuNet, the shipped classifier, real photos."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from badfiles import write_bad_inputs
from conftest import BARE_JPG, MASKED_JPG, TEST_SPLIT_FACES
from PIL import Image

from maskwatch import FaceResult, ImageError, MaskDetector, Options, detect_masks, load_image
from maskwatch.classifier import DEFAULT_CLASSIFIER_PATH, MaskClassifier


@pytest.mark.parametrize("label", ["with_mask", "without_mask"])
def test_labels_on_held_out_photos(detector: MaskDetector, label: str) -> None:
    for path in TEST_SPLIT_FACES[label]:
        faces = detector.detect(path)
        assert faces, f"no face found in {path.name}"
        best = max(faces, key=lambda f: f.width * f.height)
        assert best.label == label, f"{path.name}: {best.label} p={best.mask_probability:.3f}"


def test_result_fields(detector: MaskDetector) -> None:
    image = load_image(MASKED_JPG)
    (face, *_) = detector.detect(image)
    assert isinstance(face, FaceResult)
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
    assert face.landmarks.shape == (5, 2)
    assert 0.0 <= face.score <= 1.0 and 0.0 <= face.mask_probability <= 1.0
    assert face.label in detector.labels
    assert (face.label == "with_mask") == (face.mask_probability >= detector.mask_threshold)
    assert face.probabilities["with_mask"] == face.mask_probability
    assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    as_dict = face.to_dict()
    assert set(as_dict) == {"box", "score", "landmarks", "label", "mask_probability", "probabilities"}
    assert len(as_dict["box"]) == 4 and len(as_dict["landmarks"]) == 5


def test_path_bytes_and_array_agree(detector: MaskDetector) -> None:
    from_path = detector.detect(BARE_JPG)
    from_str = detector.detect(str(BARE_JPG))
    from_bytes = detector.detect(BARE_JPG.read_bytes())
    from_array = detector.detect(load_image(BARE_JPG))
    with Image.open(BARE_JPG) as opened:
        from_pillow = detector.detect(opened)
    for other in (from_str, from_bytes, from_array, from_pillow):
        assert [f.to_dict() for f in other] == [f.to_dict() for f in from_path]


def test_every_array_entry_point_converts_or_refuses_as_detect_does(detector: MaskDetector) -> None:
    """detect_array, result and the video analyzer take what detect takes, or say clearly what they do not."""
    from maskwatch.video import VideoAnalyzer

    bgr = load_image(BARE_JPG)
    expected = [f.to_dict() for f in detector.detect(bgr)]
    for array in (bgr[:, :, 1], np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)]), bgr.astype(np.float32) / 255,
                  bgr.astype(np.uint16) * 257):
        assert [f.label for f in detector.detect_array(array)] == [f.label for f in detector.detect(array)]
    assert [f.to_dict() for f in detector.result(bgr.astype(np.uint16) * 257, "x").faces] == expected
    frame = VideoAnalyzer(detector).process(0, 0.0, bgr.astype(np.float32) / 255)
    assert [f.face.label for f in frame.faces] == [f.label for f in detector.detect(bgr)]
    for wrong in (str(BARE_JPG), np.zeros((0, 0, 3), np.uint8)):
        with pytest.raises(ImageError):
            detector.detect_array(wrong)  # type: ignore[arg-type]


def test_draw_results_takes_what_detect_takes(detector: MaskDetector) -> None:
    from maskwatch import draw_results

    faces = detector.detect(BARE_JPG)
    expected = draw_results(load_image(BARE_JPG), faces)
    with Image.open(BARE_JPG) as opened:
        for source in (BARE_JPG, str(BARE_JPG), BARE_JPG.read_bytes(), opened):
            assert np.array_equal(draw_results(source, faces), expected)
    gray = load_image(BARE_JPG)[:, :, 0]
    with pytest.raises(ValueError, match="copy=False draws in place"):  # in place cannot convert
        draw_results(gray, faces, copy=False)
    with pytest.raises(ImageError, match="over the limit"):
        draw_results(BARE_JPG, faces, max_pixels=100)


def test_names_and_empty_paths_as_the_cli_gives_them(detector: MaskDetector, tmp_path: Path) -> None:
    import os

    odd = Path(os.fsdecode(bytes(tmp_path) + b"/caf\xe9.jpg"))  # a name that is not UTF-8
    odd.write_bytes(BARE_JPG.read_bytes())
    result, _ = detector.analyze(odd)
    assert result.file.endswith("caf\\xe9.jpg") and result.to_json().encode("utf-8")
    result, image = detector.analyze("")
    assert image is None and "empty path" in (result.error or "")


def test_detect_masks_one_call() -> None:
    faces = detect_masks(str(MASKED_JPG))
    assert faces and faces[0].label == "with_mask"


@pytest.mark.parametrize("changes", [
    {"extra_scales": (-1.0,)}, {"extra_scales": (float("nan"),)}, {"extra_scales": 2.0}, {"extra_scales": (9.0,)},
    {"min_detect_size": 0}, {"min_detect_size": 900, "max_detect_size": 100}, {"two_class": "no"},
    {"threads": 2.5}, {"threads": -1}, {"face_threshold": "0.5"}, {"mask_threshold": 1.5}, {"max_pixels": 0},
    {"extra_pass_max_face": 0}, {"mirror_extra_passes": 1},
])
def test_options_refuse_what_the_command_line_refuses(changes: dict) -> None:
    with pytest.raises(ValueError, match="must be|takes a sequence|is above"):
        Options(**changes)


def test_options_take_a_list_of_scales_and_numpy_numbers() -> None:
    assert Options(extra_scales=[2, 3]).extra_scales == (2, 3)  # hashable, as a frozen options object must be
    assert Options(mask_threshold=np.float32(0.9), threads=np.int64(2)).threads == 2
    whole = Options(max_pixels=50e6, two_class=np.True_)  # type: ignore[arg-type]
    assert whole.max_pixels == 50_000_000 and isinstance(whole.max_pixels, int) and whole.two_class is True
    assert Options.video(detect_size=800.0).min_detect_size == 800  # type: ignore[arg-type]


def test_rotated_phone_photo_is_read_upright(detector: MaskDetector, tmp_path: Path) -> None:
    files = write_bad_inputs(tmp_path, BARE_JPG)
    upright, _ = detector.analyze(BARE_JPG)
    rotated, _ = detector.analyze(files["rotated_exif.jpg"])
    assert (rotated.width, rotated.height) == (upright.width, upright.height)
    assert rotated.faces and upright.faces  # the best face is compared: weak extra ones may differ
    assert np.allclose(rotated.faces[0].box, upright.faces[0].box, atol=6)
    assert rotated.faces[0].label == upright.faces[0].label
    with Image.open(files["rotated_exif.jpg"]) as opened:  # a Pillow image: its EXIF orientation applied too
        assert detector.analyze(opened)[0].to_dict() == {**rotated.to_dict(), "file": ""}


def test_analyze_reports_bad_input_instead_of_raising(detector: MaskDetector, tmp_path: Path) -> None:
    files = write_bad_inputs(tmp_path, BARE_JPG)
    result, image = detector.analyze(files["truncated.jpg"])
    assert image is None and result.error and result.faces == []
    with pytest.raises(ImageError):
        detector.detect(files["not_an_image.jpg"])
    for source, says in [(None, "cannot read a NoneType"), (42, "cannot read a int"),
                         ("a\x00b.jpg", "NUL character"), ("https://example.com/a.jpg", "a URL is not read")]:
        result, image = detector.analyze(source)  # type: ignore[arg-type]
        assert image is None and says in (result.error or ""), source


def test_an_operating_point_out_of_range_is_refused() -> None:
    for value in (-1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="mask_threshold must be between 0 and 1"):
            MaskDetector.from_options(Options.photo(mask_threshold=value))


def test_image_without_faces(detector: MaskDetector) -> None:
    flat = np.full((480, 640, 3), 127, np.uint8)
    assert detector.detect(flat) == []
    assert detector.detect(np.zeros((1, 1, 3), np.uint8)) == []


def test_concurrent_calls_give_the_same_answers(detector: MaskDetector) -> None:
    paths = TEST_SPLIT_FACES["with_mask"][:3] + TEST_SPLIT_FACES["without_mask"][:3]
    expected = {p: [f.to_dict() for f in detector.detect(p)] for p in paths}
    got: dict[Path, list] = {}
    errors: list[BaseException] = []

    def work(path: Path) -> None:
        try:
            got[path] = [f.to_dict() for f in detector.detect(path)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and got == expected


def test_shipped_classifier_metadata() -> None:
    classifier = MaskClassifier()
    assert classifier.path == DEFAULT_CLASSIFIER_PATH
    assert DEFAULT_CLASSIFIER_PATH.stat().st_size <= 20 * 1024 * 1024
    meta = classifier.metadata
    assert meta["labels"] == ["incorrect_mask", "with_mask", "without_mask"]
    # The mean of two fine-tunes' weights (`soup-v11v8`, MODEL_CARD.md) at 160 px, on crops cut by the shipped
    # face model, both on the split it was tested on (named by its fingerprint), each command's configuration kept.
    assert meta["input_size"] == classifier.input_size == 160
    halves = meta["averaged_from"]
    assert [half["weight"] for half in halves] == [0.5, 0.5]
    assert {half["split_fingerprint"] for half in halves} == {meta["split_fingerprint"]}
    assert all(half["maskwatch_train_config"]["input_size"] == 160 for half in halves)
    assert halves[0]["maskwatch_train_config"]["below_nose_views"] == 1  # scenes-v11
    # The paper's protocol (two classes, face-mask test split) at the shipped operating point.
    assert meta["split_counts"]["test"] == meta["test_photos"] == 818
    assert meta["test_two_class_accuracy"] >= 0.985  # 0.9890 (MODEL_CARD.md)
    point = meta["operating_point"]
    assert point["search"]["faces"] == 893  # chosen on the annotated faces of mask-scenes val
    assert classifier.operating_point.mask_threshold == point["mask_threshold"]
    for key in ("input_size", "mean", "std", "crop_margin", "backbone", "data_fingerprint"):
        assert key in meta


def test_wrong_crop_size_is_refused() -> None:
    classifier = MaskClassifier()
    with pytest.raises(ValueError, match="px"):
        classifier.probabilities([np.zeros((10, 10, 3), np.uint8)])


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_crops_are_normalised_as_the_model_file_says(order: str) -> None:
    from maskwatch.classifier.onnx_classifier import normalise

    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (20, 20, 3), dtype=np.uint8) for _ in range(3)]
    mean, std = np.array([120.0, 127.0, 130.0]), np.array([60.0, 128.0, 70.0])
    batch = normalise(crops, mean, std, order)
    assert batch.shape == (3, 3, 20, 20) and batch.dtype == np.float32 and batch.flags.c_contiguous
    channels = [2, 1, 0] if order == "RGB" else [0, 1, 2]  # crops are BGR
    for i, crop in enumerate(crops):
        for c, source in enumerate(channels):
            expected = (crop[:, :, source].astype(np.float64) - mean[c]) / std[c]
            np.testing.assert_allclose(batch[i, c], expected, rtol=1e-6, atol=1e-6)
