"""The served-vector log: a sample of what ``get_online_features`` returned,
kept in the offline store for the training/serving skew check.

``ServedLog.log`` is on the serving hot path and only draws the sample and
appends ``(time, plan, response)`` to a deque; a daemon thread turns the
buffer into Arrow tables every ``flush_seconds`` (or when ``batch`` entries
wait) and writes one Parquet file per feature list under
``{offline}/served/date=YYYY-MM-DD/``, written under a temporary name and
renamed. Each file's schema metadata maps its columns to feature references.
When the writer cannot keep up, entries past ``max_buffer`` are dropped and
counted, never blocking a request.

``quiver.yaml``::

    monitoring:
      served_log: {sample_rate: 0.1, flush_seconds: 1}   # sample_rate 0 (the default): off
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["REQUEST_TIME", "ServedLog", "served_log_for", "served_dir", "output_refs"]

log = logging.getLogger("quiver.monitoring")
REQUEST_TIME = "__request_time"
TS = pa.timestamp("us", tz="UTC")
_LOGS: dict[str, ServedLog] = {}
_LOCK = threading.Lock()


def served_dir(config: Any) -> Path:
    return Path(config.resolve(config.offline.get("path", "data/offline"))) / "served"


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
                batch=int(opts.get("batch", 5000)), max_buffer=int(opts.get("max_buffer", 200_000)))
        return logger


class ServedLog:
    """Buffers sampled responses and writes them to Parquet off the request path."""

    def __init__(
        self, root: Path, sample_rate: float = 1.0, *, flush_seconds: float = 1.0, batch: int = 5000,
        max_buffer: int = 200_000,
    ) -> None:
        self.root = Path(root)
        self.sample_rate = min(1.0, max(0.0, float(sample_rate)))
        self.flush_seconds, self.batch, self.max_buffer = flush_seconds, batch, max_buffer
        self._buf: deque[tuple[int, Any, Any]] = deque()
        self._wake = threading.Event()
        self._io = threading.Lock()
        self._random = random.random
        self.dropped = 0
        self.written = 0
        self.closed = False
        self._thread = threading.Thread(target=self._run, name="quiver-served-log", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- the hot path ---------------------------------------------------------------

    def log(self, plan: Any, response: Any, now_us: int | None = None) -> None:
        """Record one response (sampled). Costs a random draw and a deque append."""
        if self.sample_rate < 1.0 and self._random() >= self.sample_rate:
            return
        buf = self._buf
        if len(buf) >= self.max_buffer:
            self.dropped += 1
            return
        buf.append((time.time_ns() // 1000 if now_us is None else now_us, plan, response))
        if len(buf) >= self.batch:
            self._wake.set()

    # -- the writer -----------------------------------------------------------------

    def _run(self) -> None:
        while not self.closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # a full disk or a bad value must not kill the logger
                log.exception("served-vector log: writing a batch failed; it is dropped")

    def flush(self) -> int:
        """Write what is buffered now; returns the rows written."""
        with self._io:
            items = []
            buf = self._buf
            while buf:
                items.append(buf.popleft())
            if not items:
                return 0
            groups: dict[int, list[tuple[int, Any, Any]]] = {}
            for item in items:
                groups.setdefault(id(item[1]), []).append(item)
            rows = 0
            for group in groups.values():
                rows += self._write(group)
            self.written += rows
            return rows

    def _write(self, items: Sequence[tuple[int, Any, Any]]) -> int:
        plan = items[0][1]
        refs = output_refs(plan)
        cols: dict[str, list[Any]] = {REQUEST_TIME: []}
        keys = list(plan.join_keys)
        names = [k for k in keys] + list(refs)
        for n in names:
            cols[n] = []
        for t, _, resp in items:
            d = resp.to_dict()
            n = len(resp)
            cols[REQUEST_TIME].extend([t] * n)
            for name in names:
                cols[name].extend(d[name])
        types = plan.arrow_types
        arrays = {REQUEST_TIME: pa.array(cols[REQUEST_TIME], type=pa.int64()).cast(TS)}
        for name in names:
            arrays[name] = pa.array(cols[name], type=types.get(name))
        meta = {"quiver.refs": json.dumps(refs), "quiver.join_keys": json.dumps(keys)}
        table = pa.table(arrays).replace_schema_metadata(meta)
        day = datetime.fromtimestamp(items[0][0] / 1e6, UTC).strftime("%Y-%m-%d")
        d = self.root / f"date={day}"
        d.mkdir(parents=True, exist_ok=True)
        name = f"{datetime.now(UTC).strftime('%H%M%S')}-{uuid.uuid4().hex[:12]}"
        tmp = d / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, d / f"{name}.parquet")
        return table.num_rows

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake.set()
        try:
            self.flush()
        except Exception:
            log.exception("served-vector log: the last batch could not be written")
