"""MQTT events against a real broker (mosquitto on 127.0.0.1): delivered, down at the start, gone mid-stream.

QoS 1 is "at least once": a broker restart may hand a subscriber a message twice, so the checks compare the
events with repeats removed, in order.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mqtt_broker import Broker, Subscriber, free_port, wait_for
from video_http import FlakyStream
from video_scenes import one_person

from maskwatch.video.mqtt import MqttError, MqttSink, parse_mqtt_url

pytest.importorskip("paho.mqtt.client", reason="the mqtt extra: pip install -e '.[mqtt]'")

CLI = [sys.executable, "-m", "maskwatch.cli", "watch"]
TOPIC = "site/door1"


def event(n: int, kind: str = "no_mask_alert") -> dict:
    return {"type": kind, "time": float(n), "track_id": n}


def unique(events: list[dict]) -> list[dict]:
    """Events in order of first arrival, each once (QoS 1 may repeat one across a broker restart)."""
    seen: list[dict] = []
    for item in events:
        if item not in seen:
            seen.append(item)
    return seen


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def broker(tmp_path: Path):
    running = Broker(tmp_path / "broker").start()
    yield running
    running.stop()


def test_every_event_arrives_in_order_on_its_topic(broker: Broker) -> None:
    subscriber = Subscriber(broker, TOPIC)
    sink = MqttSink(f"{broker.url}/{TOPIC}")
    try:
        for n in range(5):
            sink.send(event(n, "stats" if n % 2 else "no_mask_alert"))
        assert sink.close()
        assert wait_for(lambda: len(subscriber.events) == 5, timeout=10)
    finally:
        subscriber.close()
    assert subscriber.events == [event(n, "stats" if n % 2 else "no_mask_alert") for n in range(5)]
    assert [topic for topic, _ in subscriber.messages] == [f"{TOPIC}/{e['type']}" for e in subscriber.events]
    assert (sink.delivered, sink.failed, sink.dropped) == (5, 0, 0)


def test_broker_down_at_start_is_waited_for_without_blocking(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker").start()
    subscriber = Subscriber(broker, TOPIC)  # a persistent session: the broker keeps it across the restart
    subscriber.close()
    broker.stop()
    try:
        sink = MqttSink(f"{broker.url}/{TOPIC}", min_backoff=0.1, max_backoff=0.5)
        started = time.monotonic()
        for n in range(5):
            assert sink.send(event(n))
        assert time.monotonic() - started < 0.5  # queued, not sent: the caller never waits for the network
        time.sleep(1.0)
        assert sink.delivered == 0 and not sink.connected
        broker.start()
        subscriber = Subscriber(broker, TOPIC)
        assert wait_for(lambda: len(unique(subscriber.events)) == 5, timeout=20)
        assert sink.close()
        subscriber.close()
    finally:
        broker.stop()
    assert unique(subscriber.events) == [event(n) for n in range(5)]
    assert (sink.delivered, sink.dropped, sink.connects) == (5, 0, 1)


def test_broker_that_goes_away_loses_nothing_but_the_oldest_beyond_the_queue(broker: Broker) -> None:
    subscriber = Subscriber(broker, TOPIC)
    sink = MqttSink(f"{broker.url}/{TOPIC}", max_queue=3, min_backoff=0.1, max_backoff=0.5)
    try:
        sink.send(event(0))
        assert wait_for(lambda: sink.delivered == 1, timeout=10)
        broker.stop()
        assert wait_for(lambda: not sink.connected, timeout=10)
        for n in range(1, 11):  # 10 events while the broker is away: the queue keeps the newest 3
            sink.send(event(n))
        assert sink.dropped == 7
        broker.start()
        assert wait_for(lambda: len(unique(subscriber.events)) == 4, timeout=20)
        assert sink.close()
    finally:
        subscriber.close()
    assert unique(subscriber.events) == [event(0), event(8), event(9), event(10)]
    assert (sink.delivered, sink.connects) == (4, 2)


def test_events_keep_their_order_across_a_broker_crash(tmp_path: Path, broker: Broker) -> None:
    """The broker hangs with events in flight, then dies: paho sends those again on reconnection, and the
    events queued meanwhile wait for them, so the subscriber gets every event once more in the order sent.

    The sink logs to a file, as ``maskwatch watch`` does to stderr: that write lets the sender thread run
    between the reconnection and paho sending the old events again (the order CI once saw broken)."""
    logger = logging.getLogger("maskwatch.video")
    handler = logging.FileHandler(tmp_path / "sink.log")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    subscriber = Subscriber(broker, TOPIC)
    subscriber.subscribed.clear()
    broker.stop()  # a clean stop saves the subscriber's session, which the broker reloads after its crash
    broker.start()
    assert subscriber.subscribed.wait(20)  # connected again (it subscribes on every connection)
    sink = MqttSink(f"{broker.url}/{TOPIC}", min_backoff=0.1, max_backoff=0.2)
    try:
        sink.send(event(0))
        assert wait_for(lambda: sink.delivered == 1 and len(subscriber.events) == 1, timeout=10)
        broker.pause()
        for n in range(1, 6):  # handed to paho, never acknowledged: in flight when the broker dies
            sink.send(event(n))
        time.sleep(0.5)
        assert sink.delivered == 1
        broker.stop(kill=True)
        assert wait_for(lambda: not sink.connected, timeout=10)
        for n in range(6, 30):  # queued while the broker is away
            sink.send(event(n))
        broker.start()
        assert wait_for(lambda: len(unique(subscriber.events)) == 30, timeout=30)
        assert sink.close()
    finally:
        subscriber.close()
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()
    assert "mqtt: reconnected" in (tmp_path / "sink.log").read_text()
    assert [item["track_id"] for item in unique(subscriber.events)] == list(range(30))
    assert (sink.delivered, sink.dropped, sink.connects) == (30, 0, 2)


def test_absent_broker_close_gives_up_in_time() -> None:
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}/{TOPIC}", min_backoff=0.1, max_backoff=0.2)
    sink.send(event(1))
    started = time.monotonic()
    assert sink.close(timeout=1.0) is False
    assert time.monotonic() - started < 5
    assert sink.delivered == 0
    assert sink.send(event(2)) is False and sink.dropped == 1


@pytest.mark.parametrize("url", ["http://broker/topic", "mqtt://broker", "mqtt://broker/", "mqtt://u:p@broker/t",
                                 "mqtt://broker:99999/t", "mqtt:///t", "mqtt://broker/a/#", "mqtt://broker/+/x"])
def test_unusable_urls_are_refused(url: str) -> None:
    with pytest.raises(MqttError):
        parse_mqtt_url(url)


def test_url_defaults() -> None:
    assert parse_mqtt_url("mqtt://broker.local/site/door") == parse_mqtt_url("mqtt://broker.local:1883/site/door/")
    target = parse_mqtt_url("mqtts://broker.local/x")
    assert (target.port, target.tls, target.topic) == (8883, True, "x")


def _tls_files(folder: Path) -> dict[str, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl, made here: nothing is downloaded)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt",
                                              "san.cnf", "passwords")}
    files["san.cnf"].write_text("subjectAltName=IP:127.0.0.1\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=maskwatch test CA",
            "-keyout", str(files["ca.key"]), "-out", str(files["ca.crt"]))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(files["server.key"]),
            "-out", str(files["server.csr"]))
    openssl("x509", "-req", "-in", str(files["server.csr"]), "-CA", str(files["ca.crt"]), "-CAkey",
            str(files["ca.key"]), "-CAcreateserial", "-days", "2", "-extfile", str(files["san.cnf"]),
            "-out", str(files["server.crt"]))
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(files["passwords"]), "door", "s3cret"], check=True,
                   capture_output=True)
    return files


def test_tls_with_a_password(tmp_path: Path) -> None:
    files = _tls_files(tmp_path / "tls")
    broker = Broker(tmp_path / "broker", extra=[
        "allow_anonymous false", f"password_file {files['passwords']}", f"cafile {files['ca.crt']}",
        f"certfile {files['server.crt']}", f"keyfile {files['server.key']}"]).start()
    login = {"username": "door", "password": "s3cret", "ca_file": str(files["ca.crt"])}
    url = f"mqtts://127.0.0.1:{broker.port}/{TOPIC}"
    try:
        subscriber = Subscriber(broker, TOPIC, **login)
        sink = MqttSink(url, username="door", password="s3cret", ca_file=str(files["ca.crt"]))
        sink.send(event(1))
        assert sink.close()
        assert wait_for(lambda: subscriber.events == [event(1)], timeout=10)
        subscriber.close()
        wrong = MqttSink(url, username="door", password="wrong", ca_file=str(files["ca.crt"]), min_backoff=0.1)
        wrong.send(event(2))
        assert wrong.close(timeout=1.0) is False and wrong.delivered == 0
        untrusted = MqttSink(url, username="door", password="s3cret", min_backoff=0.1)  # the system CAs only
        untrusted.send(event(3))
        assert untrusted.close(timeout=1.0) is False and untrusted.delivered == 0
    finally:
        broker.stop()


@pytest.mark.parametrize("live", [False, True], ids=["file", "dropping-stream"])
def test_watch_publishes_every_event_it_logs(tmp_path: Path, yunet_path: Path, broker: Broker, live: bool) -> None:
    """A file gives alerts, periodic stats and the end of the stream; a stream that drops gives a reconnection
    (it is over too fast for alerts). The subscriber gets each event that the event log holds."""
    clip = one_person(tmp_path, yunet_path, count=45)
    stream = FlakyStream(clip.path, serves=2) if live else None  # drops once, reconnects, then is gone
    # --live: an AVI over HTTP declares its frame count, and would otherwise be read as a file.
    source = [stream.url, "--live", "--reconnect-delay", "0.05", "--reconnect-attempts", "1"] if stream \
        else [str(clip.path)]
    subscriber = Subscriber(broker, TOPIC)
    events = tmp_path / "events.jsonl"
    try:
        result = subprocess.run(
            [*CLI, *source, "--alert-after", "0.5", "--stats-every", "0.5", "--events", str(events), "--no-json",
             "--mqtt", f"{broker.url}/{TOPIC}"], capture_output=True, text=True, timeout=300)
        logged = read_events(events)
        assert wait_for(lambda: len(unique(subscriber.events)) == len(logged), timeout=10)
    finally:
        if stream is not None:
            stream.close()
        subscriber.close()
    assert result.returncode == (1 if live else 0), result.stderr  # the stream was lost for good in the end
    expected = {"source_reconnected", "stream_end"} if live else {"no_mask_alert", "stats", "stream_end"}
    assert expected <= {e["type"] for e in logged}, logged
    assert unique(subscriber.events) == logged
    assert f"mqtt: {len(logged)} event(s) acknowledged" in result.stderr


def test_watch_with_no_broker_loses_no_frame(tmp_path: Path, yunet_path: Path) -> None:
    clip = one_person(tmp_path, yunet_path, count=45)
    events = tmp_path / "events.jsonl"
    started = time.monotonic()
    result = subprocess.run(
        [*CLI, str(clip.path), "--alert-after", "0.5", "--stats-every", "0.25", "--events", str(events),
         "--mqtt", f"mqtt://127.0.0.1:{free_port()}/{TOPIC}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr  # every frame analysed, but no event reached a broker
    frames = [json.loads(line)["frame"] for line in result.stdout.splitlines()]
    assert frames == list(range(clip.frames))
    logged = read_events(events)
    assert [e["type"] for e in logged].count("stats") == 5 and logged[-1]["type"] == "stream_end"
    assert "not delivered before shutdown" in result.stderr and "0 event(s) acknowledged" in result.stderr
    # As for the webhook: delivered + failed + dropped is every event sent, and the undelivered ones are failed.
    assert f"mqtt: 0 of {len(logged)} event(s) delivered ({len(logged)} failed, 0 dropped)" in result.stderr
    assert time.monotonic() - started < 120  # a guard against a hang on the absent broker, not a speed check


def test_watch_keeps_going_while_the_broker_restarts(tmp_path: Path, yunet_path: Path, broker: Broker) -> None:
    """A looping file: the broker stops mid-stream and comes back; the video never waits for it, and every
    event logged meanwhile still reaches the subscriber."""
    clip = one_person(tmp_path, yunet_path, count=30)
    subscriber = Subscriber(broker, TOPIC)
    events = tmp_path / "events.jsonl"
    process = subprocess.Popen(
        [*CLI, str(clip.path), "--loop", "--stats-every", "0.25", "--events", str(events), "--no-json",
         "--mqtt", f"{broker.url}/{TOPIC}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: len(subscriber.events) >= 2, timeout=120)
        broker.stop()
        during = len(read_events(events))
        # The watch loop goes on: stats events keep being logged while the broker is away.
        assert wait_for(lambda: len(read_events(events)) >= during + 6, timeout=60)
        broker.start()
        assert wait_for(lambda: len(subscriber.events) >= during + 6, timeout=60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 130
        reader.join(10)
        logged = read_events(events)
        assert wait_for(lambda: len(unique(subscriber.events)) == len(logged), timeout=10)
    finally:
        process.kill()
        subscriber.close()
    assert unique(subscriber.events) == logged
    assert logged[-1]["type"] == "stream_end" and "mqtt: reconnected" in "".join(stderr)
