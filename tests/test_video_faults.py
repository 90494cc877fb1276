"""Faults a stream meets: corrupt frames, Ctrl-C, sources that cannot be read, a stream that drops."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from video_http import FlakyStream
from video_scenes import corrupt_frame, one_person

from maskwatch.video.source import SourceError, VideoSource, parse_source

CLI = [sys.executable, "-m", "maskwatch.cli", "watch"]


def watch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_corrupt_frame_is_skipped_and_counted(tmp_path: Path, yunet_path: Path) -> None:
    clip = one_person(tmp_path, yunet_path, count=30)
    broken = tmp_path / "broken.avi"
    corrupt_frame(clip.path, 10, broken)
    result = watch(str(broken), "--events", str(tmp_path / "events.jsonl"))
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line)["frame"] for line in result.stdout.splitlines()]
    assert frames == [n for n in range(30) if n != 10]
    (end,) = read_events(tmp_path / "events.jsonl")
    assert (end["type"], end["corrupt"], end["frames"]) == ("stream_end", 1, 29)
    assert "skipped 1 unreadable frame" in result.stderr


def test_corrupt_frames_at_the_start_and_in_a_file_of_unknown_length_are_counted(tmp_path: Path,
                                                                                  yunet_path: Path) -> None:
    clip = one_person(tmp_path, yunet_path, count=30)
    first = tmp_path / "first.avi"
    corrupt_frame(clip.path, 0, tmp_path / "zero.avi")
    corrupt_frame(tmp_path / "zero.avi", 1, first)
    # A raw MJPEG file declares no frame count (OpenCV says a huge negative number): it must still be read
    # to its end, past a corrupt frame, not stopped there.
    capture = cv2.VideoCapture(str(clip.path))
    jpegs = []
    while (read := capture.read())[0]:
        jpegs.append(cv2.imencode(".jpg", read[1])[1].tobytes())
    capture.release()
    jpegs[10] = jpegs[10][:20] + bytes(len(jpegs[10]) - 22) + jpegs[10][-2:]  # its markers kept, its data gone
    raw = tmp_path / "raw.mjpeg"
    raw.write_bytes(b"".join(jpegs))
    for video, corrupt, said in ((first, 2, "skipped 2 unreadable frame(s) at the start"),
                                 (raw, 1, "skipped 1 unreadable frame(s) before frame 11")):
        result = watch(str(video), "--events", str(tmp_path / f"{video.stem}.jsonl"), "--no-json")
        assert result.returncode == 0, result.stderr
        (end,) = read_events(tmp_path / f"{video.stem}.jsonl")
        assert (end["corrupt"], end["frames"]) == (corrupt, 30 - corrupt), (video.name, end)
        assert said in result.stderr, result.stderr


def test_sigint_finishes_a_playable_output_video(tmp_path: Path, yunet_path: Path) -> None:
    clip = one_person(tmp_path, yunet_path, count=30)
    out = tmp_path / "out.mp4"
    with open(tmp_path / "stderr.txt", "w") as stderr:
        # --loop: the clip never ends by itself, so only the signal can stop it.
        process = subprocess.Popen([*CLI, str(clip.path), "--loop", "--out", str(out)], stdout=subprocess.PIPE,
                                   stderr=stderr, text=True)
        try:
            lines = [process.stdout.readline() for _ in range(40)]
            assert all(lines), (tmp_path / "stderr.txt").read_text()
            process.send_signal(signal.SIGINT)
            rest, _ = process.communicate(timeout=120)
        finally:
            process.kill()
    assert process.returncode == 130, (tmp_path / "stderr.txt").read_text()
    printed = len(lines) + len(rest.splitlines())
    capture = cv2.VideoCapture(str(out))
    readable = 0
    while capture.read()[0]:
        readable += 1
    capture.release()
    assert readable == printed and readable >= 40  # every processed frame, past the end of the first loop
    assert "stopping (SIGINT)" in (tmp_path / "stderr.txt").read_text()


def test_missing_and_unreadable_sources_exit_2(tmp_path: Path) -> None:
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is not a video")
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    for source, message in [
        (str(tmp_path / "absent.mp4"), "no such video file"),
        (str(not_video), "cannot open"),
        (str(empty), "cannot open"),
        ("ftp://127.0.0.1/cam", "unsupported source"),
        ("http://127.0.0.1:9/none.mjpg", "cannot open"),  # the discard port: connection refused
    ]:
        result = watch(source, "--timeout", "5")
        assert result.returncode == 2, (source, result.stderr)
        assert message in result.stderr, (source, result.stderr)
        assert result.stdout == ""


def test_bad_outputs_exit_2_before_anything_runs(tmp_path: Path, yunet_path: Path) -> None:
    clip = one_person(tmp_path, yunet_path, count=2)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    show = watch(str(clip.path), "--show", env=env)  # headless OpenCV, or no display: a clear refusal
    assert show.returncode == 2 and "--show needs" in show.stderr
    assert watch(str(clip.path), "--out", str(tmp_path / "out.txt")).returncode == 2
    hook = watch(str(clip.path), "--webhook", "file:///etc/passwd")
    assert hook.returncode == 2 and "http://" in hook.stderr
    before = clip.path.read_bytes()
    for option in ("--out", "--json", "--events"):  # the video being read: writing it would destroy it
        same = watch(str(clip.path), option, str(clip.path.parent / "." / clip.path.name))
        assert same.returncode == 2 and "is the video being read" in same.stderr, (option, same.stderr)
    assert clip.path.read_bytes() == before
    both = watch(str(clip.path), "--json", str(tmp_path / "log.jsonl"), "--events", str(tmp_path / "." / "log.jsonl"))
    assert both.returncode == 2 and "--json and --events name the same file" in both.stderr, both.stderr
    assert not (tmp_path / "log.jsonl").exists()
    (tmp_path / "kept.jsonl").write_text("")
    os.link(tmp_path / "kept.jsonl", tmp_path / "twin.jsonl")  # one file under two names
    linked = watch(str(clip.path), "--json", str(tmp_path / "kept.jsonl"), "--events", str(tmp_path / "twin.jsonl"))
    assert linked.returncode == 2 and "name the same file" in linked.stderr
    shared = watch(str(clip.path), "--json", "/dev/null", "--events", "/dev/null")  # a device may be shared
    assert shared.returncode == 0, shared.stderr


def test_a_video_name_that_is_not_utf8_is_refused_not_a_crash(tmp_path: Path, yunet_path: Path) -> None:
    """OpenCV crashes the process (SIGSEGV) on such a name; it is refused by name first."""
    clip = one_person(tmp_path, yunet_path, count=2)
    latin = os.fsdecode(bytes(tmp_path) + b"/caf\xe9.avi")  # a Latin-1 name from another system
    shutil.copy(clip.path, latin)
    result = subprocess.run([*CLI, os.fsencode(latin)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "not valid UTF-8 (rename it)" in result.stderr and "caf\\xe9.avi" in result.stderr


def test_parse_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_source("0").target == 0 and parse_source("0").live
    (tmp_path / "12345").write_bytes(b"a video file named with digits")
    assert parse_source("12345").target == 12345  # digits are a webcam; the file is ./12345
    assert parse_source("./12345").target == "12345" and not parse_source("./12345").live
    with pytest.raises(SourceError, match=r"give \./12345"):
        VideoSource(parse_source("12345")).open()  # no such webcam: the file of that name is pointed to
    with pytest.raises(SourceError, match="no such video file"):
        parse_source("\u00b2")  # a digit to str.isdigit, not a webcam index
    assert parse_source("rtsp://cam.local:554/stream").live
    secret = parse_source("rtsp://admin:hunter2@cam.local:554/stream")
    assert secret.target == "rtsp://admin:hunter2@cam.local:554/stream"  # FFmpeg gets the password...
    assert secret.name == "rtsp://***@cam.local:554/stream"  # ...logs and events never do
    assert not parse_source("http://host/clip.mp4", live=False).live
    for bad in ("concat:a.mp4|b.mp4", "rtsp:///no-host"):
        with pytest.raises(SourceError):
            parse_source(bad)
    with pytest.raises(SourceError, match="is a folder, not a video file"):
        parse_source(str(Path(__file__).parent))


def test_dropped_live_stream_is_reconnected_and_the_gap_logged(tmp_path: Path, yunet_path: Path) -> None:
    clip = one_person(tmp_path, yunet_path, count=30)
    stream = FlakyStream(clip.path, serves=2)  # the stream ends twice; the third connection is refused
    events = tmp_path / "events.jsonl"
    try:
        # --live: an AVI over HTTP declares its frame count, and is otherwise read as a file.
        result = watch(stream.url, "--live", "--reconnect-delay", "0.05", "--reconnect-attempts", "2",
                       "--events", str(events))
    finally:
        stream.close()
    assert result.returncode == 1, result.stderr  # the live source was lost for good
    assert "reconnected after a gap" in result.stderr and "gave up after 2" in result.stderr
    kinds = [event["type"] for event in read_events(events)]
    assert kinds == ["source_reconnected", "stream_end"]
    frames = [json.loads(line)["frame"] for line in result.stdout.splitlines()]
    assert frames == sorted(set(frames)) and len(frames) >= 2  # in order; stale frames may be dropped
    end = read_events(events)[-1]
    assert end["decoded"] == 60 and end["frames"] + end["dropped"] == 60


def test_a_flapping_stream_is_retried_ever_more_slowly(tmp_path: Path, yunet_path: Path) -> None:
    """A camera that comes back and drops again at once keeps the back-off it had (doubling), instead of
    being retried at the first delay each time and flooding the receivers with events."""
    clip = one_person(tmp_path, yunet_path, count=30)
    stream = FlakyStream(clip.path, serves=6)  # five reconnections, then gone for good
    events = tmp_path / "events.jsonl"
    try:
        result = watch(stream.url, "--live", "--reconnect-delay", "0.05", "--reconnect-attempts", "2",
                       "--events", str(events), "--no-json")
    finally:
        stream.close()
    assert result.returncode == 1 and "gave up after 2" in result.stderr, result.stderr
    reconnected = [e for e in read_events(events) if e["type"] == "source_reconnected"]
    assert len(reconnected) == 5 and all(e["attempts"] == 1 for e in reconnected)
    gaps = [e["gap_seconds"] for e in reconnected]
    assert gaps[0] < 0.4 and gaps[-1] >= 0.75, gaps  # 0.05 s doubling: 0.8 s before the fifth


def test_a_stream_back_at_a_size_over_the_pixel_limit_is_refused(tmp_path: Path, yunet_path: Path) -> None:
    clip = one_person(tmp_path, yunet_path, count=10)
    capture = cv2.VideoCapture(str(clip.path))
    width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    capture.release()
    big = tmp_path / "big.avi"
    writer = cv2.VideoWriter(str(big), cv2.VideoWriter.fourcc(*"MJPG"), 10, (width * 2, height * 2))
    for _ in range(5):
        writer.write(np.zeros((height * 2, width * 2, 3), np.uint8))
    writer.release()
    stream = FlakyStream(clip.path, serves=3, later=big)
    try:
        result = watch(stream.url, "--live", "--reconnect-delay", "0.05", "--max-pixels", str(width * height),
                       "--no-json")
    finally:
        stream.close()
    assert result.returncode == 1 and "over --max-pixels" in result.stderr, result.stderr


def test_source_errors_never_print_a_camera_password() -> None:
    for bad in ("concat://admin:hunter2@cam/x", "rtsp://admin:hunter2@/no-host"):
        with pytest.raises(SourceError) as info:
            parse_source(bad)
        assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_unwritable_out_video_fails_at_start(tmp_path: Path, yunet_path: Path) -> None:
    clip = one_person(tmp_path, yunet_path, count=5)
    result = watch(str(clip.path), "--out", "/proc/maskwatch-cannot-write.avi")  # a folder no file can be made in
    assert result.returncode == 2, result.stderr
    assert "cannot write video" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""  # refused before the first frame


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_full_disk_on_json_output_is_a_clear_failure(tmp_path: Path, yunet_path: Path) -> None:
    clip = one_person(tmp_path, yunet_path, count=10)
    events = tmp_path / "events.jsonl"
    result = watch(str(clip.path), "--json", "/dev/full", "--events", str(events))  # every write: ENOSPC
    assert result.returncode == 1, result.stderr
    assert "cannot write output" in result.stderr and "Traceback" not in result.stderr
    (end,) = read_events(events)  # the outputs that still work get the end of the stream
    assert end["type"] == "stream_end" and "output_error" in end and end["interrupted"] is False  # by no one


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_an_odd_frame_size_keeps_its_last_column_and_row(tmp_path: Path, suffix: str) -> None:

    from maskwatch.video.writers import VideoFileWriter

    frame = np.zeros((75, 101, 3), np.uint8)  # odd both ways; its last column and row are white
    frame[:, -1] = 255
    frame[-1, :] = 255
    writer = VideoFileWriter(tmp_path / f"odd{suffix}", fps=10)
    for _ in range(3):
        writer.write(frame)
    writer.close()
    capture = cv2.VideoCapture(str(tmp_path / f"odd{suffix}"))
    ok, back = capture.read()
    capture.release()
    assert ok and back.shape == (76, 102, 3)  # one black column and row added, none cut
    assert back[5:70, 100].mean() > 200 and back[74, 5:95].mean() > 200  # the white edges are still there
    assert back[5:70, 101].mean() < 60 and back[75, 5:95].mean() < 60
