"""Per-frame work on a video: detect (every Nth frame), classify, track, and smooth each track's label."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from maskwatch.faces import Face
from maskwatch.images import as_bgr
from maskwatch.pipeline import MaskDetector
from maskwatch.results import FaceResult
from maskwatch.video.smoothing import LabelSmoother, check_smoothing
from maskwatch.video.tracker import Box, IoUTracker

# A tracked face's label is refreshed every 4th frame (0.13 s at 30 fps) by ``maskwatch watch``: the classifier
# costs more than the face detector in a frame with 4 faces (160 px crops: about 6 ms each on 2 cores), and the
# smoothed label needs several refreshes to change anyway. New and uncertain tracks are classified at once.
CLASSIFY_EVERY = 4


@dataclass
class TrackedFace:
    """A face of one frame with its track: the detect-command fields plus the track's view of it."""

    face: FaceResult  # this frame's detection and classification (or the last ones, moved by the tracker)
    track_id: int
    confirmed: bool  # seen often enough to count as a person
    predicted: bool  # box predicted by the tracker on a frame without detection
    smoothed_label: str
    smoothed_probability: float

    def to_dict(self) -> dict[str, Any]:
        data = self.face.to_dict()
        data.update(
            track_id=self.track_id,
            confirmed=self.confirmed,
            predicted=self.predicted,
            smoothed_label=self.smoothed_label,
            smoothed_mask_probability=round(self.smoothed_probability, 4),
        )
        return data

    def display(self) -> FaceResult:
        """The face as it should be drawn: with the steady label, not this frame's."""
        return replace(self.face, label=self.smoothed_label, mask_probability=self.smoothed_probability)


@dataclass
class FrameResult:
    """Everything found in one video frame; ``to_dict`` is one line of ``maskwatch watch`` JSON."""

    frame: int
    time: float  # seconds from the start of the stream
    faces: list[TrackedFace]
    detected: bool  # whether the face detector ran on this frame
    ended: list[int] = field(default_factory=list)  # track ids that ended at this frame

    def to_dict(self) -> dict[str, Any]:
        return {
            "frame": self.frame,
            "time": round(self.time, 3),
            "detected": self.detected,
            "faces": [face.to_dict() for face in self.faces],
        }


@dataclass
class _TrackState:
    smoother: LabelSmoother
    last: FaceResult  # the latest classified detection of this track
    round: int  # detection round in which the track was last matched
    classified: int = 0  # detection round in which the classifier last saw this track


class VideoAnalyzer:
    """Turn frames into ``FrameResult``s, keeping the tracks between calls (one analyzer per stream).

    With ``detect_every`` > 1 the detector and classifier run on every Nth frame only;
    in between, faces seen at the last detection keep their label and follow the
    tracker's prediction.
    """

    def __init__(
        self,
        detector: MaskDetector,
        detect_every: int = 1,
        tracker: IoUTracker | None = None,
        smoothing_alpha: float = 0.3,
        smoothing_margin: float = 0.15,
        classify_every: int = 1,
    ) -> None:
        if detect_every < 1 or classify_every < 1:
            raise ValueError(f"detect_every and classify_every must be >= 1, got {detect_every}, {classify_every}")
        check_smoothing(smoothing_alpha, smoothing_margin)  # now, not at the first face
        self.detector = detector
        self.detect_every = detect_every
        self.classify_every = classify_every
        self.tracker = tracker if tracker is not None else IoUTracker()
        self.smoothing_alpha = smoothing_alpha
        self.smoothing_margin = smoothing_margin
        self._states: dict[int, _TrackState] = {}
        self._frames = 0
        self._round = 0
        self._last_index: int | None = None

    def process(self, index: int, time: float, image: np.ndarray) -> FrameResult:
        """Analyse the frame numbered ``index`` (gaps in numbering = dropped frames) at ``time`` seconds.

        ``image``: a BGR uint8 frame as OpenCV decodes it (other arrays are converted as ``detect`` does)."""
        image = as_bgr(image)
        return self.track(index, time, image, self.find_faces(image))

    # ``process`` in two stages, so a video loop can run the detector on the next frame in one
    # thread while another classifies and tracks this one (see runner.DetectAhead).

    def find_faces(self, image: np.ndarray) -> list[Face] | None:
        """Stage one: the face detector on every Nth frame, None on the others. Call once per frame, in order."""
        run = self._frames % self.detect_every == 0
        self._frames += 1
        return self.detector.faces.detect(image) if run else None

    def track(self, index: int, time: float, image: np.ndarray, faces: list[Face] | None) -> FrameResult:
        """Stage two: classify ``faces`` (None: move the known ones), match them to tracks, smooth labels."""
        steps = 1 if self._last_index is None else max(1, index - self._last_index)
        self._last_index = index
        self.tracker.predict(steps)
        if faces is None:
            return FrameResult(frame=index, time=time, faces=self._coast(), detected=False)
        tracked, ended = self._classify(image, faces)
        return FrameResult(frame=index, time=time, faces=tracked, detected=True, ended=ended)

    def _classify(self, image: np.ndarray, found: list[Face]) -> tuple[list[TrackedFace], list[int]]:
        self._round += 1
        update = self.tracker.update([face.box for face in found])
        ended = [track.track_id for track in update.ended]
        for track_id in ended:
            self._states.pop(track_id, None)
        # The classifier sees new tracks, uncertain ones, and each known track every ``classify_every``
        # rounds; in between a track keeps its last probability on its new box. That halves the cost of
        # a frame with several faces, while detection and tracking still run on every frame.
        due = [i for i, track in enumerate(update.tracks) if self._needs_classifier(track.track_id)]
        fresh = dict(zip(due, self.detector.classify(image, [found[i] for i in due]), strict=True))
        faces = []
        for i, (face, track) in enumerate(zip(found, update.tracks, strict=True)):
            state = self._states.get(track.track_id)
            result = fresh.get(i)
            if result is None and state is not None:
                result = replace(state.last, box=face.box, score=face.score, landmarks=face.landmarks)
            assert result is not None  # new tracks are always due
            if state is None:
                smoother = LabelSmoother(self.detector.operating_point, self.smoothing_alpha, self.smoothing_margin)
                state = self._states[track.track_id] = _TrackState(smoother, result, self._round)
            state.last, state.round = result, self._round
            label = self._steady(state) or result.label
            if i in fresh:
                state.classified = self._round
                label = self.detector.label_of(state.smoother.update(result.probabilities or result.mask_probability))
            faces.append(self._tracked(result, track.track_id, track.confirmed, False, state, label))
        return faces, ended

    def _steady(self, state: _TrackState) -> str | None:
        """The track's smoothed label as results show it (two-class mode folds incorrect_mask in)."""
        return self.detector.label_of(state.smoother.label) if state.smoother.label else None

    def _needs_classifier(self, track_id: int) -> bool:
        state = self._states.get(track_id)
        if state is None or self._round - state.classified >= self.classify_every:
            return True
        return state.smoother.uncertain()

    def _coast(self) -> list[TrackedFace]:
        """Faces of the last detection round, moved to where the tracker predicts them."""
        faces = []
        for track in self.tracker.tracks:
            state = self._states.get(track.track_id)
            if state is None or state.round != self._round:
                continue
            moved = replace(state.last, box=track.box, landmarks=_move(state.last.landmarks, state.last.box, track.box))
            label = self._steady(state) or moved.label
            faces.append(self._tracked(moved, track.track_id, track.confirmed, True, state, label))
        return faces

    @staticmethod
    def _tracked(face: FaceResult, track_id: int, confirmed: bool, predicted: bool, state: _TrackState,
                 label: str) -> TrackedFace:
        probability = state.smoother.probability
        return TrackedFace(
            face=face, track_id=track_id, confirmed=confirmed, predicted=predicted, smoothed_label=label,
            smoothed_probability=float(face.mask_probability if probability is None else probability),
        )


def _move(points: np.ndarray, old: Box, new: Box) -> np.ndarray:
    """Map landmarks from box ``old`` to box ``new`` (shift and scale)."""
    sx = (new[2] - new[0]) / max(old[2] - old[0], 1e-6)
    sy = (new[3] - new[1]) / max(old[3] - old[1], 1e-6)
    moved = np.asarray(points, np.float32).copy()
    moved[:, 0] = new[0] + (moved[:, 0] - old[0]) * sx
    moved[:, 1] = new[1] + (moved[:, 1] - old[1]) * sy
    return moved

