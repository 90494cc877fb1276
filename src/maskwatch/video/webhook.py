"""POST events to a webhook from a background thread, so a slow or failing receiver never stalls video.

Events wait in a bounded queue; when it is full the oldest is dropped (and counted):
a fresh alert matters more than a stale one. Failed deliveries (network errors,
HTTP 5xx and 429) are retried with exponential back-off; other 4xx answers are
final, since sending the same body again cannot fix them.
"""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from maskwatch.video.events import EventQueue

log = logging.getLogger("maskwatch.video")


class WebhookError(ValueError):
    """A webhook URL that maskwatch will not post to."""


def validate_webhook_url(url: str) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host; raise WebhookError otherwise.

    Everything urllib would only trip over at the first event fails here, at start: user-info
    (``user:pass@``, which urllib cannot send and which would end up in logs) and a bad port.
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # reading it validates it: "host:99999" and "host:x" raise ValueError
    except ValueError as exc:
        raise WebhookError(f"webhook URL is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookError(f"webhook URL must start with http:// or https://, got {url!r}")
    if "@" in parts.netloc:
        raise WebhookError("webhook URL must not contain a user name or password (user:pass@host); "
                           "put a token in the path or query instead")
    if not parts.hostname:
        raise WebhookError(f"webhook URL has no host: {url!r}")
    if port == 0:
        raise WebhookError(f"webhook URL has port 0: {url!r}")
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: a receiver must not be able to bounce events (and their POST) elsewhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl) -> None:  # urllib's signature
        return None


class WebhookSink(EventQueue):
    """Deliver JSON events to ``url`` in order, from one daemon thread."""

    def __init__(
        self,
        url: str,
        max_queue: int = 100,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        super().__init__("webhook", max_queue)
        self.url = validate_webhook_url(url)
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.attempts = 0  # failed: given up after all retries, refused by the receiver, or unsent at close()
        self._closed = False  # close() has counted what was left: the sender thread counts nothing more
        self._busy = False
        self._opener = urllib.request.build_opener(_NoRedirects)
        self._thread = threading.Thread(target=self._run, name="maskwatch-webhook", daemon=True)
        self._thread.start()

    def pending(self) -> int:
        return len(self._queue) + self._busy

    def close(self, timeout: float = 10.0) -> bool:
        """Deliver what is queued for up to ``timeout`` seconds, then stop; True if nothing was left.

        What is still queued then counts as failed; so does an event whose delivery is still in flight when
        the sender thread does not end in time (once, never twice: the probe saw 16 outcomes for 15 events).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._queue or self._busy) and time.monotonic() < deadline:
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            self._closing = True
            self._cond.notify_all()
        # Bounded: a request in flight ends within its own timeout, but close() must not hang on it.
        self._thread.join(max(0.0, deadline - time.monotonic()) + self.timeout)
        with self._cond:
            left = len(self._queue) + self._busy
            self.failed += left
            self._queue.clear()
            self._busy = False
            self._closed = True
        if left:
            log.warning("webhook: %d event(s) not delivered before shutdown", left)
        return left == 0

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing:
                    return
                event = self._queue.popleft()
                self._busy = True
            outcome = "failed"
            try:
                outcome = self._deliver(event)
            except Exception:  # noqa: BLE001 - one bad delivery must never end the sender thread
                log.exception("webhook: unexpected error delivering a %s event", event.get("type", "?"))
            finally:
                with self._cond:
                    if not self._closed:  # else close() has already counted this event as failed
                        self.delivered += outcome == "delivered"
                        self.failed += outcome == "failed"
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, event: dict[str, Any]) -> str:
        """POST one event with retries: "delivered" or "failed" (counted by the caller)."""
        body = json.dumps(event, ensure_ascii=False).encode("utf-8")
        delay = self.backoff
        for attempt in range(self.retries + 1):
            self.attempts += 1
            outcome = self._post(body)
            if outcome is None:
                return "delivered"
            if outcome.startswith("final") or attempt == self.retries:
                break
            log.info("webhook: %s; retrying in %.1f s", outcome, delay)
            if self._sleep(delay):
                break
            delay = min(delay * 2, self.max_backoff)
        log.warning("webhook: giving up on a %s event: %s", event.get("type", "?"), outcome)
        return "failed"

    def _post(self, body: bytes) -> str | None:
        """POST once; None on success, else why it failed ("final: ..." when retrying cannot help)."""
        request = urllib.request.Request(
            self.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "maskwatch"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                response.read()
            return None
        except urllib.error.HTTPError as exc:
            retry = exc.code >= 500 or exc.code == 429
            return f"{'' if retry else 'final: '}HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        except http.client.HTTPException as exc:  # BadStatusLine, IncompleteRead, LineTooLong...
            return f"{type(exc).__name__}: {exc!r}"[:300]
        except ValueError as exc:  # InvalidURL and the like: sending again cannot help
            return f"final: {type(exc).__name__}: {exc}"

    def _sleep(self, seconds: float) -> bool:
        """Wait between retries; True if the sink is closing and should stop retrying."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closing, timeout=seconds)
