"""Events POSTed to a local webhook: one that works, one that fails then recovers, one that is slow."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from video_http import Receiver
from video_scenes import one_person

from maskwatch.video.webhook import WebhookError, WebhookSink, validate_webhook_url


def event(n: int) -> dict:
    return {"type": "no_mask_alert", "time": float(n), "track_id": n}


def test_working_receiver_gets_every_event_in_order() -> None:
    receiver = Receiver()
    try:
        sink = WebhookSink(receiver.url)
        for n in range(5):
            sink.send(event(n))
        assert sink.close()
    finally:
        receiver.close()
    assert receiver.bodies == [event(n) for n in range(5)]
    assert (sink.delivered, sink.failed, sink.dropped) == (5, 0, 0)


def test_failing_receiver_is_retried_until_it_recovers() -> None:
    receiver = Receiver(fail_first=3)  # HTTP 500 three times, then fine
    try:
        sink = WebhookSink(receiver.url, retries=5, backoff=0.01)
        sink.send(event(1))
        sink.send(event(2))
        assert sink.close()
    finally:
        receiver.close()
    assert receiver.bodies == [event(1), event(2)]
    assert (sink.delivered, sink.failed, sink.attempts) == (2, 0, 5)


def test_receiver_that_never_recovers_is_given_up_on() -> None:
    receiver = Receiver(fail_first=100)
    try:
        sink = WebhookSink(receiver.url, retries=2, backoff=0.01)
        sink.send(event(1))
        sink.close()
    finally:
        receiver.close()
    assert (sink.delivered, sink.failed, receiver.requests) == (0, 1, 3)


def test_redirects_are_not_followed() -> None:
    elsewhere = Receiver()
    receiver = Receiver(redirect=elsewhere.url)
    try:
        sink = WebhookSink(receiver.url, backoff=0.01)
        sink.send(event(1))
        sink.close()
    finally:
        receiver.close()
        elsewhere.close()
    assert (sink.delivered, sink.failed, elsewhere.requests) == (0, 1, 0)


def test_slow_receiver_never_blocks_the_sender_and_oldest_events_are_dropped() -> None:
    gate = threading.Event()
    receiver = Receiver(gate=gate)  # holds every request until the gate opens
    try:
        sink = WebhookSink(receiver.url, max_queue=3)
        sender = threading.Thread(target=lambda: [sink.send(event(n)) for n in range(10)])
        sender.start()
        sender.join(60)  # a guard against a hang, not a speed check: send() must not wait for the network
        assert not sender.is_alive()
        gate.set()
        assert sink.close()
    finally:
        gate.set()
        receiver.close()
    # At most one event was in flight when the rest arrived; the queue kept the newest three.
    assert sink.dropped in (6, 7) and sink.delivered + sink.dropped == 10
    assert receiver.bodies[-3:] == [event(7), event(8), event(9)]


class _GarbageThenOk(http.server.BaseHTTPRequestHandler):
    """The first answer is not HTTP at all (BadStatusLine in the client); later ones are 200."""

    count = 0
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        type(self).count += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if type(self).count == 1:
            self.wfile.write(b"garbage, not a status line\r\n")
            self.wfile.flush()
            self.close_connection = True
            return
        type(self).bodies.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_receiver_speaking_garbage_does_not_kill_the_sender() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GarbageThenOk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        sink = WebhookSink(f"http://127.0.0.1:{server.server_address[1]}/hook", retries=0)
        sink.send(event(1))  # BadStatusLine: given up on (no retries), but the thread lives on
        sink.send(event(2))
        assert sink.close()
    finally:
        server.shutdown()
        server.server_close()
    assert (sink.delivered, sink.failed) == (1, 1)
    assert _GarbageThenOk.bodies == [event(2)]
    assert not sink._thread.is_alive()  # close() joined it
    assert sink.send(event(3)) is False and sink.dropped == 1  # refused after close, and counted


@pytest.mark.parametrize("url", ["http://user:pass@example.com/hook", "https://token@example.com/",
                                 "http://example.com:99999/hook", "http://example.com:port/hook",
                                 "http://[::1/hook"])
def test_urls_that_would_fail_later_are_refused_up_front(url: str) -> None:
    with pytest.raises(WebhookError):
        validate_webhook_url(url)


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "file:///etc/passwd", "http://", "hook", "javascript:x"])
def test_only_http_urls_are_accepted(url: str) -> None:
    with pytest.raises(WebhookError):
        validate_webhook_url(url)


def test_slow_webhook_does_not_stall_the_video(tmp_path: Path, yunet_path: Path) -> None:
    """The receiver holds every request until the whole clip has been processed: all frames still come out."""
    clip = one_person(tmp_path, yunet_path, count=45)
    gate = threading.Event()
    receiver = Receiver(gate=gate)
    process = subprocess.Popen(
        [sys.executable, "-m", "maskwatch.cli", "watch", str(clip.path), "--alert-after", "0.5",
         "--webhook", receiver.url, "--events", str(tmp_path / "events.jsonl")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        lines = [json.loads(process.stdout.readline()) for _ in range(clip.frames)]
        # Every frame is out while the receiver still sits on the first event.
        assert [line["frame"] for line in lines] == list(range(clip.frames))
        assert receiver.bodies == []
        gate.set()
        assert process.wait(timeout=120) == 0
    finally:
        gate.set()
        process.kill()
        receiver.close()
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["type"] for e in events] == ["no_mask_alert", "stream_end"]
    assert receiver.bodies == events
