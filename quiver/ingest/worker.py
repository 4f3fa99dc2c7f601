"""The Kafka stream worker: consume each ``KafkaSource`` in a consumer group and hand
every batch to an ``EventIngestor`` (``quiver.ingest.stream``), with metrics and status.

Per batch: poll (a columnar ``Batch``), drop what the state already holds, parse,
write the offline event files, then send the online write, left in flight while
the next batch is read and parsed (or made durable at once when the worker has
caught up); Kafka's committed offsets and the latencies follow once it is durable.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from quiver.definitions import FeatureView, KafkaSource
from quiver.errors import InputError
from quiver.ingest.stream import (
    EventIngestor,
    drop_files_after,
    parse_messages,
    write_dead_letters,
    write_event_files,
)

__all__ = ["StreamWorker", "kafka_sources", "views_over"]

log = logging.getLogger("quiver.stream")


def views_over(source_name: str, views: Sequence[FeatureView]) -> list[FeatureView]:
    return [v for v in views if v.source.name == source_name]


def kafka_sources(views: Sequence[FeatureView]) -> dict[str, KafkaSource]:
    out: dict[str, KafkaSource] = {}
    for v in views:
        if isinstance(v.source, KafkaSource):
            out[v.source.name] = v.source
    return out


# -- the Kafka worker -------------------------------------------------------------------


class _Metrics:
    """Prometheus metrics of a worker (when prometheus-client is installed)."""

    def __init__(self, port: int | None, monitor_registry: Any = None) -> None:
        try:
            import prometheus_client as prom
        except ImportError:  # pragma: no cover - optional
            self.enabled = False
            return
        self.enabled = True
        self.registry = prom.CollectorRegistry()
        self.events = prom.Counter("quiver_stream_events", "Events written online and offline", ["source"],
                                   registry=self.registry)
        self.dead = prom.Counter("quiver_stream_dead_letters", "Messages sent to the dead-letter store",
                                 ["source"], registry=self.registry)
        self.lag = prom.Gauge("quiver_stream_consumer_lag", "Messages behind the end of the partition",
                              ["source", "partition"], registry=self.registry)
        self.latency = prom.Histogram("quiver_stream_event_to_online_seconds",
                                      "From the message's create time to its state being durable online",
                                      ["source"], registry=self.registry,
                                      buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        if monitor_registry is not None:  # the monitor's check results, beside the worker's own figures
            from quiver.monitoring.metrics import CheckCollector

            self.registry.register(CheckCollector(monitor_registry))
        self.server = prom.start_http_server(port, addr="127.0.0.1", registry=self.registry)[0] if port else None


class StreamWorker:
    """Consume the Kafka sources of some views until stopped (or idle, in tests)."""

    def __init__(self, views: Sequence[FeatureView], online: Any, offline_root: Path, *, registry: Any = None,
                 options: dict[str, Any] | None = None, worker_id: str | None = None) -> None:
        opts = dict(options or {})
        self.group = opts.pop("group", "quiver")
        # the store's preferred batch under a backlog (what it makes durable in one transaction)
        self.batch_size = int(opts.pop("batch_size", None) or getattr(online, "stream_batch_size", 5_000))
        self.poll_timeout = float(opts.pop("poll_timeout", 0.05))
        self.dead_letter_topic = opts.pop("dead_letter_topic", None)
        self.metrics_port = opts.pop("metrics_port", None)
        self.status_every = float(opts.pop("status_every", 2.0))
        self.bootstrap = opts.pop("bootstrap_servers", None)
        self.consumer_options = dict(opts.pop("consumer", {}) or {})
        self.online = online
        self.root = offline_root
        self.registry = registry
        self.worker_id = worker_id or f"{os.uname().nodename}-{os.getpid()}"
        sources = kafka_sources(views)
        if not sources:
            raise InputError("no feature view reads a KafkaSource; nothing to stream (use store.push for push sources)")
        self.parts = []
        for name, src in sources.items():
            over = views_over(name, views)
            ing = EventIngestor(src, over, online, offline_root)
            self.parts.append((src, over, ing))
        self.keep_metrics = bool(opts.pop("keep_metrics", False))  # tests scrape after the run
        self.metrics = _Metrics(int(self.metrics_port) if self.metrics_port else None, registry)
        self.streams: list[Any] = []
        self.stopped = False
        self.running = False
        self._inflight: tuple[Any, ...] | None = None
        self._file_end: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset after its last file

    def _open(self) -> None:
        from quiver import plugins

        cls = plugins.load("stream", "kafka")
        for src, _, _ in self.parts:
            self.streams.append(cls(self.bootstrap or src.bootstrap_servers, src.topic, self.group,
                                    start_offsets=self._held,
                                    options=self.consumer_options, dead_letter_topic=self.dead_letter_topic))

    def _held(self, topic: str) -> dict[int, int]:
        """The next offset per partition of ``topic`` that the online state holds."""
        return {int(k.split("/")[-1]): v for k, v in self.online.read_offsets(f"{topic}/").items()}

    def run(self, *, idle_exit: float | None = None, max_seconds: float | None = None) -> dict[str, Any]:
        """Consume until ``stop()``; with ``idle_exit``, return once every assigned
        partition is at its end and nothing came for that many seconds."""
        self._open()
        self.running = True
        t0 = time.monotonic()
        last_status = 0.0
        last_data = time.monotonic()
        try:
            while not self.stopped:
                got = 0
                for (src, views, ing), stream in zip(self.parts, self.streams):
                    got += self._step(src, views, ing, stream)
                now = time.monotonic()
                if got:
                    last_data = now
                if now - last_status >= self.status_every:
                    self._publish()
                    last_status = now
                if max_seconds is not None and now - t0 > max_seconds:
                    break
                if idle_exit is not None and not got and now - last_data > idle_exit and all(
                        s.assigned and s.assigned <= s.at_eof for s in self.streams):
                    break
        finally:
            self._settle()
            self.running = False  # the last status says so: a rebuild of the state may go ahead
            self._publish()
            for s in self.streams:
                s.close()
            self.streams = []
            if self.metrics.enabled and self.metrics.server is not None and not self.keep_metrics:
                self.metrics.server.shutdown()
        return self.status()

    def stop(self) -> None:
        self.stopped = True

    def _step(self, src: KafkaSource, views: list[FeatureView], ing: EventIngestor, stream: Any) -> int:
        """One batch. Its online write is left in flight while the next batch is read and
        parsed; Kafka offsets and latencies are recorded once the state is durable."""
        msgs = stream.poll(self.batch_size, self.poll_timeout)  # a Batch: the messages as columns
        if not len(msgs):
            self._settle()
            return 0
        held = self._held(src.topic) if ing.stats.batches == 0 else ing.stats.positions
        in_batch = np.unique(msgs.partitions).tolist()
        floor = np.zeros(len(msgs), dtype="int64")
        for p in in_batch:
            if held.get(p, 0):
                floor[msgs.partitions == p] = held[p]
        if (msgs.offsets < floor).any():  # already in the state
            msgs = msgs.take(np.flatnonzero(msgs.offsets >= floor))
            if not len(msgs):
                return 0
        table, dead, good = parse_messages(msgs, src, views)
        all_parts, all_offs = msgs.partitions, msgs.offsets
        good_idx = np.asarray(good, dtype="int64")
        parts = all_parts[good_idx] if len(good) != len(msgs) else all_parts
        first: dict[int, int] = {}
        nxt: dict[int, int] = {}
        for p in np.unique(all_parts).tolist():
            mine = all_offs[all_parts == p]
            first[p], nxt[p] = int(mine.min()), int(mine.max()) + 1
        for p, f in first.items():
            if self._file_end.get((src.topic, p)) != f:  # (re)started, rebalanced or sought: not where we left off
                drop_files_after(self.root, src, src.topic, p, f)
            self._file_end[(src.topic, p)] = nxt[p]
            name = f"{src.topic}-{p}-{f:020d}"
            write_event_files(self.root, src, table.filter(pa.array(parts == p)) if len(first) > 1 else table, name)
            write_dead_letters(self.root, src, [d for d in dead if d.partition == p], name)
        self._settle()
        pending = ing.ingest(table, {f"{src.topic}/{p}": o for p, o in nxt.items()}, to="online", wait=False)
        ing.stats.positions.update(nxt)
        created = (msgs.timestamps_ms[good_idx] if len(good) != len(msgs) else msgs.timestamps_ms).astype("float64")
        self._inflight = (pending, src, ing, stream, nxt, created)
        if len(msgs) < self.batch_size:  # caught up: nothing to overlap with, make it durable now
            self._settle()
        ing.stats.dead_letters += len(dead)
        if dead:
            log.warning("%d bad message(s) on %s, e.g. partition %d offset %d: %s", len(dead), src.topic,
                        dead[0].partition, dead[0].offset, dead[0].reason)
            stream.dead_letter([(d.payload, {"reason": d.reason, "topic": d.topic, "partition": str(d.partition),
                                             "offset": str(d.offset)}) for d in dead])
        if self.metrics.enabled:
            self.metrics.events.labels(src.name).inc(table.num_rows)
            self.metrics.dead.labels(src.name).inc(len(dead))
        return len(msgs)

    def _settle(self) -> None:
        """Wait for the batch in flight; then commit its offsets and record its latency."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        pending, src, ing, stream, nxt, created = inflight
        if not pending():  # the state held these offsets already: another worker got there first
            held = self._held(src.topic)
            log.warning("batch of %s already in the state; resuming from %s", src.topic, held)
            ing.stats.positions.update(held)
            stream.seek(held)
            return
        done_ms = time.time() * 1000
        stream.commit(nxt)
        created = np.where(created > 0, created, done_ms)
        if len(created):
            lat = done_ms - created
            ing.stats.observe_latency(lat)
            if self.metrics.enabled:  # a sample of at most 100 per batch keeps this off the hot path
                hist = self.metrics.latency.labels(src.name)
                for v in (lat[:: max(1, len(lat) // 100)] / 1000).tolist():
                    hist.observe(v)

    def _publish(self) -> None:
        for (src, _, ing), stream in zip(self.parts, self.streams):
            ing.stats.lag = stream.lag(ing.stats.positions)
            if self.metrics.enabled:
                for p, v in ing.stats.lag.items():
                    self.metrics.lag.labels(src.name, str(p)).set(v)
        if self.registry is not None:
            try:
                self.registry.set_value("stream_status", self.worker_id, self.status())
            except Exception as e:  # status is advisory; never stop consuming for it
                log.debug("could not publish stream status: %s", e)

    def status(self) -> dict[str, Any]:
        return {"worker": self.worker_id, "group": self.group, "running": self.running,
                "sources": {src.name: {"topic": src.topic, **ing.stats.to_dict()} for src, _, ing in self.parts}}
