"""The few numbers an operator needs, in Prometheus' text exposition format (version 0.0.4).

Written by hand rather than with prometheus_client: three metric families do not
justify a dependency, and the format is a handful of lines.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import Counter

from maskwatch.labels import LABELS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds. A 640x480 frame takes tens of milliseconds; a 24 MP photo on a busy machine can take seconds.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Labels come from fixed sets: a client choosing its own method name or path must not create series.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
OTHER = "other"


class Histogram:
    """Cumulative-bucket histogram of one series, as Prometheus expects."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            le = "+Inf" if bound == math.inf else _number(bound)
            out.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{braces} {_number(self.total)}")
        out.append(f"{name}_count{braces} {running}")
        return out


class Metrics:
    """Request counts by route and status, latency by route, faces by label, work in flight."""

    def __init__(self, routes: tuple[str, ...] | None = None) -> None:
        """``routes``: the route labels allowed; any other becomes "other" (None: trust the caller)."""
        self.routes = frozenset(routes) if routes is not None else None
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.faces: Counter[str] = Counter()
        self.images: Counter[str] = Counter()
        self.in_flight = 0

    def record_request(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else OTHER
        if self.routes is not None and route not in self.routes:
            route = OTHER
        with self._lock:
            self.requests[(route, method, status)] += 1
            self.latency.setdefault(route, Histogram()).observe(seconds)

    def record_image(self, ok: bool, labels: list[str]) -> None:
        with self._lock:
            self.images["ok" if ok else "error"] += 1
            self.faces.update(labels)

    def add_in_flight(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta

    def render(self) -> str:
        with self._lock:
            lines = [
                "# HELP maskwatch_http_requests_total HTTP requests by route, method and status code.",
                "# TYPE maskwatch_http_requests_total counter",
            ]
            for (route, method, status), count in sorted(self.requests.items()):
                labels = _labels(route=route, method=method, status=str(status))
                lines.append(f"maskwatch_http_requests_total{{{labels}}} {count}")
            lines += [
                "# HELP maskwatch_http_request_duration_seconds Time from request start to response end.",
                "# TYPE maskwatch_http_request_duration_seconds histogram",
            ]
            for route, histogram in sorted(self.latency.items()):
                lines += histogram.lines("maskwatch_http_request_duration_seconds", _labels(route=route))
            lines += [
                "# HELP maskwatch_faces_total Faces found in analysed images, by label.",
                "# TYPE maskwatch_faces_total counter",
            ]
            known = LABELS  # always shown, so rates start from zero
            for label in (*known, *sorted(set(self.faces) - set(known))):
                lines.append(f"maskwatch_faces_total{{{_labels(label=label)}}} {self.faces[label]}")
            lines += [
                "# HELP maskwatch_images_total Images analysed, by outcome.",
                "# TYPE maskwatch_images_total counter",
            ]
            for outcome in ("ok", "error"):
                lines.append(f"maskwatch_images_total{{{_labels(outcome=outcome)}}} {self.images[outcome]}")
            lines += [
                "# HELP maskwatch_inference_in_flight Detection requests being read, queued or analysed.",
                "# TYPE maskwatch_inference_in_flight gauge",
                f"maskwatch_inference_in_flight {self.in_flight}",
            ]
        return "\n".join(lines) + "\n"


def _labels(**values: str) -> str:
    return ",".join(f'{key}="{_escape(value)}"' for key, value in values.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value))  # "0.025", "1.0", "1e+16": all valid Go floats, as Prometheus parses them
