"""Local HTTP servers on 127.0.0.1 for the video tests: a webhook receiver and a stream that drops."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Receiver(_Server):
    """A webhook: answers 500 to the first ``fail_first`` requests, holds every request until ``gate``
    is set (a slow receiver), or redirects elsewhere; keeps the JSON bodies it accepted."""

    def __init__(self, fail_first: int = 0, gate: threading.Event | None = None, redirect: str = "") -> None:
        self.fail_first = fail_first
        self.gate = gate
        self.redirect = redirect
        self.requests = 0
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        super().__init__(_ReceiverHandler)

    @property
    def url(self) -> str:
        return self.base_url() + "/hook"


class _ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        owner: Receiver = self.server.owner  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with owner.lock:
            owner.requests += 1
            number = owner.requests
        if owner.gate is not None:
            owner.gate.wait()
        if owner.redirect:
            self.send_response(307)
            self.send_header("Location", owner.redirect)
        elif number <= owner.fail_first:
            self.send_response(500)
        else:
            with owner.lock:
                owner.bodies.append(json.loads(body))
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class FlakyStream(_Server):
    """Serves one video file for the first ``serves`` requests, then 404: a stream that drops for good.
    With ``later``, the requests after the first get that file instead (a camera back at another size)."""

    def __init__(self, video: Path, serves: int, later: Path | None = None) -> None:
        self.video = video
        self.later = later
        self.serves = serves
        self.requests = 0
        super().__init__(_StreamHandler)

    @property
    def url(self) -> str:
        return self.base_url() + "/" + self.video.name


class _StreamHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        owner: FlakyStream = self.server.owner  # type: ignore[attr-defined]
        owner.requests += 1
        if owner.requests > owner.serves:
            self.send_error(404)
            return
        data = (owner.later if owner.later is not None and owner.requests > 1 else owner.video).read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "video/x-msvideo")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass
