"""Connection guards for uvicorn: slow and idle clients cannot hold the server.

Uvicorn (h11) gives a connection as long as it likes to send its request headers, and a single byte
cancels its keep-alive timer. Measured before this guard: connections that sent half a header, or
nothing, were still open after 95 s, and nothing bounded how many there could be. This protocol adds:

- a **header timeout**: a connection must deliver complete request headers within ``header_timeout``
  seconds of opening, or of its previous response (idle keep-alive connections included);
- a **body timeout**: the body must be complete within ``body_timeout`` seconds of the headers. The app
  answers 408 at ``--read-timeout`` first; this is the backstop for routes that never read their body;
- a **connection cap**: past ``max_connections``, the connection that has waited longest without a
  complete request (idle, half-sent headers or a trickled body) is closed to make room. Connections whose
  request is complete and being answered are never closed, so a flood of slow clients cannot lock
  out a client that sends its request at normal speed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("maskwatch.web")

WAITING, BODY, BUSY = "waiting", "body", "busy"
_FULL = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
         b"retry-after: 1\r\ncontent-length: 54\r\n\r\n"
         b'{"error": "too many connections, retry in a moment."}\n')


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the timeouts and the cap above; configure it with ``guarded_protocol``."""

    header_timeout: float = 10.0
    body_timeout: float = 35.0
    max_connections: int = 200

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard: asyncio.TimerHandle | None = None
        self._timed_cycle: object | None = None
        self._waiting_since = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._wait_for_request()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        phase = self.phase()
        if phase == BUSY:
            self._disarm()  # a complete request may wait in the queue and take its time to answer
        elif phase == BODY and self.cycle is not self._timed_cycle:
            self._timed_cycle = self.cycle
            self._arm(self.body_timeout)

    def on_response_complete(self) -> None:
        if not self.transport.is_closing():
            self._wait_for_request()  # before super(): it may start a pipelined request, which re-arms
        super().on_response_complete()

    def phase(self) -> str:
        """WAITING for request headers, reading the request's BODY, or BUSY answering a complete request."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return WAITING
        return BODY if cycle.more_body else BUSY

    # -- the guards -----------------------------------------------------------------------

    def _wait_for_request(self) -> None:
        self._waiting_since = self.loop.time()
        self._arm(self.header_timeout)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._guard = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _expire(self) -> None:
        self._guard = None
        if self.transport.is_closing() or self.phase() == BUSY:
            return
        log.debug("closing a connection from %s that sent no complete request in time", self.client)
        self.transport.close()

    def _make_room(self) -> None:
        """Over the cap: close the connection that has waited longest for a complete request, or this one."""
        candidates = [
            other for other in self.connections
            if other is not self and isinstance(other, GuardedH11Protocol) and other.phase() != BUSY
            and not other.transport.is_closing()
        ]
        if candidates:
            oldest = min(candidates, key=lambda other: other._waiting_since)
            log.info("connection cap (%d) reached: closing one that has sent no complete request for %.1f s",
                     self.max_connections, self.loop.time() - oldest._waiting_since)
            oldest.transport.close()
            return
        log.warning("connection cap (%d) reached and every connection is being answered: refusing one",
                    self.max_connections)
        self.transport.write(_FULL)
        self.transport.close()


def guarded_protocol(header_timeout: float, body_timeout: float, max_connections: int) -> type[GuardedH11Protocol]:
    """A protocol class for ``uvicorn.run(http=...)`` with these limits."""
    return type("MaskwatchH11Protocol", (GuardedH11Protocol,), {
        "header_timeout": header_timeout, "body_timeout": body_timeout, "max_connections": max_connections,
    })
