"""Tracker, label smoothing, counters and alerts on hand-made boxes: fast, no models."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from maskwatch.results import WITH_MASK, WITHOUT_MASK, FaceResult
from maskwatch.video.analyzer import FrameResult, TrackedFace
from maskwatch.video.events import NO_MASK_ALERT, NoMaskAlerts
from maskwatch.video.smoothing import LabelSmoother
from maskwatch.video.stats import StreamStats
from maskwatch.video.tracker import IoUTracker


def box_at(x: float, y: float, size: float = 50.0) -> tuple[float, float, float, float]:
    return (x, y, x + size, y + size)


def test_moving_boxes_keep_their_ids_and_crossing_paths_do_not_swap() -> None:
    tracker = IoUTracker(min_hits=3)
    ids: dict[str, set[int]] = {"left": set(), "right": set()}
    for frame in range(40):
        tracker.predict()
        # Two faces 60 px apart vertically, moving in opposite directions at 6 px per frame.
        left, right = box_at(20 + 6 * frame, 40), box_at(260 - 6 * frame, 100)
        update = tracker.update([left, right])
        ids["left"].add(update.tracks[0].track_id)
        ids["right"].add(update.tracks[1].track_id)
    assert len(ids["left"]) == 1 and len(ids["right"]) == 1
    assert ids["left"] != ids["right"]
    assert all(track.confirmed for track in tracker.tracks)


def test_prediction_follows_constant_velocity_between_detections() -> None:
    tracker = IoUTracker(min_hits=1)
    for frame in range(10):
        tracker.predict()
        tracker.update([box_at(10 + 5 * frame, 20)])
    tracker.predict(3)  # three frames without detection
    (track,) = tracker.tracks
    assert track.box[0] == pytest.approx(10 + 5 * 12, abs=2.0)
    assert track.box[1] == pytest.approx(20, abs=1.0)


def test_track_survives_a_short_gap_and_ends_after_max_unseen() -> None:
    tracker = IoUTracker(min_hits=2, max_unseen=5)
    for _ in range(3):
        tracker.predict()
        first = tracker.update([box_at(100, 100)]).tracks[0]
    for _ in range(4):  # missed for 4 frames: still alive
        tracker.predict()
        assert tracker.update([]).ended == []
    tracker.predict()
    assert tracker.update([box_at(100, 100)]).tracks[0].track_id == first.track_id
    ended = []
    for _ in range(7):
        tracker.predict()
        ended += tracker.update([]).ended
    assert [track.track_id for track in ended] == [first.track_id]
    assert tracker.tracks == []


def test_tentative_track_ends_at_first_miss_and_is_never_confirmed() -> None:
    tracker = IoUTracker(min_hits=3)
    tracker.predict()
    flicker = tracker.update([box_at(0, 0)]).tracks[0]
    tracker.predict()
    update = tracker.update([])
    assert update.ended == [flicker] and not flicker.confirmed


def test_smoother_holds_label_through_flicker_and_flips_on_a_real_change() -> None:
    smoother = LabelSmoother(threshold=0.5, alpha=0.3, margin=0.15)
    labels = [smoother.update(p) for p in [0.1, 0.2] + [0.45, 0.6, 0.4, 0.62, 0.48, 0.58] * 3]
    raw = [WITH_MASK if p >= 0.5 else WITHOUT_MASK for p in [0.45, 0.6, 0.4, 0.62, 0.48, 0.58]]
    assert len(set(raw)) == 2  # the input flickers...
    assert set(labels) == {WITHOUT_MASK}  # ...the smoothed label does not
    for _ in range(5):
        smoother.update(0.05)
    assert smoother.update(0.9) == WITHOUT_MASK  # one odd frame (a hand over the mouth) changes nothing
    labels = [smoother.update(0.95) for _ in range(6)]  # the mask goes on
    assert labels[-1] == WITH_MASK


def face(track_id: int, label: str, confirmed: bool = True) -> TrackedFace:
    p = 0.9 if label == WITH_MASK else 0.1
    result = FaceResult(box=(0, 0, 10, 10), score=0.9, landmarks=np.zeros((5, 2)), label=label, mask_probability=p)
    return TrackedFace(result, track_id, confirmed, False, label, p)


def frame(time: float, faces: list[TrackedFace], ended: list[int] | None = None) -> FrameResult:
    return FrameResult(frame=int(time * 10), time=time, faces=faces, detected=True, ended=ended or [])


def test_stats_count_each_person_once_and_window_forgets() -> None:
    stats = StreamStats(window=10.0)
    for t in range(5):  # person 1 bare, person 2 masked, for 5 s; a tentative face never counts
        stats.update(frame(t, [face(1, WITHOUT_MASK), face(2, WITH_MASK), face(3, WITHOUT_MASK, False)]))
    assert (stats.people_seen, stats.with_mask, stats.without_mask) == (2, 1, 1)
    assert stats.compliance == pytest.approx(0.5)
    stats.update(frame(5, [face(2, WITH_MASK)], ended=[1, 3]))
    assert (stats.people_seen, stats.with_mask, stats.without_mask) == (2, 1, 1)
    stats.update(frame(20, [face(2, WITH_MASK)]))  # person 1 was last seen 16 s ago
    assert stats.compliance == pytest.approx(1.0)
    assert stats.to_dict()["people_seen"] == 2


def test_alert_fires_once_per_bare_stretch() -> None:
    alerts = NoMaskAlerts(alert_after=2.0)
    events = []
    for step in range(40):  # 4 s bare at 10 fps
        events += alerts.update(frame(step / 10, [face(7, WITHOUT_MASK), face(8, WITH_MASK)]))
    assert [(e["type"], e["track_id"]) for e in events] == [(NO_MASK_ALERT, 7)]
    assert events[0]["duration"] >= 2.0
    events = alerts.update(frame(4.0, [face(7, WITH_MASK)]))  # mask on: re-armed
    for step in range(41, 70):
        events += alerts.update(frame(step / 10, [face(7, WITHOUT_MASK)]))
    assert len(events) == 1


def test_unconfirmed_bare_face_does_not_alert() -> None:
    alerts = NoMaskAlerts(alert_after=0.5)
    events = [e for step in range(20) for e in alerts.update(frame(step / 10, [face(1, WITHOUT_MASK, False)]))]
    assert events == []


def test_classify_every_reuses_a_tracks_label_between_refreshes(yunet_path: Path) -> None:
    from conftest import BARE_JPG

    from maskwatch.images import load_image
    from maskwatch.video.analyzer import VideoAnalyzer
    from maskwatch.video.models import video_detector

    detector = video_detector(face_model=yunet_path)
    seen: list[int] = []
    classify = detector.classify

    def counting(image: np.ndarray, faces: list) -> list:
        seen.append(len(faces))
        return classify(image, faces)

    detector.classify = counting  # type: ignore[method-assign]
    frame = cv2.resize(load_image(BARE_JPG), (640, 480))
    analyzer = VideoAnalyzer(detector, classify_every=3)
    results = [analyzer.process(i, i / 30, frame) for i in range(7)]
    assert all(len(r.faces) == 1 for r in results)
    assert sum(seen) == 3  # frames 0, 3 and 6: a new track at once, then every third detection
    assert {r.faces[0].track_id for r in results} == {results[0].faces[0].track_id}
    assert all(r.faces[0].smoothed_label == "without_mask" for r in results)


def test_smoothing_settings_are_checked_when_the_analyzer_is_made(yunet_path: Path) -> None:
    from maskwatch import MaskDetector
    from maskwatch.video.analyzer import VideoAnalyzer

    detector = MaskDetector(yunet_path)
    for changes, says in (({"smoothing_alpha": 0}, "alpha"), ({"smoothing_margin": -5}, "margin"),
                          ({"smoothing_margin": 0.6}, "margin")):
        with pytest.raises(ValueError, match=says):  # not at the first frame with a face
            VideoAnalyzer(detector, **changes)


def test_an_outage_is_left_out_of_the_no_mask_clock() -> None:
    """A person seen bare for 4.5 s, then 7.5 s of source outage: no alert at the first frame after it (the
    old clock said 12 s), one once 10 s of frames have shown them bare."""
    alerts = NoMaskAlerts(alert_after=10.0)
    assert not [e for t in (0.0, 2.0, 4.5) for e in alerts.update(frame(t, [face(1, WITHOUT_MASK)]))]
    alerts.skip(7.5)
    assert alerts.update(frame(12.0, [face(1, WITHOUT_MASK)])) == []
    (alert,) = alerts.update(frame(17.5, [face(1, WITHOUT_MASK)]))
    assert alert["duration"] == pytest.approx(10.0)
