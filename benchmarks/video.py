"""Video speed and memory: frames per second, per-frame latency and peak RSS of the watch pipeline.

    python benchmarks/video.py                 # the table: 640x480 and 1280x720, 1/4/16 faces, N=1 and 3
    python benchmarks/video.py --frames 60 --sizes 640x480 --faces 4
    python benchmarks/video.py --minutes 2     # soak: loop a synthetic video, print RSS over time
    python benchmarks/video.py --sizes 640x480 --faces 4 --classifier A.onnx --classifier B.onnx   # side by side

Each clip is written to a temporary file from real photos of the shared data set
(faces 48-80 px high walking across a plain backdrop) and run through the same
code as ``maskwatch watch FILE`` (reader thread, detection, tracking, smoothing,
counters, events, JSON lines to /dev/null), so every frame is processed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from maskwatch.cli.common import positive_int
from maskwatch.pipeline import MaskDetector
from maskwatch.synthetic import iou
from maskwatch.video.analyzer import CLASSIFY_EVERY, VideoAnalyzer
from maskwatch.video.models import video_detector
from maskwatch.video.runner import StreamWatcher, WatchOutputs
from maskwatch.video.source import SourceSpec, VideoSource
from maskwatch.video.synthetic import FacePatch, Walker, background, cut_face, frames, render, write_video
from maskwatch.video.writers import VideoFileWriter

SHARED = Path(os.environ.get("MASKWATCH_SHARED", Path(__file__).resolve().parent.parent.parent / "shared"))
DATA = SHARED / "datasets" / "face-mask"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def face_pool(detector: MaskDetector, count: int, rng: np.random.Generator,
              scale: float = 1.0) -> list[FacePatch]:
    """``count`` real faces, half masked, cut at 48-80 px times ``scale``, each one YuNet finds once pasted.

    Faces the detector misses would make a clip look faster than it is (no crop to classify).
    """
    pool: list[FacePatch] = []
    for label in ("with_mask", "without_mask"):
        kept = 0
        for path in sorted((DATA / label).glob("*.jpg")):
            if kept == (count + 1) // 2:
                break
            try:
                face = cut_face(path, detector.faces, int(rng.integers(48, 81) * scale), label)
            except ValueError:
                continue
            if found_when_pasted(detector, face):
                pool.append(face)
                kept += 1
    rng.shuffle(pool)
    return pool[:count]


def found_when_pasted(detector: MaskDetector, face: FacePatch) -> bool:
    walker = Walker(face, 0, 1, (200.0, 150.0), (200.0, 150.0))
    image = render(background(640, 480), [walker], 0)
    truth = walker.box(0)
    return any(iou(truth, found.box) >= 0.3 for found in detector.faces.detect(image))


def scene(pool: list[FacePatch], faces: int, width: int, height: int, frames_: int,
          rng: np.random.Generator) -> list[Walker]:
    """``faces`` people on a grid (so none overlaps), each drifting slowly, all visible throughout."""
    cols = int(np.ceil(np.sqrt(faces * width / height)))
    rows = int(np.ceil(faces / cols))
    cell_w, cell_h = width / cols, height / rows
    walkers = []
    for i in range(faces):
        face = pool[i % len(pool)]
        ph, pw = face.patch.shape[:2]
        cx, cy = (i % cols) * cell_w, (i // cols) * cell_h
        slack_x, slack_y = max(0.0, cell_w - pw), max(0.0, cell_h - ph)
        start = (cx + rng.uniform(0, slack_x / 3), cy + rng.uniform(0, slack_y))
        end = (cx + slack_x * rng.uniform(2 / 3, 1), cy + rng.uniform(0, slack_y))
        walkers.append(Walker(face, 0, frames_, start, end))
    return walkers


def recall(lines: list[dict], walkers: list[Walker]) -> float:
    """Share of true face boxes matched (IoU >= 0.3) by a reported face."""
    found = total = 0
    for line in lines:
        boxes = [face["box"] for face in line["faces"]]
        for walker in walkers:
            truth = walker.box(line["frame"])
            if truth is not None:
                total += 1
                found += any(iou(truth, box) >= 0.3 for box in boxes)
    return found / total if total else 1.0


class Collect:
    """A text sink that keeps the JSON lines (for recall) instead of writing them; ``keep=False`` drops them."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.lines: list[dict] = []

    def write(self, text: str) -> None:
        if self.keep and text.strip():
            self.lines.append(json.loads(text))

    def flush(self) -> None:
        pass


def run(video: Path, detector: MaskDetector, detect_every: int, out: Path | None = None,
        loop: bool = False, stop: threading.Event | None = None,
        pipelined: bool = True, classify_every: int = CLASSIFY_EVERY) -> tuple[StreamWatcher, float, Collect]:
    # A live-sized read-ahead (2 frames) so latency is what a camera would see; a file never drops frames.
    source = VideoSource(SourceSpec(str(video), live=False), loop=loop, queue_size=2)
    source.open()
    sink = Collect(keep=not loop)  # a soak run must not hoard its output
    outputs = WatchOutputs(json=sink)
    if out is not None:
        outputs.video = VideoFileWriter(out, source.fps)
    analyzer = VideoAnalyzer(detector, detect_every=detect_every, classify_every=classify_every)
    watcher = StreamWatcher(analyzer, outputs, alert_after=5.0,
                            pipelined=pipelined)
    try:
        summary = watcher.run(source, stop or threading.Event())
    finally:
        source.close()
        if outputs.video is not None:
            outputs.video.close()
    return watcher, summary.fps, sink


def latency(watcher: StreamWatcher) -> str:
    """Decode -> JSON line, and the part of it spent waiting in the reader's queue."""
    total, work = watcher.latency, watcher.processing
    return (f"{total.mean_ms:.0f} / {total.percentile_ms(95):.0f} | "
            f"{max(0.0, total.mean_ms - work.mean_ms):.0f}")


def table(args: argparse.Namespace, detectors: dict[str, MaskDetector], folder: Path) -> None:
    """The table; with several classifiers, each clip runs with each of them in turn (side by side)."""
    detector = next(iter(detectors.values()))
    rng = np.random.default_rng(0)
    warm_up = scene(face_pool(detector, 1, rng), 1, 640, 480, 10, rng)
    write_video(folder / "warm_up.avi", frames(background(640, 480), warm_up, 10))
    for each in detectors.values():
        run(folder / "warm_up.avi", each, 1)  # first-run costs (allocations, caches) out of the table
    detection = f"{args.detect_size} px" if args.detect_size else "640-1280 px (the default)"
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{args.frames} frames per clip; detection at {detection} long side")
    print("video | faces | detect every | fps | latency ms: mean / p95 | (of it, in the read-ahead queue) "
          "| faces found | peak RSS MB")
    print("---|---|---|---|---|---|---|---")
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        # The same scene seen with more pixels: faces are 48-80 px high at 480 lines, 72-120 at 720.
        pool = face_pool(detector, max(args.faces), rng, scale=height / 480)
        for faces in args.faces:
            walkers = scene(pool, faces, width, height, args.frames, rng)
            video = folder / f"{size}_{faces}.avi"
            write_video(video, frames(background(width, height), walkers, args.frames))
            for every in args.detect_every:
                for (label, each), pipelined, refresh in itertools.product(
                        detectors.items(), (True, False) if args.compare_sequential else (True,),
                        args.classify_every):
                    watcher, fps, sink = run(video, each, every, pipelined=pipelined, classify_every=refresh)
                    name = (size if pipelined else f"{size} sequential") + (f", {label}" if len(detectors) > 1
                                                                           else "")
                    name += f", classify every {refresh}" if len(args.classify_every) > 1 else ""
                    print(f"{name} | {faces} | {every} | {fps:.1f} | {latency(watcher)} | "
                          f"{recall(sink.lines, walkers):.0%} | {peak_rss_mb():.0f}", flush=True)
            if args.with_out and size == args.sizes[0]:
                watcher, fps, _ = run(video, detector, 1, out=folder / "out.mp4")
                print(f"{size} + --out .mp4 | {faces} | 1 | {fps:.1f} | {latency(watcher)} | | "
                      f"{peak_rss_mb():.0f}", flush=True)


def soak(args: argparse.Namespace, detector: MaskDetector, folder: Path) -> None:
    """Loop a 640x480 clip of 8 people (up to 6 in view; they enter and leave, so tracks start and end)."""
    rng = np.random.default_rng(1)
    pool = face_pool(detector, 8, rng)
    count = 150
    walkers = [Walker(pool[i], 15 * i, 15 * i + 90, (10 + 150 * (i % 4), 40 + 220 * (i // 4)),
                      (40 + 150 * (i % 4), 60 + 220 * (i // 4))) for i in range(len(pool))]
    video = folder / "soak.avi"
    write_video(video, frames(background(640, 480), walkers, count))
    stop = threading.Event()
    result: dict[str, StreamWatcher] = {}
    thread = threading.Thread(target=lambda: result.update(w=run(video, detector, 1, loop=True, stop=stop)[0]))
    started = time.monotonic()
    thread.start()
    print("minutes | RSS MB | peak RSS MB")
    print("---|---|---")
    while time.monotonic() - started < 60 * args.minutes:
        time.sleep(min(10.0, max(0.0, 60 * args.minutes - (time.monotonic() - started))))
        print(f"{(time.monotonic() - started) / 60:.2f} | {current_rss_mb():.0f} | {peak_rss_mb():.0f}", flush=True)
    stop.set()
    thread.join()
    watcher = result["w"]
    print(f"{watcher.frames} frames ({watcher.frames / count:.1f} loops of {count}), "
          f"{watcher.stats.people_seen} people seen ({len(walkers)} per loop), "
          f"{watcher.frames / (time.monotonic() - started):.1f} fps")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=90, help="frames per clip (default 90)")
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"])
    parser.add_argument("--faces", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--detect-every", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--detect-size", type=int, help="as maskwatch watch --detect-size (default: 640-1280)")
    parser.add_argument("--classify-every", nargs="+", type=positive_int, default=[CLASSIFY_EVERY],
                        help=f"as maskwatch watch --classify-every (default {CLASSIFY_EVERY}); several: a row each")
    parser.add_argument("--face-model", help="YuNet ONNX file, or 'stock' (default: maskwatch's own, shipped)")
    parser.add_argument("--with-out", action="store_true", help="also time writing an annotated .mp4")
    parser.add_argument("--compare-sequential", action="store_true",
                        help="also run each clip without the detector thread (stage one in the main thread)")
    parser.add_argument("--minutes", type=float, default=0.0, help="soak run of this many minutes instead")
    parser.add_argument("--classifier", action="append",
                        help="classifier ONNX file (default: the shipped one); repeat it to compare several")
    args = parser.parse_args()
    detectors = {name or "shipped classifier": video_detector(face_model=args.face_model, classifier=name,
                                                              detect_size=args.detect_size)
                 for name in (args.classifier or [None])}
    with tempfile.TemporaryDirectory() as tmp:
        if args.minutes:
            soak(args, next(iter(detectors.values())), Path(tmp))
        else:
            table(args, detectors, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
