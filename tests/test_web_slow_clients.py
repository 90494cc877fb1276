"""Hostile clients against a real ``maskwatch serve``: slow uploads, idle and half-sent connections, floods.

Real sockets to a real server on 127.0.0.1. Every test is bounded: a few dozen sockets, seconds each.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from webserver import Server, running_server

PHOTO = Path(__file__).resolve().parent.parent / "examples" / "astronaut.jpg"  # ships with the repository
HEADER_TIMEOUT = 3.0
MAX_CONNECTIONS = 48
SLOW_BODY = (b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Length: 100000\r\n\r\n\xff\xd8\xff")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    # The setting: 2 workers + a queue of 32 = 34 requests. One detector pass keeps a request short,
    # so that "within 2 s" measures waiting, not the models.
    with running_server("--workers", "2", "--queue-limit", "32", "--read-timeout", "20",
                        "--header-timeout", str(HEADER_TIMEOUT), "--max-connections", str(MAX_CONNECTIONS),
                        "--extra-scales", "") as running:
        yield running


def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


@contextmanager
def connections(server: Server, count: int, first_bytes: bytes = b"", trickle: bool = False) -> Iterator[list]:
    """``count`` open sockets that each sent ``first_bytes``; with ``trickle``, one more byte each every 0.5 s."""
    sockets = [socket.create_connection(address(server), timeout=5) for _ in range(count)]
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(0.5):
            for sock in sockets:
                with suppress(OSError):  # closed by the server: that is allowed
                    sock.sendall(b"\x00")

    thread = threading.Thread(target=drip, daemon=True)
    try:
        for sock in sockets:
            if first_bytes:
                sock.sendall(first_bytes)
        if trickle:
            thread.start()
        yield sockets
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=5)
        for sock in sockets:
            sock.close()


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True when the server closes ``sock`` within ``within`` seconds (whatever it sent before closing)."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if readable:
            try:
                if not sock.recv(65536):
                    return True
            except ConnectionResetError:
                return True
    return False


def timed_detect(server: Server) -> tuple[int, float]:
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=30) as http:
        status = http.post("/v1/detect", content=PHOTO.read_bytes()).status_code
    return status, time.monotonic() - started


def test_34_slow_uploads_do_not_lock_out_a_normal_client(server: Server) -> None:
    # Before: every open request counted against the queue from its headers on, so 34 bodies trickling in
    # held all 2 + 32 slots and every other client got 503 for --read-timeout.
    with connections(server, 34, SLOW_BODY, trickle=True):
        time.sleep(1.0)  # all 34 are in their body by now
        status, seconds = timed_detect(server)
        assert status == 200
        assert seconds < 2.0, seconds
    assert server.alive()


def test_idle_and_half_sent_connections_are_closed(server: Server) -> None:
    # Before: a connection that sent nothing, half a header, or a byte now and then after its answer was
    # still open after 95 s.
    with connections(server, 3) as idle, connections(server, 3, b"POST /v1/detect HTTP/1.1\r\nHost: x\r\n",
                                                     trickle=True) as half:
        kept_alive = socket.create_connection(address(server), timeout=5)
        try:
            kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200")
            kept_alive.sendall(b"G")  # one byte of a next request: uvicorn alone then waits for ever
            for sock in [*idle, *half, kept_alive]:
                assert closed_by_server(sock, HEADER_TIMEOUT + 3.0)
        finally:
            kept_alive.close()


def test_connection_flood_evicts_the_waiting_not_the_working(server: Server) -> None:
    flood = MAX_CONNECTIONS + 12
    with connections(server, flood) as sockets:
        status, seconds = timed_detect(server)  # one more connection past the cap, with a complete request
        assert status == 200 and seconds < 2.0, (status, seconds)
        # The cap closed the connections that had waited longest, well before the header timeout.
        evicted = sum(closed_by_server(sock, 0.05) for sock in sockets[:20])
        assert evicted >= flood + 1 - MAX_CONNECTIONS, evicted
    assert server.alive()


def test_a_multi_frame_upload_says_only_its_first_frame_was_judged(server: Server, tmp_path: Path) -> None:
    from PIL import Image

    first = Image.open(PHOTO).convert("RGB")
    first.save(tmp_path / "animated.gif", save_all=True, append_images=[Image.new("RGB", first.size, "red")])
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.post("/v1/detect", content=(tmp_path / "animated.gif").read_bytes())
        single = http.post("/v1/detect", content=PHOTO.read_bytes())
    assert response.status_code == 200 and response.json()["faces"]
    assert response.headers["x-maskwatch-frames"] == "2"
    assert "x-maskwatch-frames" not in single.headers
