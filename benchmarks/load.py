"""Load check for ``maskwatch serve``: single-client latency, then N concurrent clients for a bounded time.

    python benchmarks/load.py [--clients 4] [--duration 20] [--image PHOTO] [--url http://127.0.0.1:8000]

Without --url it starts a server on a free port of 127.0.0.1 (``--workers`` and ``--api-key`` are
passed on) and stops it afterwards. Each client keeps one connection and sends the next request as
soon as the last answer is in. Target: p99 with 4 clients under 2x the single-client median, on a
machine with at least 4 cores (with fewer cores the requests must queue, and latency grows with
clients / cores).
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = ROOT / "examples" / "astronaut.jpg"


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests only
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, ok: bool) -> None:
        with self.lock:
            if ok:
                self.latencies.append(seconds)
            else:
                self.errors += 1


class Client:
    """One keep-alive connection posting the photo as a multipart upload."""

    def __init__(self, url: str, image: bytes, api_key: str | None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise SystemExit(f"load.py: only http:// URLs are supported, not {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path.rstrip("/") + "/v1/detect"
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"load.jpg\"\r\n"
                "Content-Type: image/jpeg\r\n\r\n")
        self.body = head.encode() + image + f"\r\n--{boundary}--\r\n".encode()
        self.headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        if api_key:
            self.headers["X-API-Key"] = api_key
        self.connection: http.client.HTTPConnection | None = None

    def post(self) -> tuple[float, bool]:
        start = time.perf_counter()
        try:
            if self.connection is None:
                self.connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
            self.connection.request("POST", self.path, body=self.body, headers=self.headers)
            response = self.connection.getresponse()
            response.read()
            ok = response.status == 200
        except (OSError, http.client.HTTPException):
            self.close()  # reconnect on the next request
            ok = False
        return time.perf_counter() - start, ok

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def single_client(url: str, image: bytes, api_key: str | None, requests: int) -> Tally:
    tally = Tally()
    client = Client(url, image, api_key)
    client.post()  # warm-up: connection and first-use costs
    for _ in range(requests):
        tally.add(*client.post())
    client.close()
    return tally


def concurrent_clients(
    url: str, image: bytes, api_key: str | None, clients: int, seconds: float
) -> tuple[Tally, float]:
    tally = Tally()
    deadline = time.monotonic() + seconds

    def run() -> None:
        client = Client(url, image, api_key)
        while time.monotonic() < deadline:
            tally.add(*client.post())
        client.close()

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return tally, time.monotonic() - start


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(tally: Tally) -> str:
    ms = [1000 * s for s in tally.latencies]
    if not ms:
        return f"no successful requests, {tally.errors} errors"
    points = ", ".join(f"p{q} {percentile(ms, q):.0f} ms" for q in (50, 95, 99))
    return f"{points}, mean {statistics.fmean(ms):.0f} ms, {len(ms)} ok, {tally.errors} errors"


@contextmanager
def local_server(workers: int | None, api_key: str | None) -> Iterator[str]:
    """Start ``maskwatch serve`` on a free loopback port and yield its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "maskwatch.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning"]
    if workers:
        command += ["--workers", str(workers)]
    env = dict(os.environ)
    if api_key:
        env["MASKWATCH_API_KEY"] = api_key  # not on the command line, where process lists show it
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"load.py: the server exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=2)
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"load.py: server at {url} not ready after {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one on 127.0.0.1)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load (default 20)")
    parser.add_argument("--single", type=int, default=20, help="requests for the single-client baseline")
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="photo to post")
    parser.add_argument("--workers", type=int, help="inference workers of the server started here")
    parser.add_argument("--api-key", default=os.environ.get("MASKWATCH_API_KEY"))
    args = parser.parse_args()
    if not 0 < args.duration <= 600 or not 0 < args.clients <= 64 or not 0 < args.single <= 10_000:
        parser.error("keep it bounded: 0 < --duration <= 600, 0 < --clients <= 64, 0 < --single <= 10000")
    image = args.image.read_bytes()

    with (local_server(args.workers, args.api_key) if args.url is None else _given(args.url)) as url:
        print(f"server {url}, image {args.image.name} ({len(image) / 1024:.0f} KiB), "
              f"{os.cpu_count()} CPU cores here")
        single = single_client(url, image, args.api_key, args.single)
        print(f"1 client, {args.single} requests: {summary(single)}")
        loaded, elapsed = concurrent_clients(url, image, args.api_key, args.clients, args.duration)
        rate = len(loaded.latencies) / elapsed
        print(f"{args.clients} clients, {elapsed:.1f} s: {rate:.1f} requests/s, {summary(loaded)}")
    if single.latencies and loaded.latencies:
        base = percentile(single.latencies, 50)
        ratio = percentile(loaded.latencies, 99) / base
        verdict = "meets" if ratio < 2 else "misses"
        print(f"p99 at {args.clients} clients / single-client p50 = {ratio:.2f}x ({verdict} the < 2x target)")
    return 1 if single.errors or loaded.errors or not loaded.latencies else 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url.rstrip("/")


if __name__ == "__main__":
    sys.exit(main())
