"""Prometheus metrics of the feature server, with ``prometheus_client``.

Each app owns its registry (tests build several apps in one process). A pure
ASGI wrapper times every request; routes are labelled by their template, never
by the raw path, so the label set stays bounded. With several workers, each
process reports its own counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

# latency buckets for millisecond-scale answers
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServerMetrics:
    def __init__(self, routes: Iterable[str]) -> None:
        self.routes = frozenset(routes)
        self._children = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("quiver_http_requests", "HTTP requests answered", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("quiver_http_request_duration_seconds", "Time to answer a request", ["route"],
                                 buckets=_BUCKETS, registry=self.registry)
        self.errors = Counter("quiver_http_errors", "Requests that failed, by error class", ["route", "error"],
                              registry=self.registry)
        self.view_reads = Counter("quiver_view_reads", "Entity rows read, per feature view", ["view"],
                                  registry=self.registry)
        self.entities = Histogram("quiver_request_entities", "Entities per feature request",
                                  buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000), registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def error(self, route: str, name: str) -> None:
        self.errors.labels(route, name).inc()

    def reads(self, views: Iterable[str], n: int) -> None:
        self.entities.observe(n)
        for v in views:
            self._child(self.view_reads, v).inc(n)

    _children: dict[tuple[Any, ...], Any]

    def _child(self, metric: Any, *labels: str) -> Any:
        """A labelled child, looked up once (``labels()`` takes a lock on every call)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and record its latency."""
        self._child(self.requests, route, method, str(status)).inc()
        self._child(self.latency, route).observe(seconds)

    def wrap(self, app: Any) -> Any:
        """An ASGI app that records count and latency of each HTTP request to ``app``."""
        routes = self.routes
        requests = self.requests
        latency = self.latency
        child = self._child

        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            start = time.perf_counter()
            status = 500

            async def send_status(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, send_status)
            finally:
                path = scope["path"]
                route = path if path in routes else "other"
                child(requests, route, scope["method"], str(status)).inc()
                child(latency, route).observe(time.perf_counter() - start)

        return asgi
