"""Give each face a track id across frames: a constant-velocity Kalman filter per face, matched by IoU.

This is SORT's idea in a few dozen lines (no extra dependency): predict where every
known face moved, pair predictions with the new detections by overlap, start
tentative tracks for the unpaired detections, and end tracks that went unseen for
too long. Between detection frames (``--detect-every N``) the prediction alone
carries the boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from maskwatch.boxes import Box, iou

# Noise proportional to the box height, as in DeepSORT: a 200 px face near the camera moves
# and jitters in more pixels than a 30 px face far away, and the filter should trust both alike.
POSITION_NOISE = 1.0 / 20.0
VELOCITY_NOISE = 1.0 / 160.0


def _to_measurement(box: Sequence[float]) -> np.ndarray:
    x1, y1, x2, y2 = (float(v) for v in box)
    return np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1])


class BoxFilter:
    """Kalman filter over (cx, cy, w, h) and their velocities, one step per video frame."""

    def __init__(self, box: Sequence[float]) -> None:
        z = _to_measurement(box)
        self.state = np.concatenate([z, np.zeros(4)])
        h = max(z[3], 1.0)
        # Position is known to the detector's precision; velocity is unknown at first.
        std = np.array([2 * POSITION_NOISE * h] * 4 + [10 * VELOCITY_NOISE * h] * 4)
        self.covariance = np.diag(std**2)
        self._measure = np.eye(4, 8)

    def predict(self, steps: float = 1.0) -> None:
        """Move the box ``steps`` frames ahead at its current velocity."""
        motion = np.eye(8)
        motion[:4, 4:] = steps * np.eye(4)
        h = max(self.state[3], 1.0)
        std = np.array([POSITION_NOISE * h] * 4 + [VELOCITY_NOISE * h] * 4)
        self.state = motion @ self.state
        self.covariance = motion @ self.covariance @ motion.T + np.diag(std**2) * steps
        self.state[2:4] = np.maximum(self.state[2:4], 1.0)  # a box never shrinks to nothing

    def update(self, box: Sequence[float]) -> None:
        """Correct the estimate with a detected box."""
        z = _to_measurement(box)
        h = max(z[3], 1.0)
        noise = np.diag(np.full(4, (POSITION_NOISE * h) ** 2))
        projected = self._measure @ self.covariance @ self._measure.T + noise
        gain = self.covariance @ self._measure.T @ np.linalg.inv(projected)
        self.state = self.state + gain @ (z - self._measure @ self.state)
        self.covariance = (np.eye(8) - gain @ self._measure) @ self.covariance

    @property
    def box(self) -> Box:
        cx, cy, w, h = self.state[:4]
        return (float(cx - w / 2), float(cy - h / 2), float(cx + w / 2), float(cy + h / 2))


@dataclass
class Track:
    """One face followed over time."""

    track_id: int
    filter: BoxFilter
    hits: int = 1  # detections matched to this track
    unseen: int = 0  # frames since the last matched detection
    confirmed: bool = False
    age: int = 0  # frames since the track started

    @property
    def box(self) -> Box:
        return self.filter.box


@dataclass
class TrackerUpdate:
    """What one detection round did: the track of each detection (same order) and the tracks that ended."""

    tracks: list[Track]
    ended: list[Track] = field(default_factory=list)


class IoUTracker:
    """Match detections to tracks by IoU with the tracks' predicted boxes.

    ``min_hits`` detections make a track confirmed (a person, not a flicker of the
    detector); a confirmed track survives ``max_unseen`` frames without a detection,
    a tentative one ends at its first miss.
    """

    def __init__(self, iou_threshold: float = 0.25, min_hits: int = 3, max_unseen: int = 30) -> None:
        self.iou_threshold = iou_threshold
        self.min_hits = min_hits
        self.max_unseen = max_unseen
        self.tracks: list[Track] = []
        self._next_id = 1

    def predict(self, steps: int = 1) -> None:
        """Advance every track by ``steps`` frames (more than one when frames were dropped)."""
        for track in self.tracks:
            track.filter.predict(steps)
            track.unseen += steps
            track.age += steps

    def update(self, boxes: Sequence[Sequence[float]]) -> TrackerUpdate:
        """Assign ``boxes`` (detections of the current frame, after ``predict``) to tracks."""
        pairs = self._match(boxes)
        assigned: list[Track | None] = [None] * len(boxes)
        for t, d in pairs:
            track = self.tracks[t]
            track.filter.update(boxes[d])
            track.hits += 1
            track.unseen = 0
            track.confirmed = track.confirmed or track.hits >= self.min_hits
            assigned[d] = track
        matched = {t for t, _ in pairs}
        ended = [track for i, track in enumerate(self.tracks) if i not in matched and self._expired(track)]
        ended_ids = {track.track_id for track in ended}
        self.tracks = [track for track in self.tracks if track.track_id not in ended_ids]
        for d, box in enumerate(boxes):
            if assigned[d] is None:
                assigned[d] = self._start(box)
        return TrackerUpdate(tracks=[track for track in assigned if track is not None], ended=ended)

    def _expired(self, track: Track) -> bool:
        # A tentative track that misses a detection was most likely a false detection.
        return not track.confirmed or track.unseen > self.max_unseen

    def _start(self, box: Sequence[float]) -> Track:
        track = Track(track_id=self._next_id, filter=BoxFilter(box), confirmed=self.min_hits <= 1)
        self._next_id += 1
        self.tracks.append(track)
        return track

    def _match(self, boxes: Sequence[Sequence[float]]) -> list[tuple[int, int]]:
        """Greedy matching, best overlap first: faces rarely overlap, so it agrees with the optimal one."""
        if not self.tracks or not boxes:
            return []
        predicted = [track.box for track in self.tracks]
        overlaps = np.array([[iou(p, b) for b in boxes] for p in predicted])
        pairs: list[tuple[int, int]] = []
        used_tracks: set[int] = set()
        used_boxes: set[int] = set()
        for flat in np.argsort(-overlaps, axis=None):
            t, d = divmod(int(flat), len(boxes))
            if overlaps[t, d] < self.iou_threshold:
                break
            if t not in used_tracks and d not in used_boxes:
                pairs.append((t, d))
                used_tracks.add(t)
                used_boxes.add(d)
        return pairs
