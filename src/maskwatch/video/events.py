"""Events of a stream: alerts for faces that stay without a mask, and source outages; a JSON-lines log."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any, TextIO

from maskwatch.labels import is_compliant
from maskwatch.video.analyzer import FrameResult

NO_MASK_ALERT = "no_mask_alert"
SOURCE_RECONNECTED = "source_reconnected"
STREAM_END = "stream_end"
STATS = "stats"  # the counters so far, every --stats-every seconds of stream time


def make_event(kind: str, time: float, **fields: Any) -> dict[str, Any]:
    """One event: its type, the stream time in seconds, the wall-clock time, and ``fields``."""
    return {"type": kind, "time": round(time, 3), "wall_time": datetime.now(timezone.utc).isoformat(), **fields}


class NoMaskAlerts:
    """Fire once when a confirmed track has been without a correctly worn mask (smoothed ``without_mask`` or
    ``incorrect_mask``) for ``alert_after`` seconds; the event's ``label`` says which it is now.

    The clock starts at the first frame the track is seen non-compliant, so the few frames a
    track needs to be confirmed count too. Putting a mask on properly re-arms the alert.
    """

    def __init__(self, alert_after: float) -> None:
        self.alert_after = alert_after
        self._bare_since: dict[int, float] = {}
        self._alerted: set[int] = set()

    def update(self, result: FrameResult) -> list[dict[str, Any]]:
        events = []
        for face in result.faces:
            track_id = face.track_id
            if is_compliant(face.smoothed_label):
                self._bare_since.pop(track_id, None)
                self._alerted.discard(track_id)
                continue
            since = self._bare_since.setdefault(track_id, result.time)
            duration = result.time - since
            if face.confirmed and duration >= self.alert_after and track_id not in self._alerted:
                self._alerted.add(track_id)
                events.append(make_event(
                    NO_MASK_ALERT, result.time, frame=result.frame, track_id=track_id,
                    duration=round(duration, 3), box=[round(float(v), 1) for v in face.face.box],
                    label=face.smoothed_label,
                    smoothed_mask_probability=round(face.smoothed_probability, 4),
                ))
        for track_id in result.ended:
            self._bare_since.pop(track_id, None)
            self._alerted.discard(track_id)
        return events

    def skip(self, seconds: float) -> None:
        """Leave ``seconds`` of stream time unseen (a source outage) out of every clock: a person may not
        be alerted on for time no frame showed them."""
        for track_id in self._bare_since:
            self._bare_since[track_id] += seconds


class EventLog:
    """Append events as JSON lines, flushed one by one so a crash loses none that were reported."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.count = 0
        self._lock = threading.Lock()

    def write(self, event: dict[str, Any]) -> None:
        with self._lock:
            self.stream.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.stream.flush()
            self.count += 1


class EventQueue:
    """The bounded queue a network sink (webhook, MQTT) keeps between the video loop and its sender thread.

    ``send`` never blocks on the network: when the queue is full the oldest event goes, and after ``close``
    (``_closing``) nothing more is taken; both are counted in ``dropped``. Subclasses own the sender thread.
    """

    def __init__(self, name: str, max_queue: int) -> None:
        self.name = name
        # Once close() has returned, every event sent is in exactly one of these three counters.
        self.delivered = 0
        self.failed = 0  # could not be delivered, or still undelivered when close() gave up
        self.dropped = 0  # pushed out of the full queue, or sent after close()
        self._queue: deque[dict[str, Any]] = deque(maxlen=max_queue)
        self._cond = threading.Condition()
        self._closing = False

    def pending(self) -> int:
        """Events taken but neither delivered, failed nor dropped yet (the subclass's sender holds some)."""
        return len(self._queue)

    @property
    def sent(self) -> int:
        """Events handed to ``send``."""
        return self.delivered + self.failed + self.dropped + self.pending()

    @property
    def complete(self) -> bool:
        """Every event sent so far was delivered."""
        return self.delivered == self.sent

    def send(self, event: dict[str, Any]) -> bool:
        """Queue ``event``; never blocks on the network. False (and counted as dropped) after ``close()``."""
        with self._cond:
            if self._closing:
                self.dropped += 1
                logging.getLogger("maskwatch.video").warning(
                    "%s: a %s event sent after close() is dropped", self.name, event.get("type", "?"))
                return False
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1  # deque(maxlen) pushes the oldest out on append
            self._queue.append(event)
            self._cond.notify_all()
        return True
