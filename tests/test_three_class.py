"""The third class (``incorrect_mask``: a mask below the nose) through the rule, the API, the CLI and video.

A fixed ONNX classifier (``fixed_classifier.py``) answers the same probabilities for every face, so each
entry point can be held to an exact label; the real YuNet finds the faces in real photos.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import BARE_JPG, MASKED_JPG
from fixed_classifier import write_fixed_classifier

from maskwatch import INCORRECT_MASK, WITH_MASK, WITHOUT_MASK, MaskDetector, Options
from maskwatch.classifier.decision import OperatingPoint
from maskwatch.evaluation.common import DEFAULT_LABEL_MAP, map_label, parse_label_map
from maskwatch.labels import canonical_label, two_class
from maskwatch.outputs import draw_results
from maskwatch.outputs.annotate import label_confidence
from maskwatch.results import FaceResult
from maskwatch.training.operating_point import choose_operating_point
from maskwatch.video.analyzer import FrameResult, TrackedFace
from maskwatch.video.events import NoMaskAlerts
from maskwatch.video.smoothing import LabelSmoother
from maskwatch.video.stats import StreamStats

LABELS = ["incorrect_mask", "with_mask", "without_mask"]
UNDER_NOSE = {"incorrect_mask": 0.7, "with_mask": 0.2, "without_mask": 0.1}


@pytest.fixture(scope="module")
def under_nose_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixed_classifier(tmp_path_factory.mktemp("fixed") / "under_nose.onnx", UNDER_NOSE)


def test_the_rule_cuts_mask_first_then_shares_the_rest() -> None:
    p = np.array([[0.1, 0.85, 0.05],   # P(with) 0.85
                  [0.3, 0.6, 0.1],     # rest 0.4: incorrect holds 0.75 of it
                  [0.1, 0.3, 0.6]])    # incorrect holds 1/7 of the rest
    assert OperatingPoint(0.5, 0.5).labels(p, LABELS) == [WITH_MASK, WITH_MASK, WITHOUT_MASK]
    assert OperatingPoint(0.9, 0.5).labels(p, LABELS) == [INCORRECT_MASK, INCORRECT_MASK, WITHOUT_MASK]
    assert OperatingPoint(0.9, 0.8).labels(p, LABELS) == [WITHOUT_MASK, WITHOUT_MASK, WITHOUT_MASK]
    # A two-label model: with_mask at the cut, else the other label.
    two = np.array([[0.7, 0.3], [0.4, 0.6]])
    assert OperatingPoint(0.5).labels(two, ["with_mask", "without_mask"]) == [WITH_MASK, WITHOUT_MASK]
    assert OperatingPoint(0.8).labels(two, ["with_mask", "without_mask"]) == [WITHOUT_MASK, WITHOUT_MASK]


def test_operating_point_search_finds_the_cut_that_separates_the_classes() -> None:
    rng = np.random.default_rng(0)
    # Bare faces score P(with_mask) up to 0.9 (a portrait-trained model's habit); masked ones above 0.93.
    bare = np.c_[rng.uniform(0, 0.05, 200), rng.uniform(0.5, 0.9, 200)]
    masked = np.c_[rng.uniform(0, 0.02, 200), rng.uniform(0.93, 0.99, 200)]
    under = np.c_[rng.uniform(0.3, 0.5, 50), rng.uniform(0.4, 0.6, 50)]
    with_rest = [np.c_[a[:, 0], a[:, 1], 1 - a.sum(1)] for a in (bare, masked, under)]
    probabilities = np.concatenate(with_rest)
    y = np.r_[np.full(200, 2), np.full(200, 1), np.full(50, 0)]
    point, search = choose_operating_point(probabilities, y, LABELS)
    assert 0.9 <= point.mask_threshold <= 0.93
    assert search["chosen_macro_f1"] == 1.0 > search["default_macro_f1"]


def test_label_names_and_maps() -> None:
    assert canonical_label("mask_weared_incorrect") == INCORRECT_MASK
    assert two_class(INCORRECT_MASK) == WITHOUT_MASK and two_class(WITH_MASK) == WITH_MASK
    mapping = parse_label_map([], LABELS)
    assert map_label("mask_weared_incorrect", mapping, LABELS) == INCORRECT_MASK  # a three-class model
    assert map_label("mask_weared_incorrect", mapping, [WITH_MASK, WITHOUT_MASK]) == WITHOUT_MASK  # two
    assert map_label("mask_weared_incorrect", parse_label_map(["mask_weared_incorrect=ignore"], LABELS),
                     LABELS) is None
    assert DEFAULT_LABEL_MAP["mask_weared_incorrect"] == WITHOUT_MASK


def test_api_gives_the_third_class_and_two_class_folds_it(under_nose_model: Path) -> None:
    detector = MaskDetector(classifier=under_nose_model)
    (face,) = detector.detect(str(MASKED_JPG))
    assert face.label == INCORRECT_MASK and not face.has_mask
    assert face.probabilities == pytest.approx(UNDER_NOSE, abs=1e-4)
    assert face.mask_probability == pytest.approx(0.2, abs=1e-4)
    assert face.to_dict()["probabilities"]["incorrect_mask"] == pytest.approx(0.7)
    folded = MaskDetector.from_options(Options(classifier=str(under_nose_model),
                                               two_class=True))
    (face,) = folded.detect(str(MASKED_JPG))
    assert face.label == WITHOUT_MASK and folded.labels == [WITHOUT_MASK, WITH_MASK]
    assert face.probabilities["incorrect_mask"] == pytest.approx(0.7)  # the model's view is still reported
    assert label_confidence(face) == pytest.approx(0.8, abs=1e-4)  # the caption: P(not masked right), not P(bare)
    canvas = np.zeros((int(face.box[3]) + 10, int(face.box[2]) + 10, 3), np.uint8)  # the box lies on it
    drawn = draw_results(canvas, [face])
    assert drawn.any()


def test_threshold_travels_in_the_model_and_an_option_overrides_it(tmp_path: Path) -> None:
    model = write_fixed_classifier(tmp_path / "low_cut.onnx", UNDER_NOSE,
                                   operating_point={"mask_threshold": 0.15, "incorrect_threshold": 0.5})
    assert MaskDetector(classifier=model).detect(str(BARE_JPG))[0].label == WITH_MASK
    overridden = MaskDetector(classifier=model, mask_threshold=0.5)
    assert overridden.detect(str(BARE_JPG))[0].label == INCORRECT_MASK


def run_detect(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskwatch.cli", "detect", "--quiet", *args],
                          capture_output=True, text=True, timeout=120)


def test_cli_prints_the_third_class_and_the_two_class_option(under_nose_model: Path, tmp_path: Path) -> None:
    result = run_detect(str(MASKED_JPG), "--classifier", str(under_nose_model), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    face = largest(json.loads(result.stdout)["faces"])  # the person's face (a hand below it may be found too)
    assert face["label"] == "incorrect_mask" and set(face["probabilities"]) == set(LABELS)
    assert (tmp_path / "out" / MASKED_JPG.with_suffix(".jpg").name).is_file()
    result = run_detect(str(MASKED_JPG), "--classifier", str(under_nose_model), "--two-class")
    face = largest(json.loads(result.stdout)["faces"])
    assert face["label"] == "without_mask"
    refused = run_detect(str(MASKED_JPG), "--mask-threshold", "1.5")
    assert refused.returncode == 2 and "between 0 and 1" in refused.stderr


def largest(faces: list[dict]) -> dict:
    return max(faces, key=lambda f: (f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]))


def tracked(track_id: int, label: str, time: float) -> FrameResult:
    probabilities = {WITH_MASK: 0.9 if label == WITH_MASK else 0.05, INCORRECT_MASK: 0.9 if label == INCORRECT_MASK
                     else 0.05}
    probabilities[WITHOUT_MASK] = 1 - sum(probabilities.values())
    face = FaceResult((0, 0, 10, 10), 0.9, np.zeros((5, 2)), label, probabilities[WITH_MASK], probabilities)
    return FrameResult(int(time * 10), time, [TrackedFace(face, track_id, True, False, label, face.mask_probability)],
                       detected=True)


def test_video_counts_masks_below_the_nose_apart_and_alerts_on_them() -> None:
    stats, alerts = StreamStats(), NoMaskAlerts(alert_after=1.0)
    events = []
    for t in range(3):
        for result in (tracked(1, INCORRECT_MASK, t), tracked(2, WITH_MASK, t), tracked(3, WITHOUT_MASK, t)):
            stats.update(result)
            events += alerts.update(result)
    counts = stats.to_dict()
    assert (counts["with_mask"], counts["without_mask"], counts["incorrect_mask"]) == (1, 1, 1)
    assert counts["compliance"] == pytest.approx(1 / 3, abs=1e-3)
    assert sorted((e["track_id"], e["label"]) for e in events) == [(1, INCORRECT_MASK), (3, WITHOUT_MASK)]


def test_smoother_settles_on_the_third_class_and_holds_through_flicker() -> None:
    smoother = LabelSmoother(OperatingPoint(0.9, 0.5))
    under = {WITH_MASK: 0.3, INCORRECT_MASK: 0.6, WITHOUT_MASK: 0.1}
    bare = {WITH_MASK: 0.3, INCORRECT_MASK: 0.1, WITHOUT_MASK: 0.6}
    assert smoother.update(under) == INCORRECT_MASK
    assert [smoother.update(x) for x in (bare, under, bare)] == [INCORRECT_MASK] * 3  # one odd frame at a time
    labels = [smoother.update(bare) for _ in range(6)]
    assert labels[-1] == WITHOUT_MASK
    masked = {WITH_MASK: 0.99, INCORRECT_MASK: 0.005, WITHOUT_MASK: 0.005}
    assert [smoother.update(masked) for _ in range(12)][-1] == WITH_MASK
    assert smoother.update(0.8) == WITH_MASK  # a bare P(with_mask) is taken too, inside the band


def test_video_analyzer_gives_the_third_class(under_nose_model: Path) -> None:
    from maskwatch.images import load_image
    from maskwatch.video.analyzer import VideoAnalyzer
    from maskwatch.video.models import video_detector

    analyzer = VideoAnalyzer(video_detector(classifier=under_nose_model))
    image = load_image(str(MASKED_JPG))
    results = [analyzer.process(i, i / 10, image) for i in range(4)]
    assert {f.smoothed_label for r in results for f in r.faces} == {INCORRECT_MASK}
    assert results[-1].faces[0].to_dict()["probabilities"]["incorrect_mask"] == pytest.approx(0.7)
