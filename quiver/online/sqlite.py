"""OnlineStore over one SQLite file (WAL): the embedded default.

One table per view, one typed column per feature, the join keys as a
``WITHOUT ROWID`` primary key, and the row's event and created times in
epoch microseconds. A write is an UPSERT whose ``WHERE`` keeps the newer row
by (event time, created time), so repeated, overlapping and out-of-order
materializations converge. A read is one prepared primary-key query per view.

The helpers at the top (``check_section``, ``python_columns``,
``rows_to_table``) are shared with the Redis store.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from quiver import types
from quiver.config import RepoConfig
from quiver.errors import ConfigError, InputError, closest
from quiver.online.sqlite_aggregates import MAX_KEYS, SQLiteAggregateState, write_transaction
from quiver.protocols import CREATED_TS, EVENT_TS, Capabilities
from quiver.timeutil import TIMESTAMP

if TYPE_CHECKING:
    from quiver.definitions import FeatureView

__all__ = ["SQLiteOnlineStore", "check_section", "micros", "normalized", "python_columns", "rows_to_table", "value_fixer"]

_EV = "__event_us"
_CR = "__created_us"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BATCH = 50_000
_MMAP = 1 << 30  # bytes of the file read through mmap (an upper bound; the file may be smaller)
_CACHE_KIB = 64 * 1024  # page cache per connection
_CHECKPOINT_PAGES = 20_000


# -- shared by the online stores ---------------------------------------------------


def check_section(config: RepoConfig, allowed: dict[str, str]) -> dict[str, Any]:
    """The ``online:`` section with unknown keys refused; ``allowed`` maps key -> meaning."""
    section = dict(config.online)
    for key in section:
        if key not in allowed:
            raise ConfigError(
                f"quiver.yaml: unknown key online.{key} for online type {section.get('type')!r}."
                f"{closest(str(key), allowed)} Known keys: "
                + ", ".join(f"{k} ({v})" for k, v in allowed.items())
            )
    return section


def micros(col: pa.ChunkedArray | pa.Array, what: str) -> pa.ChunkedArray | pa.Array:
    """A timestamp (naive = UTC), date or integer column as int64 epoch microseconds."""
    t = col.type
    if pa.types.is_timestamp(t):
        return col.cast(pa.timestamp("us", tz=t.tz or "UTC")).cast(pa.int64())
    if pa.types.is_date(t):
        return col.cast(pa.timestamp("us")).cast(pa.int64())
    if pa.types.is_integer(t):
        return col.cast(pa.int64())
    raise InputError(f"column {what!r} has type {t}; the online store needs a timestamp")


def normalized(view: FeatureView, table: pa.Table, features: Sequence[str]) -> pa.Table:
    """A write, checked and in the stores' common form, still columnar: join keys
    (dictionaries decoded), features (UnixTimestamp as epoch microseconds, NaN as
    null, absent ones as nulls), then ``__event_us`` and ``__created_us`` (int64;
    created defaults to event time). Every store writes the same values."""
    names = set(table.column_names)
    missing = [c for c in [*view.join_keys, EVENT_TS] if c not in names]
    if missing:
        raise InputError(
            f"writing {view.name!r} online: the table lacks columns {missing}; it has {table.column_names}"
        )
    if table.column(EVENT_TS).null_count:
        raise InputError(f"writing {view.name!r} online: {EVENT_TS} has nulls; every row needs an event time")
    cols: dict[str, Any] = {}
    for k in view.join_keys:
        col = table.column(k)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        cols[k] = micros(col, k) if pa.types.is_timestamp(col.type) else col
    dtypes = {f.name: f.dtype for f in view.features}
    for f in features:
        dt = dtypes[f]
        if f not in names:
            cols[f] = pa.nulls(table.num_rows, pa.int64() if dt.name == "UnixTimestamp" else dt.arrow)
            continue
        col = table.column(f)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        if dt.name == "UnixTimestamp":
            col = micros(col, f)
        elif dt.name in ("Float32", "Float64") and pa.types.is_floating(col.type) and col.null_count < len(col):
            col = pc.if_else(pc.is_nan(col), pa.nulls(len(col), col.type), col)  # NaN is stored as null
        cols[f] = col
    cols[_EV] = micros(table.column(EVENT_TS), EVENT_TS)
    cols[_CR] = micros(table.column(CREATED_TS), CREATED_TS) if CREATED_TS in names else cols[_EV]
    return pa.table(cols)


def python_columns(view: FeatureView, table: pa.Table, features: Sequence[str]) -> dict[str, list[Any]]:
    """The columns of a write as Python lists (arrays as JSON text): what SQLite binds."""
    norm = normalized(view, table, features)
    dtypes = {f.name: f.dtype for f in view.features}
    out: dict[str, list[Any]] = {}
    for name in norm.column_names:
        values = norm.column(name).to_pylist()
        dt = dtypes.get(name)
        if dt is not None and dt.element is not None:
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        out[name] = values
    return out


def _to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def value_fixer(dtype: types.ValueType) -> Callable[[Any], Any] | None:
    """How a stored value becomes the Python value of ``dtype`` (None: as stored)."""
    if dtype.name == "UnixTimestamp":
        return _to_datetime
    if dtype.name == "Bool":
        return bool
    if dtype.element is not None:
        return orjson.loads
    return None


def fix_rows(
    rows: list[tuple[Any, ...] | None], fixers: list[tuple[int, Callable[[Any], Any]]]
) -> list[tuple[Any, ...] | None]:
    """Apply per-column conversions to stored rows (only for the rare columns that need one)."""
    out: list[tuple[Any, ...] | None] = []
    for r in rows:
        if r is None:
            out.append(None)
            continue
        vals = list(r)
        for i, fn in fixers:
            if vals[i] is not None:
                vals[i] = fn(vals[i])
        out.append(tuple(vals))
    return out


def rows_to_table(view: FeatureView, features: Sequence[str], rows: list[tuple[Any, ...] | None]) -> pa.Table:
    """``lookup`` rows -> the Arrow table ``read`` returns (features + event_timestamp)."""
    dtypes = {f.name: f.dtype for f in view.features}
    cols: dict[str, pa.Array] = {}
    for i, f in enumerate(features):
        cols[f] = pa.array([None if r is None else r[i] for r in rows], type=dtypes[f].arrow)
    ev = [None if r is None else r[-1] for r in rows]
    cols[EVENT_TS] = pa.array(ev, type=pa.int64()).cast(TIMESTAMP)
    return pa.table(cols)


# -- the store ---------------------------------------------------------------------

_SQL_TYPE = {
    "Int32": "INTEGER", "Int64": "INTEGER", "Bool": "INTEGER", "UnixTimestamp": "INTEGER",
    "Float32": "REAL", "Float64": "REAL", "String": "TEXT", "Bytes": "BLOB",
}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_type(dtype: types.ValueType) -> str:
    return "TEXT" if dtype.element is not None else _SQL_TYPE[dtype.name]


@functools.lru_cache(maxsize=2048)
def _in_query(head: str, nkeys: int, n: int) -> str:
    """``head`` + the ``IN`` list for ``n`` keys of ``nkeys`` columns (the same text per size,
    so the connection's statement cache keeps it prepared)."""
    if nkeys == 1:
        return head + "(" + ",".join("?" * n) + ")"
    row = "(" + ",".join("?" * nkeys) + ")"
    return head + "(VALUES " + ",".join([row] * n) + ")"


class SQLiteOnlineStore(SQLiteAggregateState):
    """``online: {type: sqlite, path: data/online.db}``."""

    capabilities = Capabilities()

    def __init__(self, config: RepoConfig) -> None:
        section = check_section(config, {"type": "sqlite", "path": "the database file, relative to the repository"})
        path = section.get("path", "data/online.db")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"quiver.yaml: online.path must be a file path such as data/online.db, got {path!r}")
        self.path = config.resolve(path)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._schemas: dict[str, tuple[tuple[str, str], ...]] = {}
        self._plans: dict[tuple[str, tuple[str, ...]], tuple[str, str, list[tuple[int, Any]]]] = {}
        self._joined: dict[tuple[tuple[str, tuple[str, ...]], ...], tuple[str, Any]] = {}

    # -- connections -----------------------------------------------------------------

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False,
                                  cached_statements=512)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            # reads through the memory map, not a read() per page; big writes keep their pages cached
            con.execute(f"PRAGMA mmap_size={_MMAP}")
            con.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
            # checkpoint the WAL every ~80 MB, not 4 MB: a page rewritten by many batches is copied
            # into the database once (stream state: a 2M-event ingest spent 40% of it in checkpoints)
            con.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
            self._local.con = con
            with self._lock:
                self._all.append(con)
        return con

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown()  # a write in flight finishes before its connection closes
        with self._lock:
            for con in self._all:
                con.close()
            self._all.clear()
        self._local = threading.local()

    # -- schema ----------------------------------------------------------------------

    def _ensure(self, view: FeatureView) -> None:
        """Create the view's table, and add columns for features it gained since."""
        spec = tuple((f.name, _sql_type(f.dtype)) for f in view.features)
        if self._schemas.get(view.name) == spec:
            return
        con = self._con()
        keys = view.join_keys
        key_types = {k: _sql_type(d) for e in view.entities for k, d in e.dtypes.items()}
        cols = [f"{_q(k)} {key_types[k]} NOT NULL" for k in keys]
        cols += [f"{_q(n)} {t}" for n, t in spec]
        cols += [f"{_EV} INTEGER NOT NULL", f"{_CR} INTEGER NOT NULL"]
        pk = ", ".join(_q(k) for k in keys)
        con.execute(f"CREATE TABLE IF NOT EXISTS {_q(view.name)} ({', '.join(cols)}, PRIMARY KEY ({pk})) WITHOUT ROWID")
        have = {r[1] for r in con.execute(f"PRAGMA table_info({_q(view.name)})")}
        for n, t in spec:
            if n not in have:
                con.execute(f"ALTER TABLE {_q(view.name)} ADD COLUMN {_q(n)} {t}")
        self._schemas[view.name] = spec
        self._plans = {k: v for k, v in self._plans.items() if k[0] != view.name}
        self._joined = {}

    # -- writes ----------------------------------------------------------------------

    def write(self, view: FeatureView, table: pa.Table) -> int:
        if table.num_rows == 0:
            return 0
        self._ensure(view)
        features = view.feature_names
        # in key order, inserts walk the primary key B-tree left to right
        table = table.sort_by([(k, "ascending") for k in view.join_keys])
        cols = python_columns(view, table, features)
        names = [*view.join_keys, *features, _EV, _CR]
        t = _q(view.name)
        sets = ", ".join(f"{_q(n)} = excluded.{_q(n)}" for n in names[len(view.join_keys):])
        sql = (
            f"INSERT INTO {t} ({', '.join(_q(n) for n in names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({', '.join(_q(k) for k in view.join_keys)}) DO UPDATE SET {sets} "
            f"WHERE (excluded.{_EV}, excluded.{_CR}) >= ({t}.{_EV}, {t}.{_CR})"
        )
        con = self._con()
        rows = list(zip(*(cols[n] for n in names), strict=True))
        try:
            for i in range(0, len(rows), _BATCH):
                with write_transaction(con, self.path, "the materialization"):
                    con.executemany(sql, rows[i : i + _BATCH])
        except sqlite3.IntegrityError as e:
            raise InputError(f"writing {view.name!r} online: {e} (a join key is null?)") from e
        return len(rows)

    # -- reads -----------------------------------------------------------------------

    def _plan(self, view: FeatureView, features: Sequence[str]) -> tuple[str, str, list[tuple[int, Any]]]:
        key = (view.name, tuple(features))
        plan = self._plans.get(key)
        if plan is None:
            self._ensure(view)
            dtypes = {f.name: f.dtype for f in view.features}
            cols = ", ".join([*(_q(f) for f in features), _EV])
            keys = view.join_keys
            one = f"SELECT {cols} FROM {_q(view.name)} WHERE " + " AND ".join(f"{_q(k)} = ?" for k in keys)
            many = f"SELECT {', '.join(_q(k) for k in keys)}, {cols} FROM {_q(view.name)} WHERE "
            many += f"{_q(keys[0])} IN " if len(keys) == 1 else f"({', '.join(_q(k) for k in keys)}) IN "
            fixers = [(i, fx) for i, f in enumerate(features) if (fx := value_fixer(dtypes[f])) is not None]
            plan = self._plans[key] = (one, many, fixers)
        return plan

    def lookup(
        self, reads: Sequence[tuple[FeatureView, Sequence[tuple[Any, ...]], Sequence[str]]]
    ) -> list[list[tuple[Any, ...] | None]]:
        con = self._con()
        if len(reads) > 1 and all(len(r[1]) == 1 for r in reads):
            return self._one_each(con, reads)
        out: list[list[tuple[Any, ...] | None]] = []
        for view, keys, features in reads:
            one, many, fixers = self._plan(view, features)
            if len(keys) == 1:
                rows: list[tuple[Any, ...] | None] = [con.execute(one, keys[0]).fetchone()]
            else:
                rows = self._many(con, many, len(view.join_keys), keys)
            out.append(fix_rows(rows, fixers) if fixers else rows)
        return out

    def _one_each(
        self, con: sqlite3.Connection, reads: Sequence[tuple[FeatureView, Sequence[tuple[Any, ...]], Sequence[str]]]
    ) -> list[list[tuple[Any, ...] | None]]:
        """One key in each of several views (one entity's vector): one statement, a
        primary-key ``LEFT JOIN`` per view, so one step of SQLite answers the call."""
        key = tuple((view.name, tuple(features)) for view, _, features in reads)
        joined = self._joined.get(key)
        if joined is None:
            cols: list[str] = []
            joins: list[str] = []
            spans: list[tuple[int, int, list[tuple[int, Any]]]] = []
            for n, (view, _, features) in enumerate(reads):
                fixers = self._plan(view, features)[2]
                t = f"t{n}"
                start = len(cols)
                cols += [f"{t}.{_q(f)}" for f in features] + [f"{t}.{_EV}"]
                on = " AND ".join(f"{t}.{_q(k)} = ?" for k in view.join_keys)
                joins.append(f"LEFT JOIN {_q(view.name)} AS {t} ON {on}")
                spans.append((start, len(cols), fixers))
            sql = f"SELECT {', '.join(cols)} FROM (SELECT 1) " + " ".join(joins)
            joined = self._joined[key] = (sql, spans)
        sql, spans = joined
        row = con.execute(sql, [v for _, keys, _ in reads for v in keys[0]]).fetchone()
        out: list[list[tuple[Any, ...] | None]] = []
        for a, b, fixers in spans:
            r = row[a:b]
            if r[-1] is None:  # the event time is NOT NULL: no row for this key
                out.append([None])
            else:
                out.append(fix_rows([r], fixers) if fixers else [r])
        return out

    @staticmethod
    def _many(
        con: sqlite3.Connection, sql: str, nkeys: int, keys: Sequence[tuple[Any, ...]]
    ) -> list[tuple[Any, ...] | None]:
        found: dict[Any, tuple[Any, ...]] = {}
        for i in range(0, len(keys), MAX_KEYS):
            chunk = keys[i : i + MAX_KEYS]
            if nkeys == 1:
                q = _in_query(sql, 1, len(chunk))
                found.update({r[0]: r[1:] for r in con.execute(q, [k[0] for k in chunk])})
            else:
                q = _in_query(sql, nkeys, len(chunk))
                found.update({r[:nkeys]: r[nkeys:] for r in con.execute(q, [v for k in chunk for v in k])})
        get = found.get
        if nkeys == 1:
            return [get(k[0]) for k in keys]
        return [get(k) for k in keys]

    def read(self, view: FeatureView, keys: pa.Table, features: Sequence[str]) -> pa.Table:
        key_rows = list(zip(*(keys.column(k).to_pylist() for k in view.join_keys), strict=True))
        rows = self.lookup([(view, key_rows, list(features))])[0] if key_rows else []
        return rows_to_table(view, features, rows)

    def delete_view(self, view_name: str) -> None:
        self._con().execute(f"DROP TABLE IF EXISTS {_q(view_name)}")
        self._schemas.pop(view_name, None)
        self._plans = {k: v for k, v in self._plans.items() if k[0] != view_name}
        self._joined = {}
