"""Prometheus metrics of the feature server, with ``prometheus_client``.

Each app owns its registry (tests build several apps in one process). Routes
are labelled by their template, never by the raw path, so the label set stays
bounded. With several workers, each process reports its own counts.

The figures every request moves (request counts, latency and entity
histograms, per-view read counts) are plain integers and floats updated on the
event loop thread, and a collector turns them into metric families when
``/metrics`` is scraped: a ``prometheus_client`` child takes a lock on every
``inc``/``observe`` and walks the buckets in Python, about as much CPU per
request as rendering the answer. The output is the same text (``_total``,
``_bucket``, ``_created`` samples). Errors, rare, use a ``Counter`` as is.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["CONTENT_TYPE_LATEST", "ServerMetrics"]

# latency buckets for millisecond-scale answers
_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ENTITY_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)


class _Histogram:
    """Bucket counts (the last one is +Inf), sum and creation time of one label set."""

    __slots__ = ("counts", "sum", "created")

    def __init__(self, n: int) -> None:
        self.counts = [0] * (n + 1)
        self.sum = 0.0
        self.created = time.time()


class ServerMetrics:
    def __init__(self, routes: Iterable[str]) -> None:
        self.routes = frozenset(routes)
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests: dict[tuple[str, str, str], list[float]] = {}  # labels -> [count, created]
        self._latency: dict[str, _Histogram] = {}
        self._view_reads: dict[str, list[float]] = {}
        self._entities = _Histogram(len(_ENTITY_BUCKETS))
        self.errors = Counter("quiver_http_errors", "Requests that failed, by error class", ["route", "error"],
                              registry=self.registry)
        self.registry.register(_Collector(self))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def error(self, route: str, name: str) -> None:
        self.errors.labels(route, name).inc()

    def reads(self, views: Iterable[str], n: int) -> None:
        """One feature request of ``n`` entities that read ``views``."""
        h = self._entities
        h.counts[bisect_left(_ENTITY_BUCKETS, n)] += 1
        h.sum += n
        reads = self._view_reads
        for v in views:
            c = reads.get(v)
            if c is None:
                c = reads[v] = [0, time.time()]
            c[0] += n

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request and record its latency."""
        key = (route, method, str(status))
        c = self._requests.get(key)
        if c is None:
            c = self._requests[key] = [0, time.time()]
        c[0] += 1
        h = self._latency.get(route)
        if h is None:
            h = self._latency[route] = _Histogram(len(_BUCKETS))
        h.counts[bisect_left(_BUCKETS, seconds)] += 1
        h.sum += seconds

    def wrap(self, app: Any) -> Any:
        """An ASGI app that records count and latency of each HTTP request to ``app``."""
        routes = self.routes
        answered = self.answered

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
                answered(path if path in routes else "other", scope["method"], status, time.perf_counter() - start)

        return asgi


class _Collector(Collector):
    """The hot-path figures of a ``ServerMetrics`` as metric families, at scrape time."""

    def __init__(self, m: ServerMetrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m = self.m
        requests = CounterMetricFamily("quiver_http_requests", "HTTP requests answered",
                                       labels=["route", "method", "status"])
        for labels, (count, created) in list(m._requests.items()):
            requests.add_metric(labels, count, created=created)
        yield requests
        latency = HistogramMetricFamily("quiver_http_request_duration_seconds", "Time to answer a request",
                                        labels=["route"])
        for route, h in list(m._latency.items()):
            _histogram(latency, {"route": route}, _BUCKETS, h)
        yield latency
        reads = CounterMetricFamily("quiver_view_reads", "Entity rows read, per feature view", labels=["view"])
        for view, (count, created) in list(m._view_reads.items()):
            reads.add_metric([view], count, created=created)
        yield reads
        entities = HistogramMetricFamily("quiver_request_entities", "Entities per feature request")
        _histogram(entities, {}, _ENTITY_BUCKETS, m._entities)
        yield entities


def _histogram(family: HistogramMetricFamily, labels: dict[str, str], bounds: tuple[float, ...], h: _Histogram) -> None:
    counts = list(h.counts)
    cumulative = 0
    buckets = []
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += n
        buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
    family.add_metric(list(labels.values()), buckets, h.sum)
    family.add_sample(family.name + "_created", labels, h.created)
