"""Run ``maskwatch serve`` as users do, a real process on 127.0.0.1, for the web tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT = 120.0  # loading the models on a busy 2-core CI machine takes a while


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(*args: str) -> Iterator[Server]:
    """Start the server with extra CLI ``args``, wait until /readyz answers 200, stop it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "MASKWATCH_API_KEY"}  # only what the test asks for
    with tempfile.TemporaryDirectory(prefix="maskwatch-serve-") as folder:
        log_path = Path(folder) / "server.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "maskwatch.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "warning", *args],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        server = Server(url, process, log_path)
        try:
            wait_ready(server)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if not server.alive():
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(f"{server.url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {STARTUP_TIMEOUT:.0f} s:\n{server.log()}")
