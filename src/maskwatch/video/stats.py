"""Per-stream counters: people seen (confirmed tracks) by label, and recent compliance.

A mask under the nose (``incorrect_mask``) is not compliant; it is counted apart from ``without_mask``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from maskwatch.labels import INCORRECT_MASK, WITH_MASK, WITHOUT_MASK
from maskwatch.video.analyzer import FrameResult


@dataclass
class _Person:
    label: str
    last_seen: float


class StreamStats:
    """Count each confirmed track once, under its current smoothed label.

    ``compliance`` is the share of people with a mask among those seen in the last
    ``window`` seconds of stream time. Finished tracks are folded into totals, so
    memory stays bounded however long the stream runs.
    """

    def __init__(self, window: float = 60.0) -> None:
        self.window = window
        self.time = 0.0
        self._live: dict[int, _Person] = {}
        self._finished_with = 0
        self._finished_incorrect = 0
        self._finished_without = 0
        self._recent: deque[_Person] = deque()  # finished people, oldest last_seen first

    def update(self, result: FrameResult) -> None:
        self.time = result.time
        for face in result.faces:
            if face.confirmed:
                person = self._live.setdefault(face.track_id, _Person(face.smoothed_label, result.time))
                person.label, person.last_seen = face.smoothed_label, result.time
        for track_id in result.ended:
            if track_id in self._live:
                self._finish(self._live.pop(track_id))
        while self._recent and self._recent[0].last_seen < self.time - self.window:
            self._recent.popleft()

    def _finish(self, person: _Person) -> None:
        if person.label == WITH_MASK:
            self._finished_with += 1
        elif person.label == INCORRECT_MASK:
            self._finished_incorrect += 1
        else:
            self._finished_without += 1
        self._recent.append(person)

    @property
    def people_seen(self) -> int:
        return self._finished_with + self._finished_incorrect + self._finished_without + len(self._live)

    @property
    def with_mask(self) -> int:
        return self._finished_with + sum(p.label == WITH_MASK for p in self._live.values())

    @property
    def incorrect_mask(self) -> int:
        return self._finished_incorrect + sum(p.label == INCORRECT_MASK for p in self._live.values())

    @property
    def without_mask(self) -> int:
        return self.people_seen - self.with_mask - self.incorrect_mask

    @property
    def compliance(self) -> float | None:
        """Share of people with a mask over the window; None before anyone was seen in it."""
        since = self.time - self.window
        recent = [p for p in self._live.values() if p.last_seen >= since] + list(self._recent)
        if not recent:
            return None
        return sum(p.label == WITH_MASK for p in recent) / len(recent)

    def to_dict(self) -> dict[str, Any]:
        compliance = self.compliance
        return {
            "people_seen": self.people_seen,
            WITH_MASK: self.with_mask,
            WITHOUT_MASK: self.without_mask,
            INCORRECT_MASK: self.incorrect_mask,
            "compliance": None if compliance is None else round(compliance, 4),
            "compliance_window": self.window,
        }
