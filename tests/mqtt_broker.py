"""A real MQTT broker (Debian's mosquitto) on 127.0.0.1 for the tests, and a subscriber that keeps what it gets.

The broker keeps its state on disk (``persistence``), so a subscriber's session and the QoS 1 messages queued
for it survive a broker restart, as on a real installation.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Any, timeout: float = 20.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())


class Broker:
    """mosquitto on ``port``; ``extra`` config lines (TLS, passwords) are added to its listener."""

    def __init__(self, folder: Path, port: int | None = None, extra: list[str] | None = None) -> None:
        if not Path(MOSQUITTO).is_file():
            pytest.fail("the MQTT tests need mosquitto (apt-get install mosquitto; .ci/run installs it)")
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra = extra or []
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        config = self.folder / "mosquitto.conf"
        config.write_text("\n".join([
            "user root",  # tests run as root in CI: stay root, so the temp folders stay readable
            f"listener {self.port} 127.0.0.1",
            *(self.extra or ["allow_anonymous true"]),
            "persistence true",
            f"persistence_location {self.folder}/",
            f"log_dest file {self.folder}/mosquitto.log",
        ]) + "\n")
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        if not wait_for(self._listening, timeout=10):
            self.stop()
            pytest.fail(f"mosquitto did not start: {(self.folder / 'mosquitto.log').read_text()[-2000:]}")
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def pause(self) -> None:
        """SIGSTOP: the broker hangs, its connections open, acknowledging nothing (``stop`` ends it)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM saves the persistent state (sessions, queued messages); SIGKILL is a crash."""
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.send_signal(signal.SIGCONT)  # a paused broker handles SIGTERM only once resumed
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None


class Subscriber:
    """A paho client subscribed to ``topic``/# with a persistent session; keeps (topic, payload) pairs."""

    def __init__(self, broker: Broker, topic: str, client_id: str = "maskwatch-test-subscriber",
                 **tls: Any) -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if tls.get("username"):
            self.client.username_pw_set(tls["username"], tls.get("password"))
        if tls.get("ca_file"):
            self.client.tls_set(ca_certs=tls["ca_file"])
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            pytest.fail("the test subscriber could not subscribe")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        client.subscribe(f"{self.topic}/#", qos=1)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self.lock:
            self.messages.append((message.topic, json.loads(message.payload)))

    @property
    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [payload for _topic, payload in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
