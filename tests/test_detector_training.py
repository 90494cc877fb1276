"""Training maskwatch's own YuNet: the PyTorch graph matches the stock file, export round-trips, the loss
assigns faces, training runs end to end on a few scene photos, and the shipped file is the one described."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402

from maskwatch.model_files import sha256_of  # noqa: E402
from maskwatch.training.detector.loss import Target, decode_boxes, detection_loss, priors, sim_ota  # noqa: E402
from maskwatch.training.detector.yunet_net import YuNetNet  # noqa: E402

ASTRONAUT = ROOT / "examples" / "astronaut.jpg"


def _input(size: int = 640) -> np.ndarray:
    image = cv2.resize(cv2.imread(str(ASTRONAUT)), (size, size)).astype(np.float32)
    return image.transpose(2, 0, 1)[None].copy()


def _onnx_outputs(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: x}), strict=True))


def test_graph_matches_the_stock_file(yunet_path: Path) -> None:
    net = YuNetNet.from_onnx(yunet_path).eval()
    x = _input()
    reference = _onnx_outputs(yunet_path, x)
    with torch.no_grad():
        outputs = net(torch.from_numpy(x))
    for head in ("cls", "obj", "bbox", "kps"):
        for level, stride in enumerate((8, 16, 32)):
            ours = outputs[head][level]
            ours = ours.sigmoid() if head in ("cls", "obj") else ours
            np.testing.assert_allclose(ours.numpy(), reference[f"{head}_{stride}"], atol=2e-5)


def test_stock_weights_round_trip_exactly(yunet_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "round_trip.onnx"
    YuNetNet.from_onnx(yunet_path).to_onnx(yunet_path, out, {"maskwatch.kind": "face_detector"})
    x = _input()
    stock, ours = _onnx_outputs(yunet_path, x), _onnx_outputs(out, x)
    assert list(stock) == list(ours)  # the same output names, in the same order
    for name in stock:
        np.testing.assert_array_equal(stock[name], ours[name])
    image = cv2.imread(str(ASTRONAUT))
    found = []
    for path in (yunet_path, out):
        detector = cv2.FaceDetectorYN.create(str(path), "", (image.shape[1], image.shape[0]), 0.5)
        found.append(detector.detect(image)[1])
    np.testing.assert_array_equal(found[0], found[1])
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props} == {"maskwatch.kind": "face_detector"}


def test_decoding_matches_opencv(yunet_path: Path) -> None:
    """Our priors and box decoding read the outputs the way cv2.FaceDetectorYN does."""
    net = YuNetNet.from_onnx(yunet_path).eval()
    x = _input()
    with torch.no_grad():
        outputs = net(torch.from_numpy(x))
    prior = priors(640, 640)
    scores = (torch.cat(outputs["cls"], 1).sigmoid() * torch.cat(outputs["obj"], 1).sigmoid())[0, :, 0].sqrt()
    boxes = decode_boxes(prior, torch.cat(outputs["bbox"], 1)[0])
    best = int(scores.argmax())
    detector = cv2.FaceDetectorYN.create(str(yunet_path), "", (640, 640), 0.5)
    faces = detector.detect(x[0].transpose(1, 2, 0).astype(np.uint8))[1]
    top = faces[np.argmax(faces[:, -1])]
    x1, y1, x2, y2 = boxes[best].tolist()
    np.testing.assert_allclose([x1, y1, x2 - x1, y2 - y1], top[:4], atol=0.5)
    assert float(scores[best]) == pytest.approx(float(top[-1]), abs=1e-4)


def test_sim_ota_gives_every_face_priors_and_the_loss_learns() -> None:
    prior = priors(128, 128)
    gt = torch.tensor([[10.0, 10.0, 40.0, 44.0], [70.0, 60.0, 120.0, 120.0]])
    scores = torch.full((len(prior),), 0.1)
    boxes = torch.cat([prior[:, :2] - 8, prior[:, :2] + 8], 1)  # 16 px boxes around each prior
    assigned = sim_ota(prior, scores, boxes, gt)
    assert set(assigned[assigned >= 0].tolist()) == {0, 1}
    # Every positive's prior centre lies near its face (inside it or within 2.5 strides of its centre).
    for index in (assigned >= 0).nonzero().squeeze(1).tolist():
        face = gt[assigned[index]]
        centre = prior[index, :2] + prior[index, 2] / 2
        assert face[0] - 2.5 * prior[index, 2] <= centre[0] <= face[2] + 2.5 * prior[index, 2]
    # No face: nothing assigned, and the loss is objectness only.
    assert (sim_ota(prior, scores, boxes, gt[:0]) < 0).all()
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(3, 16, 1)
    image = torch.rand(1, 3, 128, 128)
    target = [Target(gt, torch.zeros(2, 5, 2), torch.zeros(2), torch.zeros(0, 4))]
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)

    def outputs() -> dict[str, list[torch.Tensor]]:
        levels = [layer(torch.nn.functional.avg_pool2d(image, s)) for s in (8, 16, 32)]
        flat = [lv.permute(0, 2, 3, 1).reshape(1, -1, 16) for lv in levels]
        return {"cls": [f[..., :1] for f in flat], "obj": [f[..., 1:2] for f in flat],
                "bbox": [f[..., 2:6] for f in flat], "kps": [f[..., 6:16] for f in flat]}

    first = sum(detection_loss(outputs(), target, 128, 128).values())
    for _ in range(30):
        loss = sum(detection_loss(outputs(), target, 128, 128).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.8 * first.item()


def test_train_detector_options_do_not_share_a_destination() -> None:
    from maskwatch.cli import make_parser

    args = make_parser().parse_args(["train-detector", "scenes", "--out", "run"])
    assert (args.distill_landmarks, args.distill, args.keep_stock_faces, args.align_boxes) == (True, 0.0, False, False)
    args = make_parser().parse_args(["train-detector", "scenes", "--out", "run", "--no-distill", "--distill", "1"])
    assert (args.distill_landmarks, args.distill) == (False, 1.0)


def test_box_styles_are_measured_and_moved_into_the_reference_style(tmp_path: Path) -> None:
    from maskwatch.training.detector.box_style import (
        MIN_MATCHES,
        BoxStyle,
        align_box_styles,
        measure_box_styles,
        reference_source,
    )
    from maskwatch.training.detector.data import DetectorSample

    rng = np.random.default_rng(0)
    drawn = {"big": BoxStyle(0.0, 0.05, 0.8, 0.75), "ruler": BoxStyle(0.0, -0.06, 1.02, 1.07)}
    samples, detected = [], {}
    for i in range(3 * MIN_MATCHES):
        source = "big" if i % 3 == 0 else "ruler"  # "ruler" has twice the faces: it is the reference
        x, y, size = rng.uniform(0, 400), rng.uniform(0, 400), rng.uniform(30, 120)
        boxes = np.array([[x, y, x + size, y + size * 1.25]], np.float32)
        image = tmp_path / f"{i}.jpg"
        samples.append(DetectorSample(image, boxes, ["with_mask"], "train", source))
        detected[image] = drawn[source].apply(boxes)  # what a detector sees there, whoever drew the box

    def detect(sample: DetectorSample) -> np.ndarray:
        return detected[sample.image]

    styles = measure_box_styles(samples, detect)
    assert reference_source(styles) == "ruler"
    for source, style in drawn.items():
        measured = styles[source]
        assert np.allclose([measured.dx, measured.dy, measured.sw, measured.sh],
                           [style.dx, style.dy, style.sw, style.sh], atol=1e-4)
    aligned = align_box_styles(samples, styles, "ruler")
    assert all(a.boxes is s.boxes for a, s in zip(aligned, samples, strict=True) if s.source == "ruler")
    after = measure_box_styles(aligned, detect)["big"]  # the big boxes now relate to the detector as ruler's do
    assert np.allclose([after.dy, after.sw, after.sh], [-0.06, 1.02, 1.07], atol=1e-4)
    assert align_box_styles(samples, styles, None) == samples


def test_scene_samples_know_their_source(tmp_path: Path) -> None:
    from conftest import scene_subset

    from maskwatch.training.detector.data import scan_scene_boxes

    samples = scan_scene_boxes(scene_subset(tmp_path / "scenes", per_split=2), "train")
    assert len(samples) == 2
    assert all(s.source.startswith("scenes:") and "@" in s.source for s in samples)


def test_train_detector_end_to_end(yunet_path: Path, tmp_path: Path) -> None:
    from conftest import portrait_subset, scene_subset

    scenes = scene_subset(tmp_path / "scenes", per_split=8)
    portraits = portrait_subset(tmp_path / "portraits")
    out = tmp_path / "run"
    command = [sys.executable, "-m", "maskwatch.cli", "train-detector", str(scenes), "--out", str(out),
               "--base-model", str(yunet_path), "--limit", "8", "--epochs", "1", "--batch-size", "4",
               "--crop-size", "256", "--quiet", "--threads", "2", "--align-boxes",
               "--paste-faces", str(portraits), "--paste-probability", "1", "--ema", "0.9", "--decoys", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    model = out / "face_detector.onnx"
    image = cv2.imread(str(ASTRONAUT))
    detector = cv2.FaceDetectorYN.create(str(model), "", (image.shape[1], image.shape[0]), 0.5)
    assert detector.detect(image)[1] is not None  # loads unchanged in OpenCV, and still finds the face
    metadata = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    assert metadata["maskwatch.kind"] == "face_detector"
    assert metadata["maskwatch.base_model_sha256"] == sha256_of(yunet_path)
    figures = json.loads(metadata["maskwatch.val_figures"])["scenes"]
    assert figures["images"] == 2 and figures["score_threshold"] == float(metadata["maskwatch.score_threshold"])
    assert json.loads(metadata["maskwatch.photo_extra_scales"]) in ([], [2.0])
    assert (metadata["maskwatch.mirror_extra_passes"], metadata["maskwatch.extra_pass_max_face"]) == ("false", "48")
    report = json.loads((out / "detector_report.json").read_text())
    assert report["train_images"] == 8 and len(report["history"]) == 2
    assert report["box_styles"] and all(source.startswith("scenes:") for source in report["box_styles"])
    pasted = json.loads(metadata["maskwatch.pasted_faces"])
    assert pasted["from"] == ["portraits"] and pasted["faces"] == report["pasted_faces"]
    assert set(report["pasted_faces"]) == {"with_mask", "without_mask"}
    assert sum(report["pasted_faces"].values()) <= 0.7 * 24  # the train split's faces only
    training = json.loads(metadata["maskwatch.training"])
    assert training["ema"] == 0.9 and training["decoys"] == 2
    assert "Chosen: extra passes" in (out / "detector_val.md").read_text()


def test_the_moving_average_follows_the_weights_with_a_ramped_decay(yunet_path: Path) -> None:
    import math

    import torch

    from maskwatch.training.detector.train import EMA_RAMP_STEPS, _moving_average
    from maskwatch.training.detector.yunet_net import YuNetNet

    net = YuNetNet.from_onnx(yunet_path)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    average = _moving_average(net, 0.99)
    average.update_parameters(net)  # the first update copies the weights
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(1.0)
    for _ in range(2):
        average.update_parameters(net)
    keep = 0.99 * (1 - math.exp(-1 / EMA_RAMP_STEPS))
    moved = 1 - keep  # after the second update, then the third moves by (1 - keep2) of what is left
    keep2 = 0.99 * (1 - math.exp(-2 / EMA_RAMP_STEPS))
    moved = moved + (1 - moved) * (1 - keep2)
    name, first = next(iter(start.items()))
    averaged = average.module.state_dict()[name]
    assert torch.allclose(averaged, first + moved, atol=1e-5)
    assert 0.0 < moved < 1.0 and not torch.allclose(averaged, net.state_dict()[name])


def test_pasted_faces_come_from_the_train_split_and_land_beside_the_annotated_ones(yunet_path: Path,
                                                                                    tmp_path: Path) -> None:
    from conftest import portrait_subset

    from maskwatch.faces.yunet import YuNetDetector
    from maskwatch.training.detector.data import View
    from maskwatch.training.detector.pasted import PASTE_HEIGHTS, paste_faces, portrait_faces
    from maskwatch.training.face_cache import split_portraits

    root = portrait_subset(tmp_path / "portraits")
    faces = portrait_faces(root, yunet_path, cache_folder=tmp_path / "cache")
    samples, cache = split_portraits(root, YuNetDetector(yunet_path, extra_scales=()), tmp_path / "cache")
    train_crops = {cache.load(s.sha256).tobytes() for s in samples if s.split == "train"}
    assert faces and all(face.crop.tobytes() in train_crops for face in faces)
    for face in faces:  # the box sits inside the crop, around the face the detector found
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 <= face.crop.shape[1] and 0 <= y1 < y2 <= face.crop.shape[0]
        assert (x2 - x1) > 0.5 * face.crop.shape[1] or (y2 - y1) > 0.5 * face.crop.shape[0]

    rng = np.random.default_rng(0)
    annotated = np.array([[100, 100, 200, 220]], np.float32)
    ignored = np.array([[300, 40, 306, 47]], np.float32)
    view = View(np.full((480, 480, 3), 114, np.uint8), annotated, ignored)
    added = 0
    for _ in range(20):
        pasted = paste_faces(view, faces, rng)
        assert np.array_equal(pasted.faces[:1], annotated) and np.array_equal(pasted.ignore, ignored)
        for box in pasted.faces[1:]:
            height = box[3] - box[1]
            assert PASTE_HEIGHTS[0] - 1 <= height <= PASTE_HEIGHTS[1] + 1
            x1, y1, x2, y2 = box.astype(int)
            assert pasted.image[y1:y2, x1:x2].std() > 0  # a face is there, not the flat canvas
            assert not (x1 < 200 and x2 > 100 and y1 < 220 and y2 > 100)  # beside the annotated face
        added += len(pasted.faces) - 1
    assert added >= 20  # 1-4 a view


def test_decoys_are_face_free_patches_of_the_view_pasted_unboxed() -> None:
    from maskwatch.training.detector.data import View
    from maskwatch.training.detector.pasted import PortraitFace, paste_faces

    # a flat portrait face, and a view whose face-free left half is red and right half holds the one face
    face = PortraitFace(np.full((160, 160, 3), 200, np.uint8), np.array([40, 40, 120, 120], np.float32),
                        "with_mask")
    image = np.zeros((480, 480, 3), np.uint8)
    image[:, :240] = (0, 0, 255)
    image[100:220, 300:400] = (0, 255, 0)
    annotated = np.array([[300, 100, 400, 220]], np.float32)
    view = View(image, annotated, np.zeros((0, 4), np.float32))
    red_outside = 0
    for seed in range(30):  # the same seed pastes the same faces, then the decoys
        plain = paste_faces(view, [face], np.random.default_rng(seed))
        decoyed = paste_faces(view, [face], np.random.default_rng(seed), decoys=3)
        assert np.array_equal(decoyed.image[100:220, 300:400], image[100:220, 300:400])  # the face untouched
        assert len(decoyed.faces) == len(plain.faces)  # decoys add no box
        green = (decoyed.image[:, :, 1] > 128) & (decoyed.image[:, :, 2] < 128)
        assert green.sum() == (image[:, :, 1] > 128).sum()  # never cut from the face
        red = (decoyed.image[:, 240:, 2] > 128) & (decoyed.image[:, 240:, 1] < 128)
        red_outside += int(red.sum() > 0)
    assert red_outside > 0  # background patches do land elsewhere
