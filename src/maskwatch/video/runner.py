"""The watch loop: frames in, results, drawings, statistics and events out."""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from maskwatch.faces import Face
from maskwatch.outputs.overlay import blur_faces, draw_panel, draw_tracks
from maskwatch.video.analyzer import FrameResult, VideoAnalyzer
from maskwatch.video.events import SOURCE_RECONNECTED, STATS, STREAM_END, EventLog, NoMaskAlerts, make_event
from maskwatch.video.mqtt import MqttSink
from maskwatch.video.source import Frame, Gap, VideoSource
from maskwatch.video.stats import StreamStats
from maskwatch.video.webhook import WebhookSink
from maskwatch.video.writers import OutputError, VideoFileWriter, WindowDisplay

log = logging.getLogger("maskwatch.video")


@dataclass
class WatchOutputs:
    """Every place results may go; None means not wanted."""

    json: TextIO | None = None
    video: VideoFileWriter | None = None
    display: WindowDisplay | None = None
    events: EventLog | None = None
    webhook: WebhookSink | None = None
    mqtt: MqttSink | None = None
    blur_faces: bool = False


class LatencyMeter:
    """Decode-to-output time per frame: the mean of all, percentiles of the latest (bounded memory)."""

    def __init__(self, keep: int = 2000) -> None:
        self.count = 0
        self.total = 0.0
        self.recent: deque[float] = deque(maxlen=keep)

    def add(self, seconds: float) -> None:
        self.count += 1
        self.total += seconds
        self.recent.append(seconds)

    @property
    def mean_ms(self) -> float:
        return 1000 * self.total / self.count if self.count else 0.0

    def percentile_ms(self, q: float) -> float:
        return 1000 * float(np.percentile(list(self.recent), q)) if self.recent else 0.0


@dataclass
class WatchSummary:
    frames: int
    seconds: float
    interrupted: bool
    source_lost: bool
    source_error: str | None
    end_event: dict[str, Any] = field(default_factory=dict)
    output_error: str | None = None  # an output (--json, --events, --out...) failed and the run stopped

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class DetectAhead:
    """Run the face detector (stage one) in its own thread, one frame ahead of classification and tracking.

    YuNet in OpenCV keeps about one core busy whatever its thread count, so on a
    small machine detecting frame N+1 while frame N is classified raises the frame
    rate (2 idle cores, 640x480 with 4 faces: 37 fps instead of 33, mean of 3 runs).
    Frames keep their order; one frame waits between the stages, so this adds at
    most one frame of latency.
    """

    def __init__(self, analyzer: VideoAnalyzer, frames: Iterator[Frame],
                 stop: threading.Event | None = None) -> None:
        self.analyzer = analyzer
        self.frames = frames  # ends when the source does, or when the watch loop's stop (or ``stop``) is set
        self.stop = stop  # set by close(): ends ``frames`` even while it waits for a stalled source
        self.error: BaseException | None = None
        self._closed = threading.Event()
        self._queue: queue.Queue[tuple[Frame, list[Face] | None] | None] = queue.Queue(1)
        self._thread = threading.Thread(target=self._run, name="maskwatch-detect", daemon=True)

    def __iter__(self) -> Iterator[tuple[Frame, list[Face] | None]]:
        self._thread.start()
        while (item := self._queue.get()) is not None:
            yield item
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Stop the thread, also when the consumer quit early (an error, a second Ctrl-C)."""
        self._closed.set()
        if self.stop is not None:
            self.stop.set()
        with contextlib.suppress(queue.Empty):
            self._queue.get_nowait()  # unblock a pending put
        if self._thread.is_alive():
            self._thread.join(timeout=10.0)

    def _run(self) -> None:
        try:
            for frame in self.frames:
                frame.analysed_at = time.monotonic()
                if not self._put((frame, self.analyzer.find_faces(frame.image))):
                    return
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self.error = exc
        finally:
            self._put(None)

    def _put(self, item: tuple[Frame, list[Face] | None] | None) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


class _Sequential:
    """Stage one in the consumer's thread: for comparison (``pipelined=False``) and for debugging."""

    def __init__(self, analyzer: VideoAnalyzer, frames: Iterator[Frame],
                 stop: threading.Event | None = None) -> None:
        self.analyzer = analyzer
        self.frames = frames

    def __iter__(self) -> Iterator[tuple[Frame, list[Face] | None]]:
        for frame in self.frames:
            frame.analysed_at = time.monotonic()
            yield frame, self.analyzer.find_faces(frame.image)

    def close(self) -> None:
        pass


class StreamWatcher:
    """Run one stream through an analyzer and fan the results out to ``outputs``."""

    def __init__(self, analyzer: VideoAnalyzer, outputs: WatchOutputs, alert_after: float = 10.0,
                 window: float = 60.0, source_name: str = "", pipelined: bool = True,
                 stats_every: float = 0.0) -> None:
        self.analyzer = analyzer
        self.pipelined = pipelined
        self.outputs = outputs
        self.stats = StreamStats(window)
        self.alerts = NoMaskAlerts(alert_after)
        self.source_name = source_name
        self.latency = LatencyMeter()  # decoded -> written: includes the wait in the reader's queue
        self.processing = LatencyMeter()  # taken from the reader's queue -> written
        self.alert_count = 0
        self.frames = 0
        self.stats_every = stats_every  # 0: no periodic stats events
        self._next_stats = stats_every

    def run(self, source: VideoSource, stop: threading.Event) -> WatchSummary:
        """Process frames until the source ends or ``stop`` is set (Ctrl-C, the window closed)."""
        started = time.monotonic()
        last_time = 0.0
        stages = DetectAhead if self.pipelined else _Sequential
        halt = threading.Event()  # set when the stages close: the frames stop, whatever ``stop`` says
        ahead = stages(self.analyzer, source.frames(stop, halt), stop=halt)
        output_error: str | None = None
        interrupted = False  # by the user (Ctrl-C, the window closed), not by an output that failed
        try:
            for frame, faces in ahead:
                self.handle(frame, source.pop_gaps(), stop, faces)
                last_time = frame.time
        except (OutputError, OSError) as exc:  # disk full, a broken pipe, a video file that cannot be written
            output_error = f"{exc}" if isinstance(exc, OutputError) else f"cannot write output: {exc}"
            interrupted = stop.is_set()
            stop.set()  # the source's reader thread ends too
        finally:
            ahead.close()
        interrupted = interrupted or (output_error is None and stop.is_set())
        seconds = time.monotonic() - started
        end = make_event(
            STREAM_END, last_time, frames=self.frames, decoded=source.decoded, dropped=source.dropped,
            corrupt=source.corrupt, interrupted=interrupted, source_lost=source.lost, source_error=source.error,
            alerts=self.alert_count, **self.stats.to_dict(),
            fps=round(self.frames / seconds, 2) if seconds > 0 else 0.0,
            latency_ms={"mean": round(self.latency.mean_ms, 1), "p95": round(self.latency.percentile_ms(95), 1)},
            processing_ms={"mean": round(self.processing.mean_ms, 1),
                           "p95": round(self.processing.percentile_ms(95), 1)},
        )
        if output_error is None:
            self.emit(end)
            return WatchSummary(self.frames, seconds, interrupted, source.lost, source.error, end)
        end["output_error"] = output_error
        self.emit(end, best_effort=True)  # the outputs still working get the end of the stream
        return WatchSummary(self.frames, seconds, interrupted, source.lost, source.error, end, output_error)

    def handle(self, frame: Frame, gaps: list[Gap], stop: threading.Event,
               faces: list[Face] | None = None) -> FrameResult:
        """Analyse one frame (whose stage one found ``faces``) and write it everywhere it should go."""
        result = self.analyzer.track(frame.index, frame.time, frame.image, faces)
        self.stats.update(result)
        for gap in gaps:
            self.alerts.skip(gap.seconds)
            self.emit(make_event(SOURCE_RECONNECTED, gap.restored_at, gap_seconds=round(gap.seconds, 3),
                                 lost_at=round(gap.lost_at, 3), attempts=gap.attempts))
        for event in self.alerts.update(result):
            self.alert_count += 1
            self.emit(event)
        if self.outputs.json is not None:
            self.outputs.json.write(json.dumps(result.to_dict()) + "\n")
            self.outputs.json.flush()
        if self.outputs.video is not None or self.outputs.display is not None:
            canvas = self.render(frame.image, result)
            if self.outputs.video is not None:
                self.outputs.video.write(canvas)
            if self.outputs.display is not None and not self.outputs.display.show(canvas):
                stop.set()
        self.frames += 1
        if self.stats_every and frame.time >= self._next_stats:  # by stream time: a file gives the same events
            self.emit(self.stats_event(frame.time))
            self._next_stats = (frame.time // self.stats_every + 1) * self.stats_every
        done = time.monotonic()
        self.latency.add(done - frame.decoded_at)
        self.processing.add(done - (frame.analysed_at or frame.decoded_at))
        return result

    def emit(self, event: dict[str, Any], best_effort: bool = False) -> None:
        """Write ``event`` to the event log, the webhook and MQTT; ``best_effort``: a failing log is skipped."""
        if self.source_name:
            event.setdefault("source", self.source_name)
        if self.outputs.events is not None:
            try:
                self.outputs.events.write(event)
            except (OutputError, OSError):
                if not best_effort:
                    raise
                log.warning("could not write the %s event to the event log", event.get("type", "?"))
        if self.outputs.webhook is not None:
            self.outputs.webhook.send(event)
        if self.outputs.mqtt is not None:
            self.outputs.mqtt.send(event)

    def stats_event(self, at: float) -> dict[str, Any]:
        """The counters so far (people, masks, compliance over the window, frames, alerts): a ``stats`` event."""
        return make_event(STATS, at, frames=self.frames, alerts=self.alert_count, **self.stats.to_dict())

    def render(self, image: np.ndarray, result: FrameResult) -> np.ndarray:
        """The annotated frame: faces (blurred if asked), labels, track ids and the counters."""
        canvas = image.copy()
        if self.outputs.blur_faces:
            blur_faces(canvas, [face.face.box for face in result.faces])
        draw_tracks(canvas, [face.display() for face in result.faces], [face.track_id for face in result.faces],
                    copy=False)
        return draw_panel(canvas, self.panel_lines())

    def panel_lines(self) -> list[str]:
        stats = self.stats
        compliance = stats.compliance
        rate = "-" if compliance is None else f"{compliance:.0%}"
        return [
            f"people {stats.people_seen}: {stats.with_mask} mask, {stats.without_mask} no mask, "
            f"{stats.incorrect_mask} under nose",
            f"compliance (last {stats.window:g} s): {rate}",
        ]
