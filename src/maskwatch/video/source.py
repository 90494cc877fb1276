"""Read frames from a video file, a webcam or a network stream in a thread of their own.

Decoding runs ahead of the analysis through a bounded queue. A file never loses a
frame: the reader waits for room. A live source (webcam, RTSP/HTTP stream) must
not fall behind real time: when the queue is full the oldest frame is dropped,
counted, and the analysis always gets the freshest one. A live source that goes
away is reopened with exponential back-off; unreadable frames are skipped and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from maskwatch.inputs import printable_name, utf8_name_problem

log = logging.getLogger("maskwatch.video")

# Schemes handed to FFmpeg. Anything else (file:, concat:, subfile:, ...) is refused, so a
# source string can only name a stream or an existing file, never an FFmpeg trick.
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
# Consecutive failed reads that mean "the stream ended" rather than "one bad frame".
FILE_READ_FAILURES = 25
LIVE_READ_FAILURES = 3
# A live source that came back counts as well again once it has run this long: a loss before that goes on
# with the back-off of the last one, so a camera that flaps is retried ever more slowly (up to the longest
# delay) and does not storm its receivers with events.
STABLE_SECONDS = 30.0
# The frame rate assumed for a live source that gives none, to turn an outage into the frames it cost.
ASSUMED_LIVE_FPS = 25.0
# Frames decoded ahead of the analysis: a live source keeps this tiny so frames stay fresh.
FILE_QUEUE = 8
LIVE_QUEUE = 2
# A file (or a stream read as one) that ends this many frames short of the count its header declares was cut:
# a truncated AVI read 33 of its 60 frames and used to end with exit 0 and no word. One frame (or 1%) of
# slack, because some containers estimate their count from the duration.
MISSING_FRAMES_SLACK = 0.01


class SourceError(RuntimeError):
    """A source that cannot be opened or read; the message says why."""


@dataclass(frozen=True)
class SourceSpec:
    """What to open and how to read it."""

    target: str | int  # a path, a URL, or a webcam index
    live: bool
    live_given: bool = False  # --live / --no-live was given: never guess

    @property
    def network(self) -> bool:
        return isinstance(self.target, str) and len(urlsplit(self.target).scheme) > 1

    @property
    def name(self) -> str:
        """How logs and events name the source: never with the password of a camera URL."""
        if isinstance(self.target, int):
            return f"webcam {self.target}"
        return redact(self.target)


def redact(url: str) -> str:
    """``url`` with any user name and password replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.scheme or "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def parse_source(text: str, live: bool | None = None) -> SourceSpec:
    """Turn a command-line SOURCE into a spec: a webcam index, a stream URL, or an existing file.

    ``live`` overrides the guess (a URL is live, a file is not), e.g. to read a video
    served over HTTP as a file: every frame, no reconnection.
    """
    given = live is not None
    # A webcam index is ASCII digits ("²" is a digit to str.isdigit, not to int); a video file named so is
    # given as ./12345 (open() says so when the webcam fails and such a file is there).
    if text.isascii() and text.isdigit():
        return SourceSpec(int(text), True if live is None else live, given)
    parts = urlsplit(text)
    if len(parts.scheme) > 1:  # one letter is a Windows drive, not a scheme
        if parts.scheme.lower() not in LIVE_SCHEMES:
            raise SourceError(f"unsupported source {redact(text)!r}: use a file, a webcam index, or one of "
                              f"{', '.join(s + '://' for s in LIVE_SCHEMES)}")
        if not parts.hostname:
            raise SourceError(f"source URL has no host: {redact(text)!r}")
        return SourceSpec(text, True if live is None else live, given)
    path = Path(text)
    if path.is_dir():
        raise SourceError(f"{text} is a folder, not a video file (maskwatch batch takes folders)")
    if not path.is_file():
        raise SourceError(f"no such video file: {printable_name(text)}")
    if problem := utf8_name_problem(text):  # OpenCV would crash on it
        raise SourceError(problem)
    return SourceSpec(str(path), False if live is None else live, given)


@dataclass
class Frame:
    index: int  # position in the stream; gaps mean dropped or unreadable frames
    time: float  # seconds: position in a file, or time since the stream was opened
    image: np.ndarray  # BGR
    decoded_at: float  # time.monotonic() when it was decoded, for latency
    analysed_at: float = 0.0  # time.monotonic() when the analysis took it from the queue


@dataclass
class Gap:
    """A stretch of a live stream lost between a failure and the reconnection."""

    lost_at: float  # stream time
    restored_at: float
    attempts: int

    @property
    def seconds(self) -> float:
        return self.restored_at - self.lost_at


class VideoSource:
    """Open ``spec``, then iterate ``frames()`` while a thread decodes ahead.

    ``reconnect_attempts`` bounds how often a lost live source is reopened (0: forever);
    ``loop`` replays a file from the start when it ends (demos, soak tests).
    """

    def __init__(
        self,
        spec: SourceSpec,
        *,
        loop: bool = False,
        timeout: float = 10.0,
        reconnect_delay: float = 1.0,
        max_reconnect_delay: float = 30.0,
        reconnect_attempts: int = 0,
        max_pixels: int | None = None,
        queue_size: int | None = None,
    ) -> None:
        self.spec = spec
        self.loop = loop
        self.timeout = timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnect_delay = max_reconnect_delay
        self.reconnect_attempts = reconnect_attempts
        self.max_pixels = max_pixels
        self.fps = 0.0
        self.size = (0, 0)
        self.decoded = 0  # frames decoded (those dropped as stale included)
        self.dropped = 0  # stale live frames dropped because the analysis lagged
        self.corrupt = 0  # unreadable frames skipped
        self.lost = False  # a live source that did not come back
        self.error: str | None = None
        self._queue: queue.Queue[Frame] = queue.Queue(queue_size or (LIVE_QUEUE if spec.live else FILE_QUEUE))
        self._gaps: list[Gap] = []
        self._gaps_lock = threading.Lock()
        self._stop = threading.Event()
        self._finished = threading.Event()
        self._capture: cv2.VideoCapture | None = None
        self._thread: threading.Thread | None = None
        self._index = 0
        self._pass_start = 0  # index of the first frame of the current pass through a file
        self._started = 0.0
        self._last_frame_at = 0.0  # stream time of the last frame read: where an outage starts
        # A live source's back-off: it carries over to the next loss while the stream has not stayed up for
        # STABLE_SECONDS, so a camera that flaps is retried ever more slowly.
        self._delay = reconnect_delay
        self._restored_at: float | None = None

    # -- the consumer's side --------------------------------------------------------------

    def open(self) -> None:
        """Open the source and decode its first frame; raise SourceError if either fails."""
        self._started = time.monotonic()
        self._capture = self._open_capture()
        if self._capture is None:
            target = self.spec.target
            hint = f" (to read the file named {target}, give ./{target})" if (
                isinstance(target, int) and Path(str(target)).is_file()) else ""
            raise SourceError(f"cannot open {self.spec.name}{hint}")
        self._read_declared_files_as_files()
        first = self._read_first()
        height, width = first.shape[:2]
        if self.max_pixels and width * height > self.max_pixels:
            self._capture.release()
            raise SourceError(f"{self.spec.name}: {width}x{height} frames exceed --max-pixels {self.max_pixels:,}")
        self.size = (width, height)
        self.fps = self._capture_fps(self._capture)
        self._emit(first)
        self._thread = threading.Thread(target=self._run, name="maskwatch-reader", daemon=True)
        self._thread.start()

    def frames(self, *stops: threading.Event | None) -> Iterator[Frame]:
        """Frames in order until the source ends, fails for good, or any of ``stops`` is set."""
        while not any(stop is not None and stop.is_set() for stop in stops):
            try:
                yield self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._finished.is_set() and self._queue.empty():
                    return

    def pop_gaps(self) -> list[Gap]:
        """Outages of a live source since the last call."""
        with self._gaps_lock:
            gaps, self._gaps = self._gaps, []
        return gaps

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # A reconnection attempt can take an open timeout plus a read timeout before it sees the stop;
            # the reader thread releases its capture itself on the way out.
            self._thread.join(timeout=2 * self.timeout + 1.0)
        if self._capture is not None and (self._thread is None or not self._thread.is_alive()):
            self._capture.release()

    def _read_declared_files_as_files(self) -> None:
        """A URL whose container declares a frame count is a file served over HTTP, not a camera: read every
        frame once and stop at its end. As live, it was reopened at its end and replayed for ever."""
        assert self._capture is not None
        declared = _declared_frames(self._capture)
        if not (self.spec.live and self.spec.network and not self.spec.live_given and declared > 0):
            return
        log.info("%s declares %d frames: reading it as a file (every frame, no reconnection; --live to "
                 "force a live stream)", self.spec.name, declared)
        self.spec = dataclasses.replace(self.spec, live=False)
        if self._queue.maxsize == LIVE_QUEUE:
            self._queue = queue.Queue(FILE_QUEUE)

    # -- the reader thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._read_until_end()
                if not self._restart():
                    break
        except Exception as exc:  # the consumer must hear of any failure, not wait forever
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("reading %s failed", self.spec.name)
        finally:
            if self._capture is not None:  # also one a reconnection opened just as stop was set
                self._capture.release()
            self._finished.set()

    def _read_until_end(self) -> None:
        """Read and queue frames until the stream ends."""
        assert self._capture is not None
        frame_count = 0 if self.spec.live else _declared_frames(self._capture)
        limit = LIVE_READ_FAILURES if self.spec.live else FILE_READ_FAILURES
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            ok, image = self._capture.read()
            if not ok and self._stalled(time.monotonic() - started):
                break
            if ok and _usable(image):
                if failures:  # bad frames followed by a good one: they were corrupt, not the end
                    self.corrupt += failures
                    log.warning("%s: skipped %d unreadable frame(s) before frame %d", self.spec.name, failures,
                                self._index)
                failures = 0
                self._emit(image)
                continue
            failures += 1
            self._index += 1
            if failures >= limit or (frame_count and self._index - self._pass_start >= frame_count):
                self._index -= failures  # the failed reads at the end were no frames
                break
        if not self._stop.is_set() and self.error is None:
            self._check_complete(frame_count)

    def _stalled(self, waited: float) -> bool:
        """A network source read as a file whose read failed after waiting out --timeout: it stalled, and
        waiting FILE_READ_FAILURES more times (minutes) would only hide the cut. Records the error."""
        if self.spec.live or not self.spec.network or waited < 0.9 * self.timeout:
            return False
        self.error = (f"{self.spec.name}: no data for {self.timeout:g} s after frame {self._index}; "
                      "the stream stalled before its end")
        log.info("%s", self.error)  # the caller reports it (watch: at the end, once)
        return True

    def _check_complete(self, frame_count: int) -> None:
        """A file that ended well short of the frame count its header declares was cut: say so (exit 1)."""
        seen = self._index - self._pass_start
        if not frame_count or frame_count - seen <= max(1, frame_count * MISSING_FRAMES_SLACK):
            return
        self.error = (f"{self.spec.name} ended after {seen} of the {frame_count} frames it declares: "
                      "the file is truncated or the stream was cut")
        log.info("%s", self.error)  # the caller reports it (watch: at the end, once)

    def _restart(self) -> bool:
        """After the stream ended: replay, reconnect, or stop (False)."""
        assert self._capture is not None
        self._capture.release()
        if self._stop.is_set() or self.error is not None:  # a cut file is not replayed
            return False
        if self.spec.live:
            return self._reconnect()
        if self.loop and self._index > self._pass_start:  # a pass without a frame would spin forever
            self._pass_start = self._index
            self._capture = self._open_capture()
            return self._capture is not None
        return False

    def _reconnect(self) -> bool:
        """Reopen a lost live source with exponential back-off; True once it delivers a frame again.

        The outage starts at the last frame read (the wait for --timeout is part of it), and the frame
        numbers skip the frames it cost, as for dropped frames (so tracks end as they would have). A stream
        that comes back but drops again within STABLE_SECONDS of frames goes on with the delay it had;
        ``reconnect_attempts`` counts the attempts of one outage.
        """
        lost_at = self._last_frame_at
        log.warning("%s: stream lost at %.1f s; reconnecting", self.spec.name, lost_at)
        if self._restored_at is None or lost_at - self._restored_at >= STABLE_SECONDS:
            self._delay = self.reconnect_delay
        attempt, delay = 0, self._delay
        while not self.reconnect_attempts or attempt < self.reconnect_attempts:
            if self._stop.wait(delay):
                return False
            attempt += 1
            capture = self._open_capture()
            if self._stop.is_set():  # stopped while it was opening: do not keep it
                if capture is not None:
                    capture.release()
                return False
            # A server that accepts the connection but sends no frame has not come back.
            ok, image = capture.read() if capture is not None else (False, None)
            if capture is not None and ok and image is not None and _usable(image):
                height, width = image.shape[:2]
                if self.max_pixels and width * height > self.max_pixels:  # as open() refuses it
                    capture.release()
                    self.error = (f"{self.spec.name}: came back with {width}x{height} frames, over --max-pixels "
                                  f"{self.max_pixels:,}")
                    log.info("%s", self.error)  # the caller reports it (watch: at the end, once)
                    return False
                self._capture = capture
                self._restored_at = self._now()
                self._delay = min(delay * 2, self.max_reconnect_delay)
                gap = Gap(lost_at, self._restored_at, attempt)
                self._index += round(gap.seconds * (self.fps or ASSUMED_LIVE_FPS))  # the frames it cost
                with self._gaps_lock:
                    self._gaps.append(gap)
                log.warning("%s: reconnected after a gap of %.1f s (%d attempt(s))", self.spec.name,
                            gap.seconds, gap.attempts)
                self._emit(image)
                return True
            if capture is not None:
                capture.release()
            delay = min(delay * 2, self.max_reconnect_delay)
        self.lost = True
        log.error("%s: gave up after %d reconnection attempts", self.spec.name, attempt)
        return False

    def _emit(self, image: np.ndarray) -> None:
        frame = Frame(self._index, self._frame_time(), image, time.monotonic())
        self._last_frame_at = frame.time
        self._index += 1
        self.decoded += 1
        if not self.spec.live:
            while not self._stop.is_set():  # files: wait for room, never drop
                try:
                    self._queue.put(frame, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        while True:  # live: make room by dropping the stalest frame
            try:
                self._queue.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self._queue.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    # -- OpenCV -------------------------------------------------------------------------------

    def _open_capture(self) -> cv2.VideoCapture | None:
        target = self.spec.target
        if isinstance(target, int):
            capture = cv2.VideoCapture(target)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # a webcam's own buffer only adds latency
        else:
            ms = int(self.timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            capture = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def _read_first(self) -> np.ndarray:
        assert self._capture is not None
        for failures in range(LIVE_READ_FAILURES if self.spec.live else FILE_READ_FAILURES):
            ok, image = self._capture.read()
            if ok and _usable(image):
                if failures:  # unreadable frames before the first good one: corrupt, as later ones are
                    self.corrupt += failures
                    log.warning("%s: skipped %d unreadable frame(s) at the start", self.spec.name, failures)
                return image
            self._index += 1
        self._capture.release()
        raise SourceError(f"{self.spec.name}: no frame could be decoded")

    @staticmethod
    def _capture_fps(capture: cv2.VideoCapture) -> float:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        return fps if 0.5 <= fps <= 1000.0 else 0.0  # streams often report 0 or nonsense like 90000

    def _frame_time(self) -> float:
        if not self.spec.live and self.fps:
            return self._index / self.fps  # a file's own clock: deterministic, whatever the speed
        return self._now()

    def _now(self) -> float:
        return time.monotonic() - self._started


def _declared_frames(capture: cv2.VideoCapture) -> int:
    """The frame count a container declares; 0 when it declares none (OpenCV gives 0, or a huge negative
    number for a stream of unknown length such as a raw .mjpeg file)."""
    return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0))


def _usable(image: np.ndarray | None) -> bool:
    return image is not None and image.ndim == 3 and image.shape[2] == 3 and image.size > 0
