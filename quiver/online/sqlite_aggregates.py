"""The streaming aggregation state in SQLite: the part of ``SQLiteOnlineStore`` that
aggregate views use (``quiver.ingest.stream`` writes it, reads fold it).

The additive stats (counts, the limbs of exact sums) of one (view, entity, level,
group) are one BLOB of float64 slots (quiver.aggregation.packed), merged by adding
the batch's group BLOB slot by slot; min, max, last and distinct members are rows
of their own (one per tile and stat, merged by an UPSERT of the cell's op); raw edge
events are rows of packed records per 10-second bucket. A batch and the stream offsets
it covers commit in one transaction, so a killed worker neither loses nor
double-counts; rows past their expiry time are deleted as writes go by. A read of
additive features is two primary-key queries and the packed fold, in process.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quiver.aggregation.state import RAW_FORMAT, aggregates_table, entity_strings, layout, layout_mismatch, table_rows
from quiver.errors import InputError, TransientError

if TYPE_CHECKING:
    from pathlib import Path

    from quiver.definitions import FeatureView

__all__ = ["MAX_KEYS", "SQLiteAggregateState", "write_transaction"]

MAX_KEYS = 500  # keys per IN (...) query (the online store's reads too)
_RAW = f"__agg_raw{RAW_FORMAT}"  # raw events, by the layout of their records
_DDL = (
    "CREATE TABLE IF NOT EXISTS __agg_cells (view TEXT NOT NULL, entity TEXT NOT NULL, level INTEGER NOT NULL,"
    " tile INTEGER NOT NULL, stat INTEGER NOT NULL, member NOT NULL, op TEXT, ts INTEGER, val, expires INTEGER,"
    " PRIMARY KEY (view, entity, level, tile, stat, member)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS __agg_packed (view TEXT NOT NULL, entity TEXT NOT NULL, key TEXT NOT NULL,"
    " data BLOB NOT NULL, expires INTEGER, PRIMARY KEY (view, entity, key)) WITHOUT ROWID",
    f"CREATE TABLE IF NOT EXISTS {_RAW} (view TEXT NOT NULL, entity TEXT NOT NULL, bucket INTEGER NOT NULL,"
    " data BLOB NOT NULL, expires INTEGER)",
    f"CREATE INDEX IF NOT EXISTS {_RAW}_key ON {_RAW} (view, entity, bucket)",
    "CREATE INDEX IF NOT EXISTS __agg_cells_exp ON __agg_cells (expires)",
    "CREATE INDEX IF NOT EXISTS __agg_packed_exp ON __agg_packed (expires)",
    f"CREATE INDEX IF NOT EXISTS {_RAW}_exp ON {_RAW} (expires)",
    "CREATE TABLE IF NOT EXISTS __stream_offsets (scope TEXT PRIMARY KEY, next_offset INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS __agg_stale (view TEXT PRIMARY KEY)",  # views to rebuild (``_agg_con``)
    # the StateLayout.signature each view's state was written under
    "CREATE TABLE IF NOT EXISTS __agg_layout (view TEXT PRIMARY KEY, signature TEXT NOT NULL)",
)
_CELL_UPSERT = (
    "INSERT INTO __agg_cells VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET "
    "val = CASE excluded.op WHEN '<' THEN min(val, excluded.val) "
    "WHEN '>' THEN max(val, excluded.val) WHEN 'L' THEN CASE WHEN (excluded.ts, excluded.val) > (ts, val) "
    "THEN excluded.val ELSE val END ELSE val END, "
    "ts = CASE WHEN excluded.op = 'L' AND (excluded.ts, excluded.val) > (ts, val) THEN excluded.ts ELSE ts END, "
    "expires = max(expires, excluded.expires)"
)
_PACKED_UPSERT = (
    "INSERT INTO __agg_packed VALUES (?,?,?,?,?) ON CONFLICT DO UPDATE SET "
    "data = quiver_add_slots(data, excluded.data), expires = max(expires, excluded.expires)"
)


@contextmanager
def write_transaction(con: sqlite3.Connection, path: Any, retry: str) -> Iterator[None]:
    """One write transaction, committed when the block ends and rolled back if it raises;
    a busy or locked database is a ``TransientError`` that says to retry ``retry``."""
    try:
        con.execute("BEGIN IMMEDIATE")
        try:
            yield
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as e:
        raise TransientError(f"online store {path}: {e}; retry {retry}") from e


def _nan_text(v: Any) -> Any:
    """A NaN kept as the text 'NaN' (SQLite would store NULL): SQLite orders text above
    every number, so min, max and the UPSERT's row comparison order it as DuckDB does."""
    return "NaN" if v != v else v


def _add_slots(a: bytes, b: bytes) -> bytes:
    """Two packed groups added slot by slot (the shorter one read as zeros past its end)."""
    x, y = np.frombuffer(a, dtype="<f8"), np.frombuffer(b, dtype="<f8")
    if len(x) < len(y):
        x, y = y, x
    out = x.copy()
    out[: len(y)] += y
    return out.tobytes()


class SQLiteAggregateState:
    """Aggregation state methods of ``SQLiteOnlineStore`` (which provides ``_con``, its
    per-thread ``_local``, ``_lock`` and the database ``path``)."""

    _con: Callable[[], sqlite3.Connection]
    _local: threading.local
    _lock: threading.Lock
    _writer: ThreadPoolExecutor | None = None  # the thread of ``write_aggregates(wait=False)``
    path: Path
    # a stream worker's batch under a backlog: readers never wait for the writer (WAL), and a
    # bigger batch rewrites each B-tree page it touches once for more events (a state-only
    # ingest of 1M transactions: 64,700 events/s in batches of 10,000, 96,700 in 40,000)
    stream_batch_size = 40_000

    def _agg_con(self) -> sqlite3.Connection:
        con = self._con()
        if getattr(self._local, "stale", None) is None:
            with write_transaction(con, self.path, "the call"):
                tables = {n for n, in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
                for ddl in _DDL:
                    con.execute(ddl)
                if "__agg_cells" in tables and "__agg_packed" not in tables:
                    # the state of an earlier quiver kept additive stats as cell rows: its views need a rebuild
                    con.execute("INSERT OR IGNORE INTO __agg_stale SELECT DISTINCT view FROM __agg_cells WHERE op = '+'")
                    con.execute("DELETE FROM __agg_cells WHERE op = '+'")
            con.create_function("quiver_add_slots", 2, _add_slots, deterministic=True)
            self._local.stale = {v for v, in con.execute("SELECT view FROM __agg_stale")}
        return con

    def _check_current(self, con: sqlite3.Connection, lay: Any) -> None:
        """Refuse to read a view whose state an earlier quiver wrote, or that was written
        under another ``StateLayout.signature`` (until it is rebuilt)."""
        view = lay.view.name
        if view in self._local.stale and con.execute("SELECT 1 FROM __agg_stale WHERE view = ?", (view,)).fetchone():
            raise InputError(f"online store {self.path} holds the aggregation state of view {view!r} in the layout of "
                             f"an earlier quiver; rebuild it: quiver backfill {view} --online")
        got = con.execute("SELECT signature FROM __agg_layout WHERE view = ?", (view,)).fetchone()
        if got is not None and got[0] != lay.signature:
            raise layout_mismatch(str(self.path), view)

    def write_aggregates(self, writes: Sequence[Any], offsets: dict[str, int] | None = None,
                         now_us: int | None = None, *, wait: bool = True) -> Any:
        """Merge ``StateWrite``s and record ``offsets`` (scope -> next offset) atomically;
        a batch whose offsets are already held is skipped (returns False). With
        ``wait=False`` the write runs on the store's writer thread and a function that
        waits for its answer (or raises its error) is returned: SQLite leaves the GIL
        while it updates pages and commits, so a stream worker parses its next batch
        meanwhile, as it does while Redis applies a batch."""
        if wait:
            return self._write_aggregates(writes, offsets, now_us)
        with self._lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="quiver-sqlite-writer")
        return self._writer.submit(self._write_aggregates, writes, offsets, now_us).result

    def _write_aggregates(self, writes: Sequence[Any], offsets: dict[str, int] | None, now_us: int | None) -> bool:
        from quiver.aggregation.packed import group_blobs, slots

        con = self._agg_con()
        with write_transaction(con, self.path, "the batch"):
            for scope, off in (offsets or {}).items():
                held = con.execute("SELECT next_offset FROM __stream_offsets WHERE scope = ?", (scope,)).fetchone()
                if held is not None and held[0] >= off:
                    return False
            for name, sig in {w.view: w.layout.signature for w in writes}.items():
                got = con.execute("SELECT signature FROM __agg_layout WHERE view = ?", (name,)).fetchone()
                if got is None:
                    con.execute("INSERT INTO __agg_layout VALUES (?, ?)", (name, sig))
                elif got[0] != sig:
                    raise layout_mismatch(str(self.path), name)
            for w in writes:
                lay = w.layout
                name = w.view
                t = w.table
                if t.num_rows and lay.packed.width:
                    sl = slots(t, lay.packed.positions)
                    keys = [f"p{lv}:{g}" for lv, g in zip(sl.level.tolist(), sl.group.tolist())]
                    con.executemany(_PACKED_UPSERT, zip(
                        [name] * len(keys), sl.entity.to_pylist(), keys, group_blobs(sl, lay.packed.width),
                        lay.group_expires_at(sl.level, sl.group).tolist()))
                    t = t.filter(pc.not_equal(t.column("op"), "+"))
                if t.num_rows:
                    ends = lay.group_expires_at(t.column("level").to_numpy(), t.column("group").to_numpy()).tolist()
                    con.executemany(_CELL_UPSERT, [
                        (name, e, lv, tl, st, v if op == "D" else "", op, ts, None if op == "D" else _nan_text(v), x)
                        for (e, lv, tl, st, op, ts, v), x in zip(w.cells_of(t), ends)
                    ])
                if not w.raw_table.num_rows:
                    continue
                if lay.numeric:  # one row per (entity, bucket): its records
                    runs = w.raw_runs()
                    bounds = runs.run_offsets.tolist()
                    heads = runs.heads
                    payloads = [runs.data[a:b] for a, b in zip(bounds, bounds[1:])]
                else:
                    heads = w.raw_table
                    payloads = heads.column("payload").to_pylist()
                buckets = heads.column("bucket").to_numpy()
                con.executemany(f"INSERT INTO {_RAW} VALUES (?,?,?,?,?)", zip(
                    [name] * len(payloads), heads.column("entity").to_pylist(), buckets.tolist(), payloads,
                    lay.raw_expires_at(buckets).tolist()))
            if offsets:
                con.executemany("INSERT OR REPLACE INTO __stream_offsets VALUES (?, ?)", list(offsets.items()))
            if now_us is not None:
                for table in ("__agg_cells", "__agg_packed", _RAW):
                    con.execute(f"DELETE FROM {table} WHERE expires <= ?", (now_us,))
        return True

    def read_offsets(self, prefix: str = "") -> dict[str, int]:
        """The next offset to consume per stream scope (``topic/partition``) the state holds."""
        rows = self._agg_con().execute(
            "SELECT scope, next_offset FROM __stream_offsets WHERE substr(scope, 1, ?) = ?", (len(prefix), prefix))
        return dict(rows.fetchall())

    def read_aggregates(self, view: FeatureView, keys: pa.Table, features: Sequence[str], at: Any) -> pa.Table:
        """Finalized aggregates over ``[at - w, at)``, one row per row of ``keys``."""
        return aggregates_table(self.read_aggregate_rows, view, keys, features, at)

    def read_aggregate_rows(self, view: FeatureView, keys: Sequence[tuple[Any, ...]], features: Sequence[str],
                            at_us: int) -> list[tuple[Any, ...]]:
        """``read_aggregates`` for key tuples: one tuple of feature values per key, at
        ``at_us`` (epoch microseconds)."""
        con = self._agg_con()
        lay = layout(view)
        ents = entity_strings(view, keys)
        uniq = list(dict.fromkeys(ents))
        con.execute("BEGIN")  # one snapshot: the tiles and the raw events of the same writes
        try:
            self._check_current(con, lay)
            prog = lay.packed.program(features, at_us, "raw")
            if prog is not None:  # count, sum, mean, stddev: packed groups and raw edges, folded in numpy
                groups = prog.suffixes[: prog.groups]
                blobs, raw = self._fetch(view.name, uniq, groups, prog.buckets)
                by_entity = {}
                for e in uniq:
                    got = [blobs.get(e, {}).get(k) for k in groups] + [b"".join(raw.get(e, ()))]
                    by_entity[e] = lay.packed.fold(prog, at_us, got)
                if all(v is not None for v in by_entity.values()):  # else a value out of range: cell by cell
                    return [by_entity[e] for e in ents]  # type: ignore[misc]
            plan = lay.plan(features, at_us)
            return table_rows(self._fold_cells(lay, plan, ents, uniq), [a.name for a in plan.aggregations])
        finally:
            con.execute("COMMIT")

    def _fetch(self, view: str, ents: list[str], groups: Sequence[str],
               buckets: Sequence[int]) -> tuple[dict[str, dict[str, bytes]], dict[str, list[bytes]]]:
        """Per entity its packed groups (key -> BLOB) and raw edge records."""
        con = self._agg_con()
        blobs: dict[str, dict[str, bytes]] = {}
        raw: dict[str, list[bytes]] = {}
        for i in range(0, len(ents), MAX_KEYS):
            chunk = ents[i : i + MAX_KEYS]
            marks = ",".join("?" * len(chunk))
            if groups:
                q = (f"SELECT entity, key, data FROM __agg_packed WHERE view = ? AND entity IN ({marks}) "
                     f"AND key IN ({','.join('?' * len(groups))})")
                for e, k, data in con.execute(q, [view, *chunk, *groups]):
                    blobs.setdefault(e, {})[k] = data
            if buckets:
                q = (f"SELECT entity, data FROM {_RAW} WHERE view = ? AND entity IN ({marks}) "
                     f"AND bucket IN ({','.join('?' * len(buckets))})")
                for e, data in con.execute(q, [view, *chunk, *buckets]):
                    raw.setdefault(e, []).append(data)
        return blobs, raw

    def _fold_cells(self, lay: Any, plan: Any, ents: list[str], uniq: list[str]) -> pa.Table:
        """Any aggregates: the cell rows, packed groups and raw events of the plan,
        folded by ``StateLayout.fold``."""
        from quiver.aggregation.packed import ADDITIVE

        con = self._agg_con()
        groups = plan.groups()
        adds = [i for i, s in enumerate(lay.stats) if s.kind in ADDITIVE]
        blobs, raw = self._fetch(lay.view.name, uniq, [f"p{lv}:{g}" for lv, g, _ in groups], plan.raw_buckets)
        floats = {i for i, s in enumerate(lay.stats) if pa.types.is_floating(lay.value_types[s.column])}
        found: dict[str, list[tuple[Any, ...]]] = {}
        for i in range(0, len(uniq), MAX_KEYS):
            chunk = uniq[i : i + MAX_KEYS]
            marks = ",".join("?" * len(chunk))
            for lv, lo, hi in plan.runs():
                q = (f"SELECT entity, level, tile, stat, ts, CASE op WHEN 'D' THEN member ELSE val END FROM __agg_cells "
                     f"WHERE view = ? AND entity IN ({marks}) AND level = ? AND tile BETWEEN ? AND ?")
                for e, *rest in con.execute(q, [lay.view.name, *chunk, lv, lo, hi]):
                    if rest[4] == "NaN" and rest[2] in floats:  # ``_nan_text``
                        rest[4] = float("nan")
                    found.setdefault(e, []).append(tuple(rest))
        if adds:
            for e, got in blobs.items():
                for lv, g, tiles in groups:
                    found.setdefault(e, []).extend(lay.packed.cells(lv, g, tiles, got.get(f"p{lv}:{g}"), adds))
        cells = [(r, *c) for r, e in enumerate(ents) for c in found.get(e, ())]
        raws = [(r, data) for r, e in enumerate(ents) for data in raw.get(e, ())]
        return lay.fold(plan, len(ents), cells, raws)

    def delete_aggregates(self, view_name: str) -> None:
        """Drop a view's aggregation state (before a rebuild)."""
        con = self._agg_con()
        for table in ("__agg_cells", "__agg_packed", _RAW, "__agg_stale", "__agg_layout"):
            con.execute(f"DELETE FROM {table} WHERE view = ?", (view_name,))
