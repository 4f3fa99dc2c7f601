"""StreamSource over Kafka (confluent-kafka): a consumer group member with dead-letter output.

Where to start reading is not the broker's business: the online state records,
in the same transaction as the aggregates, the next offset of every partition
it holds, and ``start_offsets`` hands those to each assignment. Kafka's own
committed offsets are written after the state is durable, for lag monitoring
and for partitions the state has never seen.

The driver is imported here only (``pip install 'quiver-fs[kafka]'``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from quiver.errors import TransientError

try:
    import confluent_kafka as ck
except ImportError as e:  # pragma: no cover - reported by plugins.load with the extra to install
    raise ImportError("confluent_kafka", name="confluent_kafka") from e

__all__ = ["Batch", "KafkaStream", "Message"]


class Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    value: bytes | None
    timestamp_ms: int | None  # the broker's create time, for event-to-online latency


class Batch:
    """The messages of one poll as columns (no object per message on the hot path);
    iterating or indexing it gives ``Message``s for the careful per-message parser."""

    __slots__ = ("offsets", "partitions", "timestamps_ms", "topic", "values")

    def __init__(self, topic: str, values: list[bytes | None], partitions: np.ndarray, offsets: np.ndarray,
                 timestamps_ms: np.ndarray) -> None:
        self.topic = topic
        self.values = values
        self.partitions = partitions
        self.offsets = offsets
        self.timestamps_ms = timestamps_ms  # 0 where the broker gave none

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> Message:
        ts = int(self.timestamps_ms[i])
        return Message(self.topic, int(self.partitions[i]), int(self.offsets[i]), self.values[i], ts or None)

    def __iter__(self) -> Iterator[Message]:
        return (self[i] for i in range(len(self.values)))

    def take(self, index: np.ndarray) -> Batch:
        return Batch(self.topic, [self.values[i] for i in index.tolist()], self.partitions[index],
                     self.offsets[index], self.timestamps_ms[index])


class KafkaStream:
    """One consumer of ``topic`` in ``group``; ``start_offsets(topic)`` gives the
    next offset per partition that the caller's state already holds."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        group: str,
        *,
        start_offsets: Callable[[str], dict[int, int]] | None = None,
        options: dict[str, Any] | None = None,
        dead_letter_topic: str | None = None,
    ) -> None:
        self.topic = topic
        self.bootstrap_servers = bootstrap_servers
        self.dead_letter_topic = dead_letter_topic
        self._start = start_offsets or (lambda _t: {})
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 1000,
            "fetch.queue.backoff.ms": 20,
            # a fetch that finds little returns within 100 ms (librdkafka's default waits 500 ms);
            # shorter costs the broker more requests for little (Tansu: 20 ms doubles its CPU)
            "fetch.wait.max.ms": 100,
            "enable.partition.eof": True,
        }
        conf.update(options or {})
        self._consumer = ck.Consumer(conf)
        self._producer: Any = None
        self.assigned: set[int] = set()
        self.at_eof: set[int] = set()
        self.high: dict[int, int] = {}
        self._consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        start = self._start(self.topic)
        for p in partitions:
            if p.partition in start:
                p.offset = start[p.partition]
        consumer.assign(partitions)
        self.assigned |= {p.partition for p in partitions}
        self.at_eof -= {p.partition for p in partitions}

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self.assigned -= {p.partition for p in partitions}
        consumer.unassign()

    def poll(self, max_messages: int, timeout: float) -> Batch:
        """Up to ``max_messages`` messages; partition ends are noted in ``at_eof``."""
        try:
            raw = self._consumer.consume(num_messages=max_messages, timeout=timeout)
        except ck.KafkaException as e:
            raise TransientError(f"Kafka {self.bootstrap_servers}: {e}") from e
        errors = [m for m in raw if m.error() is not None]
        if errors:
            for m in errors:
                err = m.error()
                if err is None or err.code() == ck.KafkaError._PARTITION_EOF:
                    continue
                if not (err.retriable() or err.code() in (ck.KafkaError._TRANSPORT, ck.KafkaError._ALL_BROKERS_DOWN)):
                    raise TransientError(f"Kafka topic {self.topic!r}: {err.str()}")
            ordered, raw = raw, [m for m in raw if m.error() is None]
        n = len(raw)
        parts = np.fromiter((m.partition() for m in raw), "int64", n)
        batch = Batch(self.topic, [m.value() for m in raw], parts, np.fromiter((m.offset() for m in raw), "int64", n),
                      np.fromiter((m.timestamp()[1] for m in raw), "int64", n))
        if n and self.at_eof:
            self.at_eof -= set(np.unique(parts).tolist())
        for m in ordered if errors else ():  # in order: a partition's end counts only after its last message
            err = m.error()
            if err is None:
                self.at_eof.discard(m.partition())
            elif err.code() == ck.KafkaError._PARTITION_EOF:
                self.at_eof.add(m.partition())  # type: ignore[arg-type]
                self.high[m.partition()] = m.offset()  # type: ignore[index,assignment]
        return batch

    def commit(self, offsets: dict[int, int]) -> None:
        """Commit the next offsets to read (only once the state covering them is durable)."""
        if offsets:
            tps = [ck.TopicPartition(self.topic, p, o) for p, o in offsets.items()]
            try:
                self._consumer.commit(offsets=tps, asynchronous=True)
            except ck.KafkaException:
                pass  # the state holds the offsets; Kafka's copy only serves lag monitoring

    def seek(self, offsets: dict[int, int]) -> None:
        """Read the assigned partitions again from ``offsets``."""
        for p, o in offsets.items():
            if p in self.assigned:
                try:
                    self._consumer.seek(ck.TopicPartition(self.topic, p, o))
                except ck.KafkaException:
                    pass

    def lag(self, positions: dict[int, int]) -> dict[int, int]:
        """Messages behind the log end per assigned partition (an estimate on some brokers)."""
        out = {}
        for p in sorted(self.assigned):
            try:  # the high watermark the last fetch response carried: no request to the broker
                _, high = self._consumer.get_watermark_offsets(ck.TopicPartition(self.topic, p), cached=True)
            except ck.KafkaException:
                high = -1
            high = max(high, self.high.get(p, 0))
            out[p] = max(0, high - positions.get(p, 0))
        return out

    def dead_letter(self, records: list[tuple[bytes | None, dict[str, str]]]) -> None:
        """Produce bad messages to ``dead_letter_topic`` with their reason in the headers."""
        if not self.dead_letter_topic or not records:
            return
        if self._producer is None:
            self._producer = ck.Producer({"bootstrap.servers": self.bootstrap_servers, "linger.ms": 5})
        for value, headers in records:
            self._producer.produce(self.dead_letter_topic, value=value, headers=list(headers.items()))
        self._producer.flush(10)

    def close(self) -> None:
        deadline = time.monotonic() + 10
        try:
            self._consumer.close()
        except RuntimeError:
            pass
        if self._producer is not None:
            self._producer.flush(max(0.0, deadline - time.monotonic()))
