"""Publish events to an MQTT broker from a background thread, so a slow or absent broker never stalls video.

Like the webhook sink: events wait in a bounded queue, and when it is full the oldest is dropped and counted
(a fresh alert matters more than a stale one). Each event is published with QoS 1 to ``TOPIC/<event type>``
and counts as delivered when the broker acknowledges it (PUBACK). paho-mqtt's network thread connects and
reconnects with exponential back-off; a broker that is down at the start is simply waited for. While the
connection is down nothing is handed to paho, so its own (unbounded) queue never grows: the bounded queue
here is the only place events wait. A message in flight when the connection drops (or handed to paho just
as it dropped) is sent again by paho on reconnection (QoS 1 is at least once), and new events wait until
those are acknowledged, so that events keep their order across a reconnection.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from maskwatch.video.events import EventQueue

log = logging.getLogger("maskwatch.video")

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# Messages handed to paho but not yet acknowledged: a handful keeps a fast broker busy without letting a
# slow one pull the whole queue into paho's memory.
MAX_IN_FLIGHT = 10
# After a reconnection, new events wait this long at most for the broker to acknowledge the messages paho
# sends again, so that they arrive in order; a broker that never acknowledges them does not stop the rest.
RESEND_WAIT = 5.0


class MqttError(ValueError):
    """An MQTT URL or option that maskwatch will not use."""


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    topic: str  # events go to TOPIC/<event type>
    tls: bool


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://HOST[:PORT]/TOPIC`` (or ``mqtts://`` for TLS) -> where to publish; MqttError when unusable.

    User names and passwords belong in their options, not in the URL, where they would end up in logs.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MqttError(f"MQTT URL is malformed: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise MqttError(f"MQTT URL must start with mqtt:// or mqtts://, got {url!r}")
    if "@" in parts.netloc:
        raise MqttError("MQTT URL must not contain a user name or password; use --mqtt-username and "
                        "--mqtt-password (or $MASKWATCH_MQTT_PASSWORD)")
    if not parts.hostname:
        raise MqttError(f"MQTT URL has no host: {url!r}")
    topic = unquote(parts.path).strip("/")
    if not topic:
        raise MqttError(f"MQTT URL has no topic (mqtt://HOST:PORT/TOPIC): {url!r}")
    if any(char in topic for char in "+\0") or "#" in url or parts.query:  # urlsplit takes "#..." as a fragment
        raise MqttError(f"MQTT topic must be a plain topic, without wildcards (# +) or a query: {url!r}")
    if port == 0:
        raise MqttError(f"MQTT URL has port 0: {url!r}")
    return MqttTarget(parts.hostname, port or DEFAULT_PORTS[parts.scheme], topic, parts.scheme == "mqtts")


class MqttSink(EventQueue):
    """Publish JSON events to ``url`` in order, QoS 1, from a daemon thread; never blocks the caller."""

    def __init__(
        self,
        url: str,
        username: str | None = None,
        password: str | None = None,
        tls: bool | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        client_id: str | None = None,
        max_queue: int = 100,
        qos: int = 1,
        keepalive: int = 30,
        min_backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.target = parse_mqtt_url(url)
        super().__init__("mqtt", max_queue)
        self.qos = qos
        # delivered: acknowledged by the broker; failed: refused by paho (a message too large, a bad topic:
        # sending again cannot help), or not acknowledged when close() gave up.
        self.connects = 0  # successful connections, reconnections included
        self._in_flight: dict[int, dict[str, Any]] = {}  # message id -> event, handed to paho, not acknowledged
        self._acked: set[int] = set()
        self._publishing = 0  # events between the queue and _in_flight
        self._closed = False  # close() has counted what was left
        self._connected = False
        self._hold_until = 0.0  # monotonic time: until then, after a reconnection, new events wait
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"maskwatch-{uuid.uuid4().hex[:12]}")
        if username is not None:
            self._client.username_pw_set(username, password)
        if tls if tls is not None else (self.target.tls or ca_file is not None or cert_file is not None):
            self._client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file,
                                 cert_reqs=ssl.CERT_REQUIRED)
        self._client.reconnect_delay_set(min_delay=min_backoff, max_delay=max_backoff)  # type: ignore[arg-type]
        self._client.max_inflight_messages_set(MAX_IN_FLIGHT)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        # connect_async + loop_start: the first connection is made by paho's thread, which retries it with
        # the same back-off as a reconnection, so an absent broker costs the caller nothing.
        self._client.connect_async(self.target.host, self.target.port, keepalive=keepalive)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._run, name="maskwatch-mqtt", daemon=True)
        self._thread.start()

    def pending(self) -> int:
        return len(self._queue) + len(self._in_flight) + self._publishing

    @property
    def connected(self) -> bool:
        return self._connected

    def close(self, timeout: float = 10.0, unreachable_wait: float = 2.0) -> bool:
        """Deliver what is queued for up to ``timeout`` seconds, then disconnect; True if nothing was left.

        While the broker is unreachable, wait at most ``unreachable_wait`` seconds for it to come back: a
        watch whose broker is gone should end promptly.
        """
        start = time.monotonic()
        deadline = start + timeout
        with self._cond:
            while (self._queue or self._in_flight or self._publishing) and time.monotonic() < deadline:
                if not self._connected and time.monotonic() - start >= unreachable_wait:
                    break
                self._cond.wait(max(0.0, min(0.1, deadline - time.monotonic())))
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.0, deadline - time.monotonic()) + 1.0)
        self._client.disconnect()
        self._client.loop_stop()
        with self._cond:  # paho has stopped: nothing left now is acknowledged any more
            left = self.pending()
            self.failed += left
            self._queue.clear()
            self._in_flight.clear()
            self._publishing = 0
            self._closed = True  # a publish still under way when the join gave up counts nothing more
        if left:
            log.warning("mqtt: %d event(s) not delivered before shutdown (broker %s:%d %s)", left,
                        self.target.host, self.target.port, "connected" if self._connected else "unreachable")
        return left == 0

    # -- the sender thread -------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closing:
                    now = time.monotonic()
                    if self._may_publish(now):
                        break
                    holding = self._hold_until - now
                    self._cond.wait(holding if holding > 0 and self._in_flight else None)
                if self._closing:
                    return
                event = self._queue.popleft()
                self._publishing += 1
                connection = self.connects
            try:
                self._publish(event, connection)
            except Exception:  # noqa: BLE001 - one bad event must never end the sender thread
                with self._cond:
                    self.failed += not self._closed
                log.exception("mqtt: unexpected error publishing a %s event", event.get("type", "?"))
            finally:
                with self._cond:
                    self._publishing -= not self._closed
                    self._cond.notify_all()

    def _may_publish(self, now: float) -> bool:
        """Called with the lock held: an event is waiting, the broker is there, paho has room, and no message
        that paho sends again after a reconnection is still unacknowledged (they go first)."""
        if not (self._queue and self._connected and len(self._in_flight) + self._publishing < MAX_IN_FLIGHT):
            return False
        return not (self._in_flight and now < self._hold_until)

    def _publish(self, event: dict[str, Any], connection: int) -> None:
        """Hand one event to paho, over connection number ``connection``. Called without the lock: paho calls
        ``_on_publish`` (which takes it) while holding its own message lock, and publish() needs that lock too."""
        import paho.mqtt.client as mqtt

        topic = f"{self.target.topic}/{event.get('type', 'event')}"
        payload = json.dumps(event, ensure_ascii=False).encode("utf-8")
        info = self._client.publish(topic, payload, qos=self.qos)
        with self._cond:
            if self._closed:  # close() gave up on it and counted it as failed
                return
            if info.rc == mqtt.MQTT_ERR_NO_CONN and self.connects == connection:  # it dropped just now
                self._connected = False  # until _on_connect
            if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and self.qos):
                # After NO_CONN paho keeps a QoS 1 message and sends it on reconnection, before anything
                # newer, so it is in flight like the others.
                if self.qos == 0 or info.mid in self._acked:  # QoS 0, or the PUBACK beat us here
                    self._acked.discard(info.mid)
                    self.delivered += 1
                else:
                    self._in_flight[info.mid] = event
                    if self.connects != connection:
                        # Reconnected since this publish began: paho may send it again after the newer
                        # connection's CONNACK, so newer events wait for it, as in _on_connect.
                        self._hold_until = time.monotonic() + RESEND_WAIT
                if not self._in_flight:
                    self._hold_until = 0.0
            elif info.rc == mqtt.MQTT_ERR_NO_CONN:  # QoS 0: paho forgets it; back to the queue's head
                self._queue.appendleft(event)
            else:
                self.failed += 1
                log.warning("mqtt: cannot publish a %s event: %s", event.get("type", "?"),
                            mqtt.error_string(info.rc))

    # -- paho's callbacks (its network thread) ---------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            if reason_code.is_failure:
                log.warning("mqtt: broker %s:%d refused the connection: %s", self.target.host, self.target.port,
                            reason_code)
                return
            self.connects += 1
            self._connected = True
            # paho sends what is in flight (or being handed to it) again once this callback returns;
            # newer events wait for those.
            self._hold_until = time.monotonic() + RESEND_WAIT if self._in_flight or self._publishing else 0.0
            self._cond.notify_all()
        if self.connects > 1:
            log.info("mqtt: reconnected to %s:%d", self.target.host, self.target.port)

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        with self._cond:
            was_connected, self._connected = self._connected, False
            self._cond.notify_all()
        if was_connected and not self._closing:
            log.warning("mqtt: lost the broker %s:%d (%s); reconnecting", self.target.host, self.target.port,
                        reason_code)

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._cond:
            if self._in_flight.pop(mid, None) is not None:
                self.delivered += 1
                if not self._in_flight:
                    self._hold_until = 0.0  # everything sent again is acknowledged
            elif self.qos:
                self._acked.add(mid)  # acknowledged before _publish() recorded it
            self._cond.notify_all()
