"""``maskwatch watch`` on a generated clip of real faces: tracks, counts, events, webhook, blurred output."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from video_http import Receiver
from video_scenes import HEIGHT, WIDTH, Clip, owner, three_people

from maskwatch.faces import YuNetDetector
from maskwatch.synthetic import iou

FACE_KEYS = {"box", "score", "landmarks", "label", "mask_probability", "probabilities"}


def watch(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "maskwatch.cli", "watch", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, yunet_path: Path) -> dict[str, Any]:
    """One full run with every output on; the tests below each check one promise of it."""
    folder = tmp_path_factory.mktemp("watch")
    clip = three_people(folder, yunet_path)
    receiver = Receiver()
    try:
        result = watch(str(clip.path), "--json", str(folder / "frames.jsonl"), "--events", str(folder / "events.jsonl"),
                       "--out", str(folder / "out.mp4"), "--blur-faces", "--alert-after", "1",
                       "--webhook", receiver.url)
    finally:
        receiver.close()
    assert result.returncode == 0, result.stderr
    read = lambda name: [json.loads(line) for line in (folder / name).read_text().splitlines()]  # noqa: E731
    return {"clip": clip, "frames": read("frames.jsonl"), "events": read("events.jsonl"), "folder": folder,
            "received": receiver.bodies, "stderr": result.stderr}


def faces_by_walker(clip: Clip, lines: list[dict]) -> dict[int, list[dict]]:
    found: dict[int, list[dict]] = defaultdict(list)
    for line in lines:
        for face in line["faces"]:
            walker = owner(clip.walkers, line["frame"], face["box"])
            if walker is not None:
                found[walker].append({**face, "frame": line["frame"]})
    return found


def test_file_input_drops_no_frames(run: dict[str, Any]) -> None:
    lines = run["frames"]
    assert [line["frame"] for line in lines] == list(range(run["clip"].frames))
    assert lines[30]["time"] == pytest.approx(1.0)
    for line in lines:
        assert {"frame", "time", "faces"} <= set(line)
        for face in line["faces"]:
            assert set(face) >= FACE_KEYS and isinstance(face["track_id"], int)


def test_one_track_id_per_moving_face(run: dict[str, Any]) -> None:
    clip = run["clip"]
    by_walker = faces_by_walker(clip, run["frames"])
    ids = {}
    for i, walker in enumerate(clip.walkers):
        confirmed = [face for face in by_walker[i] if face["confirmed"]]
        track_ids = {face["track_id"] for face in confirmed}
        assert len(track_ids) == 1, f"walker {i} got tracks {track_ids}"
        ids[i] = track_ids.pop()
        # Followed for (nearly) its whole time in view, not only a stretch of it.
        assert len({face["frame"] for face in by_walker[i]}) >= 0.9 * (walker.end - walker.start)
    assert len(set(ids.values())) == len(clip.walkers)
    unmatched = [face for line in run["frames"] for face in line["faces"]
                 if owner(clip.walkers, line["frame"], face["box"]) is None]
    assert unmatched == []  # no ghost faces on the backdrop


def test_smoothed_label_is_steady_and_right(run: dict[str, Any]) -> None:
    clip = run["clip"]
    for i, faces in faces_by_walker(clip, run["frames"]).items():
        assert {face["smoothed_label"] for face in faces} == {clip.walkers[i].face.label}


def test_people_counted_once_each(run: dict[str, Any]) -> None:
    (end,) = [event for event in run["events"] if event["type"] == "stream_end"]
    assert (end["people_seen"], end["with_mask"], end["without_mask"]) == (3, 1, 2)
    assert end["frames"] == run["clip"].frames and end["dropped"] == 0 and end["corrupt"] == 0
    assert end["compliance"] == pytest.approx(1 / 3, abs=1e-3)
    assert "people 3: 1 with mask, 2 without" in run["stderr"]


def test_bare_face_that_stays_fires_exactly_one_alert(run: dict[str, Any]) -> None:
    clip = run["clip"]
    alerts = [event for event in run["events"] if event["type"] == "no_mask_alert"]
    # A is bare for 2.5 s: one alert. B is bare for 0.83 s, under --alert-after 1: none.
    assert len(alerts) == 1, alerts
    (alert,) = alerts
    a_track = {face["track_id"] for face in faces_by_walker(clip, run["frames"])[0] if face["confirmed"]}
    assert {alert["track_id"]} == a_track
    assert alert["duration"] >= 1.0 and 1.0 <= alert["time"] < 2.5
    assert alert["source"] == str(clip.path)


def test_webhook_received_every_event(run: dict[str, Any]) -> None:
    assert run["received"] == run["events"]


def red_pixels(image: np.ndarray) -> int:
    b, g, r = (image[..., c].astype(int) for c in range(3))
    return int(((r > 150) & (g < 100) & (b < 100)).sum())


def test_output_video_is_readable_blurred_and_labelled(run: dict[str, Any], yunet_path: Path) -> None:
    clip = run["clip"]
    capture = cv2.VideoCapture(str(run["folder"] / "out.mp4"))
    written = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        written.append(image)
    capture.release()
    assert len(written) == clip.frames and written[0].shape == (HEIGHT, WIDTH, 3)
    detector = YuNetDetector(yunet_path, extra_scales=())
    source = cv2.VideoCapture(str(clip.path))
    originals = [source.read()[1] for _ in range(clip.frames)]
    source.release()
    frames = range(0, clip.frames, 10)
    seen = lambda image, f: sum(any(iou(w.box(f), d.box) > 0.3 for d in detector.detect(image))  # noqa: E731
                                for w in clip.walkers if w.box(f) is not None)
    assert sum(seen(originals[f], f) for f in frames) >= 15  # the faces are there to find...
    assert sum(seen(written[f], f) for f in frames) == 0  # ...and blurred past recognition
    # Labels are still drawn: A is bare, so a red box and a filled red label (above or under it).
    frame = 30
    (a_face,) = [face for face in run["frames"][frame]["faces"] if owner(clip.walkers, frame, face["box"]) == 0]
    assert red_pixels(around(written[frame], a_face["box"])) > 200
    assert red_pixels(around(originals[frame], a_face["box"])) < 20


def around(image: np.ndarray, box: list[float], reach: int = 16) -> np.ndarray:
    """A copy of the band ``reach`` px above and below ``box`` (box edges included, inside blanked)."""
    x1, y1, x2, y2 = (round(v) for v in box)
    band = image[max(0, y1 - reach):y2 + reach, max(0, x1 - 2):x2 + 3].copy()
    top, left = y1 - max(0, y1 - reach), x1 - max(0, x1 - 2)
    band[top + 2:top + (y2 - y1) - 1, left + 2:left + (x2 - x1) - 1] = 0
    return band


def test_detect_every_third_frame_tracks_in_between(run: dict[str, Any], yunet_path: Path) -> None:
    """In-process, with the detector on frames 0, 3, 6...: predicted boxes follow the faces in between."""
    from maskwatch.video.analyzer import VideoAnalyzer
    from maskwatch.video.models import video_detector
    from maskwatch.video.runner import StreamWatcher, WatchOutputs
    from maskwatch.video.source import VideoSource, parse_source

    clip = run["clip"]
    lines: list[dict] = []
    sink = type("Sink", (), {"write": lambda self, text: lines.append(json.loads(text)), "flush": lambda self: None})
    source = VideoSource(parse_source(str(clip.path)))
    source.open()
    try:
        watcher = StreamWatcher(VideoAnalyzer(video_detector(face_model=yunet_path), detect_every=3),
                                WatchOutputs(json=sink()), alert_after=1.0)
        watcher.run(source, threading.Event())
    finally:
        source.close()
    assert [line["detected"] for line in lines] == [frame % 3 == 0 for frame in range(clip.frames)]
    predicted = [face for line in lines if not line["detected"] for face in line["faces"]]
    assert predicted and all(face["predicted"] for face in predicted)
    by_walker = faces_by_walker(clip, lines)
    for i, walker in enumerate(clip.walkers):
        assert len({face["track_id"] for face in by_walker[i] if face["confirmed"]}) == 1
        assert len({face["frame"] for face in by_walker[i]}) >= 0.85 * (walker.end - walker.start)
    # Faces nobody owns: only a predicted box coasting a frame or two after its person left the scene.
    ends = {walker.end for walker in clip.walkers}
    for line in lines:
        for face in line["faces"]:
            if owner(clip.walkers, line["frame"], face["box"]) is None:
                assert face["predicted"] and any(0 <= line["frame"] - end < 2 for end in ends), line
    assert (watcher.stats.people_seen, watcher.stats.with_mask) == (3, 1)


def test_detect_ahead_close_ends_a_thread_waiting_on_a_stalled_source() -> None:
    from maskwatch.video.runner import DetectAhead

    halt = threading.Event()

    def stalled() -> Iterator:  # like source.frames(stop, halt) on a live source that sends nothing
        while not halt.wait(0.05):
            pass
        yield from ()

    ahead = DetectAhead(analyzer=None, frames=stalled(), stop=halt)  # type: ignore[arg-type]
    ahead._thread.start()
    ahead.close()
    assert halt.is_set() and not ahead._thread.is_alive()
