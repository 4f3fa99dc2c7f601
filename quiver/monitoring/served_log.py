"""The served-vector log: a sample of what ``get_online_features`` returned,
kept in the offline store for the training/serving skew check.

Serving p99 must not move by more than 5%, and Python threads share one GIL:
Python-object work in a background thread (building Arrow arrays from the
responses' lists, pickling them, even marshalling references kept for it)
makes requests wait for the GIL, and keeping the responses' lists alive until
then promotes them into the GC's older generations, whose collections land on
the tail (the first version did both: p99 +224% at rate 1). So:

* ``ServedLog.log`` draws the sample and ``marshal``s one flat tuple, ``(schema
  number, request time, key columns..., feature columns..., request
  columns...)``, into bytes (no dict keys, no merged dict) and appends it to a
  deque: about 1 µs in a hot loop, the same for every sampled request, and
  nothing of the response stays alive;
* a daemon thread, every ``flush_seconds`` (or when ``batch`` records wait),
  pops them and writes one spool file under ``{offline}/served/spool/``: a
  ``bytes.join`` and a file write, both in C, the write with the GIL released;
* ``served_compact`` turns spool files into Parquet under
  ``{offline}/served/date=YYYY-MM-DD/`` (each file's schema metadata maps its
  columns to feature references). It runs in whoever reads the log (the skew
  check compacts first) and, once ``compact_bytes`` of spool files have been
  written, in a child process started by the writer at the lowest CPU priority
  (``nice`` 19), so a long-running server keeps its log in Parquet without
  converting anything under its own GIL, and rarely.

Request values (what on-demand views read from ``request_context`` or the
entity rows) are logged when the caller passes them, so the skew check can
recompute on-demand features too. When the writer cannot keep up, records
past ``max_buffer`` are dropped and counted, never blocking a request. A
forked child starts its own writer and leaves what was buffered at the fork to
the parent.

``quiver.yaml``::

    monitoring:
      served_log: {sample_rate: 0.1, flush_seconds: 1}   # sample_rate 0 (the default): off
      # also: batch (50000 records wake the writer early), max_buffer (200000 records),
      # compact_bytes (64 MiB of spool between compactions; 0: only readers compact)
"""

from __future__ import annotations

import atexit
import json
import logging
import marshal
import os
import random
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from datetime import UTC, datetime
from itertools import repeat
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = ["REQUEST_PREFIX", "REQUEST_TIME", "SPOOL_HEAD", "SPOOL_MAGIC", "SPOOL_VERSION", "ServedLog", "output_refs",
           "served_dir", "served_log_for", "spool_dir"]

log = logging.getLogger("quiver.monitoring")
REQUEST_TIME = "__request_time"
REQUEST_PREFIX = "__request."  # + a request field: the values an on-demand view read from the request
SPOOL_MAGIC = "quiver.served.spool"
SPOOL_VERSION = 3  # records: (schema number, time, column...)
TS = pa.timestamp("us", tz="UTC")
SPOOL_HEAD = struct.Struct("<I")  # spool file: header length, marshal header, then "[" + count + records
_LIST = struct.Struct("<ci")
_LOGS: dict[str, ServedLog] = {}
_LOCK = threading.Lock()
_LIVE: weakref.WeakSet[ServedLog] = weakref.WeakSet()
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SRC_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding the quiver package, for the child


def served_dir(config: Any) -> Path:
    return Path(config.resolve(config.offline.get("path", "data/offline"))) / "served"


def spool_dir(root: Path | str) -> Path:
    return Path(root) / "spool"


def output_refs(plan: Any) -> dict[str, str]:
    """Output column -> ``view:feature`` for an ``OnlinePlan``."""
    refs = {}
    for name, kind, j, i in plan.outputs:
        if kind == "v":
            r = plan.reads[j]
            refs[name] = f"{r.view.name}:{r.features[i]}"
        else:
            refs[name] = f"{plan.odfvs[j].odfv.name}:{i}"
    return refs


def served_log_for(config: Any) -> ServedLog | None:
    """The process-wide logger of a repository, or None when its sample rate is 0."""
    opts = dict((config.monitoring or {}).get("served_log") or {})
    rate = float(opts.get("sample_rate", 0.0))
    if rate <= 0:
        return None
    root = served_dir(config)
    with _LOCK:
        logger = _LOGS.get(str(root))
        if logger is None or logger.closed:
            logger = _LOGS[str(root)] = ServedLog(
                root, rate, flush_seconds=float(opts.get("flush_seconds", 1.0)),
                batch=int(opts.get("batch", 50_000)), max_buffer=int(opts.get("max_buffer", 200_000)),
                compact_bytes=int(opts.get("compact_bytes", 64 << 20)))
        return logger


def _plain(v: Any) -> Any:
    """A value marshal can hold: datetimes become epoch microseconds (the Parquet
    column is a timestamp, so the compactor reads them back as such)."""
    if isinstance(v, datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        d = v - _EPOCH
        return (d.days * 86_400 + d.seconds) * 1_000_000 + d.microseconds
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, bool | int | float | str | bytes) or v is None:
        return v
    raise ValueError(f"a served value of type {type(v).__name__} cannot be logged")


class ServedLog:
    """Samples responses on the request path and spools them off it (see the module docstring)."""

    def __init__(
        self, root: Path, sample_rate: float = 1.0, *, flush_seconds: float = 1.0, batch: int = 50_000,
        max_buffer: int = 200_000, compact_bytes: int = 64 << 20,
    ) -> None:
        self.root = Path(root)
        self.sample_rate = min(1.0, max(0.0, float(sample_rate)))
        self.flush_seconds, self.batch, self.max_buffer = flush_seconds, batch, max_buffer
        self.compact_bytes = compact_bytes  # spool bytes written between compactions; 0: readers compact
        self._buf: deque[bytes] = deque()  # one marshalled record per sampled response
        self._plans: dict[int, int] = {}  # id(plan), negated with request values -> schema number
        self._schema_no: dict[bytes, int] = {}  # serialized schema -> number
        self._schemas: dict[int, bytes] = {}
        self._wake = threading.Event()
        self._io = threading.Lock()
        self._reg = threading.Lock()
        self._random = random.random
        self._spooled = 0  # bytes spooled since the last compaction started
        self._seq = 0
        self._child: subprocess.Popen[bytes] | None = None
        self.dropped = 0
        self.written = 0  # responses spooled
        self.closed = False
        self._start_writer()
        _LIVE.add(self)
        atexit.register(self.close)

    def _start_writer(self) -> None:
        self._thread = threading.Thread(target=self._run, name="quiver-served-log", daemon=True)
        self._thread.start()

    def _after_fork(self) -> None:
        """In a forked child: the parent writes what was buffered; this process gets its own writer."""
        self._buf.clear()
        self._child = None
        self._io = threading.Lock()
        self._reg = threading.Lock()
        self._wake = threading.Event()
        if not self.closed:
            self._start_writer()

    # -- the hot path ---------------------------------------------------------------

    def log(self, plan: Any, response: Any, now_us: int | None = None,
            request: dict[str, list[Any]] | None = None) -> None:
        """Record one response (sampled): a random draw, one ``marshal.dumps`` of a flat
        tuple of its columns, a deque append. ``request``: the request values the plan's
        on-demand views read, one list per field, in the order of ``plan.odfvs``' fields."""
        if self.sample_rate < 1.0 and self._random() >= self.sample_rate:
            return
        no = self._plans.get(id(plan) if request is None else -id(plan))
        if no is None:
            no = self._register(plan, response, request)
        t = time.time_ns() // 1000 if now_us is None else now_us
        rec = (no, t, *response.columns())
        if request is not None:
            rec = (*rec, *request.values())
        try:
            data = marshal.dumps(rec, 2)
        except ValueError:  # datetimes (UnixTimestamp features) and the like
            try:
                data = marshal.dumps(tuple(_plain(c) for c in rec), 2)
            except ValueError:
                log.warning("served-vector log: a response holds values that cannot be logged")
                self.dropped += 1
                return
        buf = self._buf
        if len(buf) >= self.max_buffer:
            self.dropped += 1
            return
        buf.append(data)
        if len(buf) == self.batch:
            self._wake.set()

    def _register(self, plan: Any, response: Any, request: dict[str, list[Any]] | None) -> int:
        """Once per feature list: its Parquet schema, numbered (plans of one shape share a number)."""
        refs = output_refs(plan)
        names = [*response.join_keys, *response.feature_names]  # the order of response.columns()
        fields = [pa.field(REQUEST_TIME, TS)] + [pa.field(n, plan.arrow_types.get(n, pa.null())) for n in names]
        meta = {"quiver.refs": json.dumps(refs), "quiver.join_keys": json.dumps(list(plan.join_keys))}
        if request is not None:
            types = {f: t for run in plan.odfvs for f, t in getattr(run.odfv, "request_dtypes", {}).items()}
            fields += [pa.field(REQUEST_PREFIX + f, types[f].arrow if f in types else pa.null()) for f in request]
            meta["quiver.request"] = json.dumps(list(request))
        schema = pa.schema(fields, metadata=meta).serialize().to_pybytes()
        with self._reg:
            no = self._schema_no.get(schema)
            if no is None:
                no = self._schema_no[schema] = len(self._schema_no)
                self._schemas[no] = schema
            key = id(plan) if request is None else -id(plan)
            self._plans[key] = no
            weakref.finalize(plan, self._plans.pop, key, None)
        return no

    # -- the writer -----------------------------------------------------------------

    def _run(self) -> None:
        while not self.closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self._spill()
                if 0 < self.compact_bytes <= self._spooled:
                    self._start_compactor()
            except Exception:  # a full disk or a bad value must not kill the logger
                log.exception("served-vector log: writing a batch failed; it is dropped")

    def _spill(self) -> int:
        """Write what is buffered now as one spool file; returns the responses written."""
        with self._io:
            buf = self._buf
            n = len(buf)
            if not n:
                return 0
            header = marshal.dumps((SPOOL_MAGIC, SPOOL_VERSION, dict(self._schemas)), 2)
            # after the header, the records form one marshal list (of tuples)
            head = SPOOL_HEAD.pack(len(header)) + header + _LIST.pack(b"[", n)
            data = b"".join([head, *map(deque.popleft, repeat(buf, n))])  # in C: no bytecode per record
            d = spool_dir(self.root)
            self._seq += 1
            name = f"{time.time_ns()}-{os.getpid()}-{self._seq}"
            tmp = d / f".{name}.tmp"
            try:
                f = open(tmp, "wb")  # noqa: SIM115 - the folder is made only when missing (a syscall less)
            except FileNotFoundError:
                d.mkdir(parents=True, exist_ok=True)
                f = open(tmp, "wb")  # noqa: SIM115
            with f:
                f.write(data)
            os.replace(tmp, d / f"{name}.rec")
            self.written += n
            self._spooled += len(data)
            return n

    def _start_compactor(self) -> None:
        if self._child is not None and self._child.poll() is None:
            return  # the last one is still at work
        self._spooled = 0
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_SRC_ROOT, env.get("PYTHONPATH")) if p)
        self._child = subprocess.Popen(
            [sys.executable, "-m", "quiver.monitoring.served_compact", str(self.root)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env)

    def flush(self) -> int:
        """Spool what is buffered now; returns the responses written. Readers call
        ``served_compact.compact`` to turn spool files into Parquet."""
        return self._spill()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        try:
            self._spill()
        except Exception:
            log.exception("served-vector log: the last batch could not be written")
        child = self._child
        if child is not None and child.poll() is None:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                log.warning("served-vector log: the compactor (pid %s) is still running", child.pid)


def _reset_after_fork() -> None:
    global _LOCK
    _LOCK = threading.Lock()
    for logger in list(_LIVE):
        logger._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
