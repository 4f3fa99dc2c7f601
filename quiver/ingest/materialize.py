"""Batch materialization: the dual write of snapshot views.

For each view, the offline engine writes the compacted history and returns the
latest row per entity key (``OfflineEngine.materialize``); that table goes to
the online store in large batches. The online store never goes backwards, so
repeated, overlapping, out-of-order or interrupted runs converge.

Watermarks (registry namespace ``watermark``, one value per view) hold the
event time up to which a view is materialized and the greatest created time
seen, so an incremental run reads both the new event-time range and the rows
that arrived late with an old event time::

    {"event": "<ISO end>", "created": "<ISO greatest created time seen>", ...}

A watermark moves only after the online write of its view finished, so a run
killed half-way is simply run again.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from quiver.definitions import FeatureView
from quiver.errors import InputError, UnsupportedError
from quiver.protocols import CREATED_TS
from quiver.timeutil import to_utc, utcnow

__all__ = ["MaterializeResult", "ViewResult", "materialize"]

WATERMARK = "watermark"
BEGINNING = datetime(1900, 1, 1, tzinfo=UTC)
CHUNK = 100_000  # rows per online write (and per progress update)

Progress = Callable[[str, int, int], None]  # (view, rows written so far, rows to write)


@dataclass
class ViewResult:
    view: str
    rows: int
    start: datetime | None
    end: datetime
    seconds: float
    skipped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view, "rows": self.rows, "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat(), "seconds": round(self.seconds, 3), "skipped": self.skipped,
        }


@dataclass
class MaterializeResult:
    views: list[ViewResult]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(v.rows for v in self.views)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "seconds": round(self.seconds, 3), "views": [v.to_dict() for v in self.views]}


def select_views(registry: Any, names: Sequence[str] | None) -> list[FeatureView]:
    if names:
        return [registry.get("feature_view", n) for n in names]
    return [v for v in registry.list("feature_view") if v.online]


def _takes(engine: Any, keyword: str) -> bool:
    """Whether ``engine.materialize`` accepts ``keyword`` (an optional extension of the protocol)."""
    try:
        return keyword in inspect.signature(engine.materialize).parameters
    except (TypeError, ValueError):
        return False


def _max_created(table: pa.Table) -> datetime | None:
    if table.num_rows == 0 or CREATED_TS not in table.column_names:
        return None
    m = pc.max(table.column(CREATED_TS)).as_py()
    return to_utc(m) if m is not None else None


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def materialize(
    registry: Any,
    offline: Any,
    online: Any,
    views: Sequence[str] | None,
    start: Any,
    end: Any,
    *,
    incremental: bool = False,
    progress: Progress | None = None,
) -> MaterializeResult:
    """Materialize ``views`` (default: every online view) over ``[start, end)`` of
    event time, or from each view's watermark when ``incremental``."""
    t0 = time.perf_counter()
    end = to_utc(end, "end")
    start = None if incremental else to_utc(start, "start")
    if start is not None and start >= end:
        raise InputError(f"materialize: start {start.isoformat()} is not before end {end.isoformat()}")
    if not hasattr(offline, "materialize"):
        raise UnsupportedError(f"the {type(offline).__name__} offline engine cannot materialize views")
    results = []
    for view in select_views(registry, views):
        if view.is_aggregate:
            results.append(ViewResult(view.name, 0, start, end, 0.0, "aggregate view: kept online by the stream runner"))
            continue
        if not view.online:
            results.append(ViewResult(view.name, 0, start, end, 0.0, "online=False"))
            continue
        results.append(_one_view(registry, offline, online, view, start, end, progress))
    return MaterializeResult(results, time.perf_counter() - t0)


def _one_view(
    registry: Any, offline: Any, online: Any, view: FeatureView, start: datetime | None, end: datetime,
    progress: Progress | None,
) -> ViewResult:
    t0 = time.perf_counter()
    wm = registry.get_value(WATERMARK, view.name) or {}
    wm_event = to_utc(wm["event"]) if wm.get("event") else None
    wm_created = to_utc(wm["created"]) if wm.get("created") else None
    tables: list[pa.Table] = []
    if start is not None:  # an explicit range
        tables.append(offline.materialize(view, start, end))
        first = start
    elif wm_event is None:  # incremental, never materialized: everything before end
        tables.append(offline.materialize(view, BEGINNING, end))
        first = BEGINNING
    else:
        first = wm_event
        if wm_created is not None and _takes(offline, "late_after"):
            # the new event-time range and the rows that arrived since with an event time
            # already passed, in one scan of the history
            tables.append(offline.materialize(view, wm_event, max(end, wm_event), late_after=wm_created))
        else:
            if end > wm_event:  # the new event-time range
                tables.append(offline.materialize(view, wm_event, end))
            if wm_created is not None:  # rows that arrived since, with an event time already passed
                tables.append(offline.materialize(view, BEGINNING, wm_event, created_after=wm_created))
    total = sum(t.num_rows for t in tables)
    written = 0
    if progress:
        progress(view.name, 0, total)
    for table in tables:
        for off in range(0, table.num_rows, CHUNK):
            written += online.write(view, table.slice(off, CHUNK))
            if progress:
                progress(view.name, written, total)
    seen = None
    for t in tables:
        seen = _later(seen, _max_created(t))
    if start is None or wm_event is None or start <= wm_event:
        # contiguous with what was materialized before (or the first run): the watermark moves
        new_event = end if wm_event is None else max(wm_event, end)
        # the created watermark moves only when every row created up to it has been read:
        # after an incremental run, or a first run
        new_created = _later(wm_created, seen) if (start is None or wm_event is None) else wm_created
        registry.set_value(WATERMARK, view.name, {
            "event": new_event.isoformat(),
            "created": new_created.isoformat() if new_created else None,
            "rows": written,
            "at": utcnow().isoformat(),
        })
    return ViewResult(view.name, written, first, end, time.perf_counter() - t0)
