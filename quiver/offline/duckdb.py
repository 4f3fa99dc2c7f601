"""OfflineEngine over DuckDB and Parquet: the embedded default.

The engine owns three kinds of files under ``offline.path``: the compacted
history of each view (``history/``, see ``quiver.offline.history``), the
events pushed or streamed into Kafka/Push sources (``events/``), and saved
datasets (``datasets/``). Sources themselves are only read.

Every query runs on its own cursor of one in-memory DuckDB database, so a
result still being streamed never blocks another query.
"""

from __future__ import annotations

import glob
import os
import threading
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quiver.config import RepoConfig
from quiver.definitions import FeatureView, FileSource, KafkaSource, PushSource, Source
from quiver.errors import InputError, UnsupportedError
from quiver.offline.history import Generation, HistoryStore
from quiver.offline.scan import ViewFiles, event_files, file_list, ident, lit, projection_sql
from quiver.protocols import Capabilities
from quiver.timeutil import TIMESTAMP, to_timestamp_array, to_utc
from quiver.offline.parquet import write_atomic

if TYPE_CHECKING:
    from quiver.plan.retrieval import EntityInput, RetrievalPlan

__all__ = ["DuckDBEngine"]


class DuckDBEngine:
    capabilities = Capabilities(historical_retrieval=True, window_aggregation=True, compacted_history=True)

    def __init__(self, config: RepoConfig) -> None:
        self.config = config
        self.path = config.resolve(config.offline.get("path", "data/offline"))
        self.history = HistoryStore(self.path)
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            with self._lock:
                if self._con is None:
                    con = duckdb.connect()
                    con.execute("SET TimeZone = 'UTC'")
                    self._con = con
        return self._con

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own to the engine's database (close it when done)."""
        cur = self.con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    # -- sources -----------------------------------------------------------------------

    def files(self, source: Source) -> list[str]:
        """The Parquet files of a file source (a file, a folder or a glob)."""
        if not isinstance(source, FileSource):
            raise UnsupportedError(f"source {source.name!r} has no batch files")
        p = str(self.config.resolve(source.path))
        if os.path.isdir(p):
            found = sorted(glob.glob(os.path.join(p, "**", "*.parquet"), recursive=True))
        elif any(c in p for c in "*?["):
            found = sorted(glob.glob(p, recursive=True))
        else:
            found = [p] if os.path.exists(p) else []
        if not found:
            raise InputError(f"source {source.name!r}: no Parquet files at {source.path!r}")
        return found

    def view_files(self, view: FeatureView) -> ViewFiles:
        """A view's batch files plus, for a Kafka/Push source, the events written by ``write_events``."""
        src = view.source
        batch = src.batch
        batch_files: list[str] = []
        if batch is not None:
            if isinstance(src, FileSource):
                batch_files = self.files(batch)
            else:
                try:
                    batch_files = self.files(batch)
                except InputError:
                    batch_files = []  # history not written yet; the pushed events may be all there is
        stream = src if isinstance(src, KafkaSource | PushSource) else None
        stream_files = event_files(self.path, src) if stream is not None else []
        return ViewFiles(batch, batch_files, stream, stream_files)

    def source_schema(self, source: Source) -> pa.Schema:
        files = self.files(source)
        with self.cursor() as cur:
            return cur.sql(f"SELECT * FROM read_parquet({file_list(files)}, union_by_name=true) LIMIT 0").to_arrow_table().schema

    def read_source(self, source: Source, start: datetime | None = None, end: datetime | None = None) -> pa.RecordBatchReader:
        files = self.files(source)
        ts = source.timestamp_field
        where = []
        params: list[Any] = []
        if start is not None:
            where.append(f"{ident(ts)} >= ?")
            params.append(to_utc(start))
        if end is not None:
            where.append(f"{ident(ts)} < ?")
            params.append(to_utc(end))
        q = f"SELECT * FROM read_parquet({file_list(files)}, union_by_name=true)"
        if where:
            q += " WHERE " + " AND ".join(where)
        cur = self.cursor()
        return cur.sql(q, params=params).to_arrow_reader()

    # -- events (push and streams) ----------------------------------------------------

    def write_events(self, source: Source, table: pa.Table) -> None:
        """Append pushed or streamed events of ``source`` to the offline store.

        One Parquet file per UTC day of event time, at
        ``{offline}/events/{source}/date=YYYY-MM-DD/<unique>.parquet``; each is
        written under a temporary name and renamed, so a crash never leaves a
        half-written file that a query would read. Timestamp columns are stored
        as ``timestamp[us, tz=UTC]``. Every later read of a view over this
        source sees these events beside its batch files.
        """
        if not isinstance(source, KafkaSource | PushSource):
            raise UnsupportedError(f"source {source.name!r} is a {type(source).__name__}; only Kafka and push sources take events")
        if table.num_rows == 0:
            return
        ts_col = source.timestamp_field
        if ts_col not in table.column_names:
            raise InputError(f"events for source {source.name!r} have no {ts_col!r} column (its timestamp_field)")
        for col in (ts_col, source.created_timestamp_column):
            if col and col in table.column_names:
                table = table.set_column(table.schema.get_field_index(col), col, to_timestamp_array(table[col], col))
        days = pc.strftime(table[ts_col], format="%Y-%m-%d")
        base = self.path / "events" / source.name
        for day in pc.unique(days).to_pylist():
            part = table.filter(pc.equal(days, day))
            d = base / f"date={day}"
            d.mkdir(parents=True, exist_ok=True)
            write_atomic(part, d / f"{datetime.now(UTC):%H%M%S}-{uuid.uuid4().hex}.parquet")

    # -- compacted history -------------------------------------------------------------

    def fresh_history(self, view: FeatureView, files: ViewFiles | None = None) -> Generation | None:
        """The view's compacted history if it matches the source files as they are now."""
        files = files or self.view_files(view)
        return self.history.fresh(view.name, files.fingerprint(view.version_hash), view.version_hash)

    def compact(self, view: FeatureView) -> Generation:
        """Build the view's compacted history unless a fresh one exists (idempotent)."""
        files = self.view_files(view)
        fp = files.fingerprint(view.version_hash)
        gen = self.history.fresh(view.name, fp, view.version_hash)
        if gen is not None:
            return gen
        keys = ", ".join(ident(k) for k in view.join_keys)
        d = self.history.new_directory(view.name)
        proj = projection_sql(view, files)
        try:
            with self.cursor() as cur:
                if view.is_aggregate:
                    cur.execute(f"COPY (SELECT * FROM ({proj}) ORDER BY {keys}, event_timestamp) "
                                f"TO {lit(str(d / 'latest.parquet'))} (FORMAT parquet)")
                    rows = cur.execute(f"SELECT count(*) FROM read_parquet({lit(str(d / 'latest.parquet'))})").fetchone()
                else:
                    cur.execute(
                        f"CREATE TEMP TABLE h AS SELECT *, row_number() OVER (PARTITION BY {keys}, event_timestamp "
                        f"ORDER BY created_timestamp DESC) AS __rn FROM ({proj})"
                    )
                    for name, cond in (("latest", "__rn = 1"), ("superseded", "__rn > 1")):
                        cur.execute(f"COPY (SELECT * EXCLUDE (__rn) FROM h WHERE {cond} ORDER BY {keys}, event_timestamp) "
                                    f"TO {lit(str(d / (name + '.parquet')))} (FORMAT parquet)")
                    rows = cur.execute("SELECT count(*) FROM h WHERE __rn = 1").fetchone()
                    cur.execute("DROP TABLE h")
        except BaseException:
            self.history.abandon(d)
            raise
        return self.history.commit(view.name, d, fp, view.version_hash, int(rows[0]) if rows else 0)

    def materialize(
        self, view: FeatureView, start: datetime, end: datetime, *, created_after: datetime | None = None,
        late_after: datetime | None = None,
    ) -> pa.Table:
        """The offline half of the dual write, and the latest values, in one call.

        Writes (or finds fresh) the view's compacted history: deduplicated on
        (keys, event time) by the greatest created time, sorted for the join,
        with the superseded versions kept for as-known-at queries. The history
        covers the whole source, a superset of ``[start, end)``: see
        ``quiver.offline.history`` for why it is rebuilt whole. Re-running is
        idempotent (an unchanged source is not rewritten).

        Returns, for a snapshot view, the latest row per entity key with event
        time in ``[start, end)`` (greatest event time, then greatest created
        time: the point-in-time join's tie-break); with ``created_after``, only
        among rows created after it, so rows that arrive late with an old event
        time are still picked up by incremental runs. With ``late_after``, the
        rows with event time before ``start`` created after it count too, in the
        same pass (an incremental run: the new range and the late rows in one
        scan of the history). Columns: join keys, the
        view's features (named by field_mapping), ``event_timestamp``,
        ``created_timestamp`` (``timestamp[us, tz=UTC]``; a source without a
        created column uses the event time).

        For an aggregate view it returns each key's aggregates evaluated at
        ``end`` over its window (``[end - w, end)``), for keys with events in
        ``[start, end)``, with the event and created time of the key's latest
        such event.
        """
        start, end = to_utc(start, "start"), to_utc(end, "end")
        gen = self.compact(view)
        keys = ", ".join(ident(k) for k in view.join_keys)
        params: list[Any] = [start, end]
        where = "event_timestamp >= ? AND event_timestamp < ?"
        if late_after is not None:
            params = [end, start, to_utc(late_after, "late_after")]
            where = "event_timestamp < ? AND (event_timestamp >= ? OR created_timestamp > ?)"
        if created_after is not None:
            where += " AND created_timestamp > ?"
            params.append(to_utc(created_after, "created_after"))
        # the greatest (event, created) per key as a hash aggregate: 4-5x cheaper than a window's sort
        latest = (
            f"SELECT {keys}, unnest(arg_max(struct_pack(*COLUMNS(* EXCLUDE ({keys}))), "
            f"struct_pack(event_timestamp, created_timestamp))) "
            f"FROM read_parquet({lit(str(gen.latest))}) WHERE {where} GROUP BY {keys}"
        )
        with self.cursor() as cur:
            table = cur.sql(latest, params=params).to_arrow_table()
        if view.is_aggregate:
            from quiver.offline.windows import aggregates_at

            table = aggregates_at(self, view, gen, table, end)
        return _utc_timestamps(table)

    # -- training sets ---------------------------------------------------------------

    def get_historical_features(self, plan: RetrievalPlan, entities: EntityInput) -> pa.RecordBatchReader:
        """Run a retrieval plan: the point-in-time join (and window aggregations)
        for every entity row, in entity-row order, streamed in Arrow batches."""
        from quiver.offline.pit import run_plan

        return run_plan(self, plan, entities)

    def query(self, sql: str) -> pa.Table:
        """Run an SQL query of the user's (an entity frame given as SQL) into Arrow."""
        with self.cursor() as cur:
            try:
                return _utc_timestamps(cur.sql(sql).to_arrow_table())
            except duckdb.Error as e:
                raise InputError(f"the entity query failed in DuckDB: {e}") from None

    def entity_timeline(self, views: list[FeatureView], start: datetime, end: datetime) -> pa.Table:
        """Every (join keys, event time) with rows in ``[start, end)`` in any of ``views``
        (which share their join keys), sorted by time then keys: the entity rows of a
        training set asked for without an entity frame."""
        keys = ", ".join(ident(k) for k in views[0].join_keys)
        parts = []
        for v in views:
            files = self.view_files(v)
            gen = self.fresh_history(v, files)
            rel = f"read_parquet({lit(str(gen.latest))})" if gen is not None else f"({projection_sql(v, files)})"
            parts.append(f"SELECT {keys}, event_timestamp FROM {rel} WHERE event_timestamp >= ? AND event_timestamp < ?")
        q = f"SELECT DISTINCT * FROM ({' UNION ALL '.join(parts)}) ORDER BY event_timestamp, {keys}"
        params = [to_utc(start, "start"), to_utc(end, "end")] * len(parts)
        with self.cursor() as cur:
            return _utc_timestamps(cur.sql(q, params=params).to_arrow_table())

    def write_dataset(self, name: str, batches: pa.RecordBatchReader) -> tuple[str, int]:
        """Store a result as ``{offline}/datasets/{name}.parquet`` (atomically); returns (path, rows)."""
        d = self.path / "datasets"
        d.mkdir(parents=True, exist_ok=True)
        target = d / f"{name}.parquet"
        tmp = d / f".{name}-{uuid.uuid4().hex}.tmp"
        rows = 0
        with pq.ParquetWriter(tmp, batches.schema) as w:
            for b in batches:
                w.write_batch(b)
                rows += b.num_rows
        os.replace(tmp, target)
        return str(target), rows

    def read_dataset(self, path: str) -> pa.Table:
        return pq.read_table(path)

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


def _utc_timestamps(table: pa.Table) -> pa.Table:
    for i, f in enumerate(table.schema):
        if pa.types.is_timestamp(f.type) and f.type != TIMESTAMP:
            table = table.set_column(i, f.name, table[f.name].cast(TIMESTAMP))
    return table
