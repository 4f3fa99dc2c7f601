"""Backfill: a view's history from raw data, in chunks, resumable after a crash.

* ``backfill(view, start, end)`` computes the view's feature values at every
  event of its source in ``[start, end)`` (for an aggregate view: each
  window over ``[t - w, t)`` at each event time ``t``, from the offline
  engine, the same numbers training sees) and writes one Parquet file per
  chunk under ``{offline}/backfill/{view}/``.
* ``backfill(view, start, end, online=True)`` rebuilds the view's online
  aggregation state from the offline events (batch files and streamed
  events), so a new aggregate feature serves at once. It refuses to start
  while a stream worker consumes the view's source (one that reported in the
  last ``LIVE_FOR`` seconds and has not said it stopped): events it wrote
  during the rebuild would count twice or be lost. ``force`` skips the check,
  for a worker that is gone without saying so.

Progress is kept in the registry (namespace ``backfill``, key
``{view}:{offline|online}``): the run's bounds and the chunks done. A run with
the same bounds skips the chunks already done; other bounds start over.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from quiver.definitions import FeatureView
from quiver.errors import InputError
from quiver.timeutil import parse_duration, to_utc
from quiver.offline.parquet import write_atomic

if TYPE_CHECKING:
    from quiver.store import FeatureStore

__all__ = ["backfill"]

NAMESPACE = "backfill"
LIVE_FOR = timedelta(seconds=30)  # a worker reports every 2 s while it runs (``status_every``)


def _chunks(start: datetime, end: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    out = []
    a = start
    while a < end:
        b = min(a + size, end)
        out.append((a, b))
        a = b
    return out


def view_events(store: FeatureStore, view: FeatureView, start: datetime, end: datetime) -> pa.Table:
    """The view's raw events in ``[start, end)`` from the offline store: its batch files
    and the events streamed or pushed, named as the view names them."""
    offline = store.offline
    files = offline.view_files(view) if hasattr(offline, "view_files") else None
    parts = []
    groups = [(view.source.batch, files.batch_files if files else []),
              (files.stream if files else None, files.stream_files if files else [])]
    keys = view.join_keys
    cols = list(dict.fromkeys([*keys, *(a.column for a in view.aggregations),
                               *(view.source_column(f.name) for f in view.schema)]))
    for src, paths in groups:
        if src is None or not paths:
            continue
        ts = src.timestamp_field
        rev = {v: k for k, v in src.field_mapping.items()}
        sel = ", ".join(f'"{rev.get(c, c)}" AS "{c}"' for c in cols)
        q = (f"SELECT {sel}, \"{ts}\"::TIMESTAMPTZ AS event_timestamp FROM read_parquet({paths!r}, union_by_name=true) "
             f"WHERE \"{ts}\" >= ? AND \"{ts}\" < ?")
        parts.append(offline.query_params(q, [start, end]) if hasattr(offline, "query_params") else _duck(q, start, end))
    if not parts:
        return pa.table({**{c: pa.array([], pa.int64()) for c in cols},
                         "event_timestamp": pa.array([], pa.timestamp("us", tz="UTC"))})
    return pa.concat_tables(parts, promote_options="permissive")


def _duck(q: str, start: datetime, end: datetime) -> pa.Table:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(q, params=[start, end]).to_arrow_table()
    finally:
        con.close()


def backfill(
    store: FeatureStore,
    view: FeatureView,
    start: Any,
    end: Any,
    *,
    online: bool = False,
    chunk: Any = None,
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    start, end = to_utc(start, "start"), to_utc(end, "end")
    if end <= start:
        raise InputError(f"backfill {view.name!r}: --end ({end.isoformat()}) must be after --start ({start.isoformat()})")
    if online and not view.is_aggregate:
        raise InputError(f"backfill --online rebuilds aggregation state; {view.name!r} is a snapshot view "
                         "(use quiver materialize for it)")
    size = parse_duration(chunk, "chunk") if chunk is not None else timedelta(days=1)
    mode = "online" if online else "offline"
    key = f"{view.name}:{mode}"
    spec = {"start": start.isoformat(), "end": end.isoformat(), "chunk": size.total_seconds(),
            "version": view.version_hash}
    state = store.registry.get_value(NAMESPACE, key) or {}
    resuming = {k: state.get(k) for k in spec} == spec
    done: list[int] = list(state.get("done", [])) if resuming else []
    chunks = _chunks(start, end, size)
    if online and not force:
        _refuse_beside_live_workers(store, view)
    if online and not resuming:
        store.online.delete_aggregates(view.name)  # type: ignore[attr-defined]
    store.registry.set_value(NAMESPACE, key, {**spec, "done": done, "finished": False})
    rows = 0
    skipped = len(done)
    for i, (a, b) in enumerate(chunks):
        if progress:
            progress(i, len(chunks))
        if i in done:
            continue
        scope = f"backfill/{view.name}/{view.version_hash}/{start.isoformat()}/{end.isoformat()}"
        rows += _online_chunk(store, view, a, b, {scope: i + 1}) if online else _offline_chunk(store, view, a, b, i)
        done.append(i)
        store.registry.set_value(NAMESPACE, key, {**spec, "done": done, "finished": len(done) == len(chunks)})
    if progress:
        progress(len(chunks), len(chunks))
    return {"view": view.name, "mode": mode, "chunks": len(chunks), "chunks_done": len(chunks) - skipped,
            "chunks_skipped": skipped, "rows": rows}


def _refuse_beside_live_workers(store: FeatureStore, view: FeatureView) -> None:
    """An ``InputError`` naming the stream workers that consume ``view``'s source now."""
    now = datetime.now(UTC)
    live = []
    for worker, status in store.registry.list_values("stream_status").items():
        src = (status.get("sources") or {}).get(view.source.name)
        if not status.get("running", True) or src is None or not src.get("updated_at"):
            continue
        age = now - datetime.fromisoformat(src["updated_at"])
        if age < LIVE_FOR:
            live.append(f"{worker} ({age.total_seconds():.0f} s ago)")
    if live:
        raise InputError(
            f"backfill {view.name!r} --online: stream worker(s) consuming its source {view.source.name!r} "
            f"reported within the last {LIVE_FOR.seconds} s: {', '.join(live)}; events they write during the "
            "rebuild would count twice or be lost. Stop them, rebuild, then start them again "
            "(or pass --force if they are gone)")


def _online_chunk(store: FeatureStore, view: FeatureView, a: datetime, b: datetime, offsets: dict[str, int]) -> int:
    """One chunk into the online state, with the chunk's number recorded in the same
    transaction: a chunk applied just before a crash is skipped when the run resumes."""
    from quiver.ingest.stream import EventIngestor

    events = view_events(store, view, a, b)
    if events.num_rows == 0:
        return 0
    root = store.config.resolve(store.config.offline.get("path", "data/offline"))
    src = view.source
    ts = src.timestamp_field
    events = events.rename_columns([ts if c == "event_timestamp" else c for c in events.column_names])
    ing = EventIngestor(src, [view], store.online, root, store.offline)
    ing.snapshot_views = []
    return int(events.num_rows) if ing.ingest(events, offsets, to="online", wait=False)() else 0


def _offline_chunk(store: FeatureStore, view: FeatureView, a: datetime, b: datetime, i: int) -> int:
    events = view_events(store, view, a, b)
    out = store.config.resolve(store.config.offline.get("path", "data/offline")) / "backfill" / view.name
    out.mkdir(parents=True, exist_ok=True)
    name = out / f"{a.strftime('%Y%m%dT%H%M%S')}-{b.strftime('%Y%m%dT%H%M%S')}.parquet"
    if events.num_rows == 0:
        return 0
    entity_df = events.select([*view.join_keys, "event_timestamp"])
    table = store.get_historical_features(entity_df, features=[f"{view.name}:{f}" for f in view.feature_names]).to_arrow()
    write_atomic(table, name)
    return int(table.num_rows)
