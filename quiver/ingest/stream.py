"""The stream path: messages -> parsed events -> online aggregation state + offline events.

``EventIngestor`` is shared by ``store.push`` (rows in hand) and the Kafka
worker (``quiver.ingest.worker.StreamWorker``). Per batch, in this order:

1. the events go to the offline store, in files named after the first offset
   of each partition in the batch, so a batch replayed after a crash
   overwrites the same files instead of adding copies;
2. the aggregation state of every aggregate view over the source (and the
   latest row of every snapshot view) is merged online, in one transaction
   with the next offset of each partition (``topic/partition`` scopes);
3. Kafka's committed offsets follow, for monitoring only.

A worker killed anywhere restarts at the offsets the online state holds, so
it neither loses nor double-counts. Messages that cannot be read go to the
dead-letter store (Parquet under ``{offline}/dead_letters/{source}``, and a
Kafka topic when ``stream.dead_letter_topic`` is set) with the reason, topic,
partition and offset; the worker counts them and keeps going.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quiver.aggregation.state import StateLayout
from quiver.definitions import FeatureView, Source
from quiver.errors import InputError, TransientError
from quiver.timeutil import TIMESTAMP, to_utc
from quiver.offline.parquet import write_atomic

__all__ = ["DeadLetter", "EventIngestor", "StreamStats", "parse_messages", "rows_to_events"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    topic: str
    partition: int
    offset: int
    payload: bytes | None


# -- parsing ------------------------------------------------------------------------


def _needed(source: Source, views: Sequence[FeatureView]) -> tuple[list[str], list[str], list[str]]:
    """(required columns, optional numeric columns, other optional columns), named as the views name them."""
    keys = list(dict.fromkeys(k for v in views for k in v.join_keys))
    numeric: list[str] = []
    other: list[str] = []
    for v in views:
        for a in v.aggregations:
            want_num = a.function in ("sum", "mean", "stddev") or (
                a.function in ("min", "max") and (a.dtype is None or a.dtype.is_numeric))
            (numeric if want_num else other).append(a.column)
        other += [v.source_column(f.name) for f in v.schema]
    numeric = list(dict.fromkeys(numeric))
    other = [c for c in dict.fromkeys(other) if c not in numeric and c not in keys]
    if source.created_timestamp_column:
        other.append(source.created_timestamp_column)
    return keys, numeric, other


def _epoch_to_us(x: float) -> int:
    """Epoch seconds, milliseconds or microseconds (told apart by magnitude) to microseconds."""
    a = abs(x)
    if a >= 1e14:
        return int(x)
    if a >= 1e11:
        return int(x * 1_000)
    return int(round(x * 1_000_000))


def _timestamp_us(v: Any) -> int:
    if isinstance(v, bool) or v is None:
        raise ValueError
    if isinstance(v, int | float):
        return _epoch_to_us(v)
    d = to_utc(v)  # ISO strings, datetimes (naive = UTC), pandas Timestamps, dates
    return int((d - datetime(1970, 1, 1, tzinfo=UTC)) // _US)


_US = __import__("datetime").timedelta(microseconds=1)


def rows_to_events(
    rows: list[dict[str, Any]],
    source: Source,
    views: Sequence[FeatureView],
    where: list[tuple[str, int, int]] | None = None,
) -> tuple[pa.Table, list[DeadLetter], list[int]]:
    """Parsed JSON objects -> an events table with the views' column names, the dead
    letters, and the index of each good row in ``rows``."""
    mapping = source.field_mapping
    ts_name = source.timestamp_field
    keys, numeric, other = _needed(source, views)
    if mapping:
        rows = [{mapping.get(k, k): v for k, v in r.items()} for r in rows]
    bad: dict[int, str] = {}
    ts_vals: list[int] = []
    ts_get = [r.get(ts_name) for r in rows]
    for i, v in enumerate(ts_get):
        try:
            ts_vals.append(_timestamp_us(v))
        except (ValueError, TypeError, InputError, OverflowError):
            bad[i] = f"missing field {ts_name!r}" if v is None else f"unreadable timestamp {ts_name}={v!r}"
            ts_vals.append(0)
    cols: dict[str, list[Any]] = {}
    for k in keys:
        vals = cols[k] = [r.get(k) for r in rows]
        for i, v in enumerate(vals):
            if v is None and i not in bad:
                bad[i] = f"missing field {k!r}"
            elif isinstance(v, dict | list | bool | float) and i not in bad:
                bad[i] = f"wrong type for {k!r}: {type(v).__name__}"
    for c in numeric:
        vals = cols[c] = [r.get(c) for r in rows]
        for i, v in enumerate(vals):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)) and i not in bad:
                bad[i] = f"wrong type for {c!r}: {type(v).__name__} {v!r}, expected a number"
    seen = set().union(*rows) if rows else set()  # every field goes offline, not only those the views use
    for c in [*other, *sorted(seen - set(keys) - set(numeric) - set(other) - {ts_name})]:
        cols[c] = [r.get(c) for r in rows]
    good = [i for i in range(len(rows)) if i not in bad]
    dead = []
    if bad:
        w = where or [("", -1, -1)] * len(rows)
        dead = [DeadLetter(reason, w[i][0], w[i][1], w[i][2], None) for i, reason in sorted(bad.items())]
    data: dict[str, Any] = {}
    sel = np.asarray(good, dtype="int64")
    for name, vals in cols.items():
        arr = [vals[i] for i in good] if bad else vals
        if name in numeric:
            data[name] = pa.array(arr, pa.float64()) if any(isinstance(x, float) for x in arr) else pa.array(arr)
        else:
            try:
                data[name] = pa.array(arr)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                data[name] = pa.array([None if x is None else str(x) for x in arr], pa.string())
        if pa.types.is_null(data[name].type):
            data[name] = data[name].cast(pa.float64() if name in numeric else pa.string())
    data[ts_name] = pa.array(np.asarray(ts_vals, dtype="int64")[sel] if bad else ts_vals, pa.int64()).cast(TIMESTAMP)
    if source.created_timestamp_column and source.created_timestamp_column in data:
        c = source.created_timestamp_column
        try:
            data[c] = pa.array([None if x is None else _timestamp_us(x) for x in data[c].to_pylist()],
                               pa.int64()).cast(TIMESTAMP)
        except (ValueError, TypeError, InputError):
            data.pop(c)
    return pa.table(data), dead, good


def _epoch_array_us(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Epoch seconds, milliseconds or microseconds (by magnitude) -> timestamps, vectorized."""
    x = col.to_numpy(zero_copy_only=False).astype("float64")
    a = np.abs(x)
    us = np.where(a >= 1e14, x, np.where(a >= 1e11, x * 1e3, np.round(x * 1e6))).astype("int64")
    return pa.array(us, pa.int64()).cast(TIMESTAMP)


def _parse_fast(messages: Sequence[Any], source: Source, views: Sequence[FeatureView]) -> pa.Table | None:
    """The whole batch parsed by Arrow's JSON reader, or None when any message needs a
    closer look (then the per-message path finds the bad ones)."""
    import io

    import pyarrow.json as pj

    values = getattr(messages, "values", None)  # a Batch has them as a column
    if values is None:
        values = [m.value for m in messages]
    if any(v is None for v in values):
        return None
    buf = b"\n".join(values)
    if buf.count(b"\n") != len(values) - 1:
        return None  # a message with a line break inside
    try:
        table = pj.read_json(io.BytesIO(buf), read_options=pj.ReadOptions(use_threads=False, block_size=max(1 << 20, len(buf) + 1)))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None
    if table.num_rows != len(values):
        return None
    if source.field_mapping:
        table = table.rename_columns([source.field_mapping.get(c, c) for c in table.column_names])
    keys, numeric, _ = _needed(source, views)
    ts = source.timestamp_field
    names = set(table.column_names)
    for k in keys:
        if k not in names or table.column(k).null_count:
            return None
        t = table.column(k).type
        if not (pa.types.is_integer(t) or pa.types.is_string(t)):
            return None
    if ts not in names or table.column(ts).null_count:
        return None
    tcol = table.column(ts)
    try:
        if pa.types.is_integer(tcol.type) or pa.types.is_floating(tcol.type):
            tcol = _epoch_array_us(tcol)
        elif pa.types.is_string(tcol.type) or pa.types.is_timestamp(tcol.type):
            tcol = pc.cast(tcol, TIMESTAMP)
        else:
            return None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    table = table.set_column(table.schema.get_field_index(ts), ts, tcol)
    for c in numeric:
        if c in names:
            t = table.column(c).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)):
                return None
        else:
            table = table.append_column(c, pa.nulls(table.num_rows, pa.float64()))
    for c in table.column_names:  # nested values go offline as JSON text, as the per-message path keeps them
        if pa.types.is_struct(table.column(c).type) or pa.types.is_list(table.column(c).type):
            return None
    if pa.types.is_null(table.column(ts).type):
        return None
    return table


def parse_messages(messages: Sequence[Any], source: Source, views: Sequence[FeatureView]) -> tuple[pa.Table, list[DeadLetter], list[int]]:
    """Kafka messages (JSON objects) -> events, dead letters, and the index of each good message."""
    fast = _parse_fast(messages, source, views) if messages else None
    if fast is not None:
        return fast, [], list(range(len(messages)))
    rows: list[dict[str, Any]] = []
    where: list[tuple[str, int, int]] = []
    index: list[int] = []
    dead: list[DeadLetter] = []
    loads = orjson.loads
    for i, m in enumerate(messages):
        try:
            obj = loads(m.value) if m.value is not None else None
        except orjson.JSONDecodeError as e:
            dead.append(DeadLetter(f"not JSON: {e}", m.topic, m.partition, m.offset, m.value))
            continue
        if not isinstance(obj, dict):
            dead.append(DeadLetter(f"not a JSON object: {type(obj).__name__}", m.topic, m.partition, m.offset, m.value))
            continue
        rows.append(obj)
        where.append((m.topic, m.partition, m.offset))
        index.append(i)
    table, more, good = rows_to_events(rows, source, views, where)
    for d in more:
        pos = next(j for j, w in enumerate(where) if w[1:] == (d.partition, d.offset))
        dead.append(DeadLetter(d.reason, d.topic, d.partition, d.offset, messages[index[pos]].value))
    return table, dead, [index[g] for g in good]


# -- files of events and dead letters -------------------------------------------------


def write_event_files(root: Path, source: Source, table: pa.Table, name: str) -> None:
    """Events under ``{offline}/events/{source}/date=YYYY-MM-DD/{name}.parquet`` (the
    offline engine's layout for stream events), replacing any file of that name, in
    any day, that an interrupted earlier attempt at the same batch left."""
    base = root / "events" / source.name
    ts = source.timestamp_field
    day_no = pc.cast(pc.cast(table[ts], TIMESTAMP), pa.int64()).to_numpy() // 86_400_000_000 if table.num_rows \
        else np.empty(0, "int64")
    numbers = np.unique(day_no).tolist()
    wanted = {datetime.fromtimestamp(d * 86_400, UTC).strftime("%Y-%m-%d"): d for d in numbers}
    if base.is_dir():  # one stat per day folder, not a listing of every file in them
        for folder in base.iterdir():
            if folder.name.startswith("date=") and folder.name.removeprefix("date=") not in wanted:
                (folder / f"{name}.parquet").unlink(missing_ok=True)
    for day in sorted(wanted):
        part = table.filter(pa.array(day_no == wanted[day])) if len(numbers) > 1 else table
        d = base / f"date={day}"
        d.mkdir(parents=True, exist_ok=True)
        write_atomic(part, d / f"{name}.parquet")


def drop_files_after(root: Path, source: Source, topic: str, partition: int, first: int) -> int:
    """Remove the event and dead-letter files of ``topic``/``partition`` that start after
    offset ``first``: only a worker stopped before their state was durable leaves such
    files, and reading again from ``first`` writes those events anew, in batches whose
    edges need not match the old files' (kept, they would hold the events twice)."""
    prefix = f"{topic}-{partition}-"
    dropped = 0
    for pattern in (f"events/{source.name}/date=*/{prefix}*.parquet", f"dead_letters/{source.name}/{prefix}*.parquet"):
        for f in root.glob(pattern):
            rest = f.stem.removeprefix(prefix)
            if len(rest) == 20 and rest.isdigit() and int(rest) > first:
                f.unlink(missing_ok=True)
                dropped += 1
    return dropped


def write_dead_letters(root: Path, source: Source, dead: Sequence[DeadLetter], name: str) -> None:
    if not dead:
        return
    d = root / "dead_letters" / source.name
    d.mkdir(parents=True, exist_ok=True)
    t = pa.table({
        "reason": [x.reason for x in dead],
        "topic": [x.topic for x in dead],
        "partition": pa.array([x.partition for x in dead], pa.int32()),
        "offset": pa.array([x.offset for x in dead], pa.int64()),
        "payload": pa.array([x.payload for x in dead], pa.binary()),
        "received_at": pa.array([datetime.now(UTC)] * len(dead), TIMESTAMP),
    })
    write_atomic(t, d / f"{name}.parquet")


def read_dead_letters(root: Path, source_name: str | None = None) -> pa.Table:
    base = root / "dead_letters"
    files = sorted(base.glob(f"{source_name or '*'}/*.parquet")) if base.is_dir() else []
    if not files:
        return pa.table({"reason": pa.array([], pa.string()), "topic": pa.array([], pa.string()),
                         "partition": pa.array([], pa.int32()), "offset": pa.array([], pa.int64())})
    return pa.concat_tables([pq.read_table(f) for f in files])


# -- the ingestor ---------------------------------------------------------------------


@dataclass
class StreamStats:
    """Counters and recent latencies of one worker (or of push calls)."""

    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)
    lag: dict[int, int] = field(default_factory=dict)
    last_event_us: int | None = None
    started_at: float = field(default_factory=time.time)

    def observe_latency(self, values_ms: np.ndarray) -> None:
        self.latencies_ms.extend(values_ms.tolist())
        if len(self.latencies_ms) > 200_000:
            del self.latencies_ms[: len(self.latencies_ms) - 100_000]

    def to_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms[-100_000:]) if self.latencies_ms else None
        return {
            "events": self.events,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "lag": {str(k): v for k, v in sorted(self.lag.items())},
            "positions": {str(k): v for k, v in sorted(self.positions.items())},
            "latency_ms_p50": None if lat is None else float(np.percentile(lat, 50)),
            "latency_ms_p99": None if lat is None else float(np.percentile(lat, 99)),
            "last_event": None if self.last_event_us is None else
            datetime.fromtimestamp(self.last_event_us / 1e6, UTC).isoformat(),
            "updated_at": datetime.now(UTC).isoformat(),
            "uptime_s": round(time.time() - self.started_at, 1),
        }


class EventIngestor:
    """Events of one source -> offline events + online state of every view over it."""

    def __init__(self, source: Source, views: Sequence[FeatureView], online: Any, offline_root: Path,
                 offline: Any = None) -> None:
        self.source = source
        self.views = list(views)
        self.aggregate_views = [v for v in self.views if v.is_aggregate and v.online]
        self.snapshot_views = [v for v in self.views if not v.is_aggregate and v.online]
        self.layouts = [StateLayout(v) for v in self.aggregate_views]
        self.online = online
        self.offline = offline
        self.root = offline_root
        self.stats = StreamStats()

    def ingest(self, events: pa.Table, offsets: dict[str, int] | None = None, *, name: str | None = None,
               to: str = "online_and_offline", now_us: int | None = None, wait: bool = True) -> Any:
        """Write one batch (see the module docstring for the order); returns events written,
        or with ``wait=False`` a function that waits until the online state is durable
        (True, or False when the state already held these offsets)."""
        pending: Any = None
        if events.num_rows == 0 and not offsets:
            return 0
        ts = self.source.timestamp_field
        if events.num_rows and to in ("offline", "online_and_offline"):
            if name is not None:
                write_event_files(self.root, self.source, events, name)
            elif self.offline is not None and hasattr(self.offline, "write_events"):
                self.offline.write_events(self.source, events)
            else:
                write_event_files(self.root, self.source, events, f"push-{uuid.uuid4().hex}")
        if to in ("online", "online_and_offline"):
            now = now_us if now_us is not None else int(time.time() * 1_000_000)
            evs = events.rename_columns(["event_timestamp" if c == ts else c for c in events.column_names])
            writes = [lay.write(evs, now_us=now) for lay in self.layouts]
            if (writes or offsets) and wait:
                self._retry(lambda: self.online.write_aggregates(writes, offsets, now_us=now))
            elif writes or offsets:
                first = self.online.write_aggregates(writes, offsets, now_us=now, wait=False)

                def pending() -> bool:  # a lost reply is retried: the offsets make it idempotent
                    try:
                        return bool(first())
                    except TransientError:
                        return bool(self._retry(lambda: self.online.write_aggregates(writes, offsets, now_us=now)))
            for v in self.snapshot_views:
                cols = [c for c in [*v.join_keys, *(v.source_column(f.name) for f in v.schema), "event_timestamp"]
                        if c in evs.column_names]
                if "created_timestamp" in evs.column_names:
                    cols.append("created_timestamp")
                t = evs.select(cols).rename_columns([_feature_name(v, c) for c in cols])
                self._retry(lambda t=t, v=v: self.online.write(v, t))
        self.stats.events += events.num_rows
        self.stats.batches += 1
        if events.num_rows:
            mx = pc.max(pc.cast(events.column(ts), pa.int64())).as_py()
            self.stats.last_event_us = max(self.stats.last_event_us or mx, mx)
        if not wait:
            return pending or (lambda: True)
        return events.num_rows

    @staticmethod
    def _retry(fn: Any, attempts: int = 5) -> Any:
        for i in range(attempts):
            try:
                return fn()
            except TransientError:
                if i == attempts - 1:
                    raise
                time.sleep(0.05 * 2**i)
        return None


def _feature_name(view: FeatureView, column: str) -> str:
    for f in view.schema:
        if view.source_column(f.name) == column:
            return f.name
    return column


def push_events(rows: Any, source: Source, views: Sequence[FeatureView]) -> pa.Table:
    """Pushed rows -> events named as the views name them; a bad row fails the call."""
    from quiver.streams.push import to_table

    if isinstance(rows, list | tuple) and rows and all(isinstance(r, dict) for r in rows):
        table, dead, _ = rows_to_events(list(rows), source, views, [("push", 0, i) for i in range(len(rows))])
        if dead:
            shown = "; ".join(f"row {d.offset}: {d.reason}" for d in dead[:3])
            raise InputError(f"push to {source.name!r}: {len(dead)} bad row(s), nothing written: {shown}")
        return table
    table = to_table(rows)
    if source.field_mapping:
        table = table.rename_columns([source.field_mapping.get(c, c) for c in table.column_names])
    keys, numeric, _ = _needed(source, views)
    ts = source.timestamp_field
    missing = [c for c in [*keys, ts] if c not in table.column_names]
    if missing:
        raise InputError(f"push to {source.name!r}: the rows lack column(s) {missing}; they have {table.column_names}")
    for c in [*keys, ts]:
        if table.column(c).null_count:
            raise InputError(f"push to {source.name!r}: column {c!r} has nulls; every event needs it")
    col = table.column(ts)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        col = _epoch_array_us(col)
    else:
        from quiver.timeutil import to_timestamp_array

        col = to_timestamp_array(col, ts)
    table = table.set_column(table.schema.get_field_index(ts), ts, col)
    for c in numeric:
        if c in table.column_names and not (pa.types.is_integer(table.column(c).type) or
                                            pa.types.is_floating(table.column(c).type) or
                                            pa.types.is_null(table.column(c).type)):
            raise InputError(f"push to {source.name!r}: column {c!r} is {table.column(c).type}, expected numbers")
    return table
