"""OnlineStore over Redis: one string key per entity and view, written in pipelines.

Key: ``{project}:{view}:{<entity key>}``. The braces make the entity key the
Redis Cluster hash tag, so all views of one entity share a slot.

Value: one JSON array, a fixed-width header, the event time and the layout
first, then the features::

    ["<event_us + 1e16: 18 digits><created_us + 1e16: 18 digits>", <event_us>, "<layout: 8 hex>", v1, v2, ...]

Keys and values are encoded in bulk by DuckDB over the Arrow table (no
Python loop per row), and written by a Lua script that compares the stored
header with the new one as text (fixed width, so text order is time order), so
a row older by (event time, created time) than the stored one never replaces
it. ``layout`` names the view's feature list (kept in the hash
``{project}:__layouts__``): values written before a view gained or lost a
feature are still read by name. A read is one MGET for every key of the call;
the values it returns are joined into one JSON document and parsed by one
``orjson.loads``, and each row is cut out by an ``operator.itemgetter`` (C),
so no Python code runs per value.

The aggregation state of streamed views (tiles, raw edge events, offsets) is
in ``redis_aggregates``, a part of the same store class; the readers' near cache
(``online.near_cache_keys``) in ``near_cache``. The driver (redis-py and hiredis,
the ``redis`` extra) is imported by these three modules only.
"""

from __future__ import annotations

import hashlib
import operator
import os
import select
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
import pyarrow as pa

from quiver.config import RepoConfig
from quiver.errors import ConfigError, InputError, TerminalError, TransientError
from quiver.online.redis_aggregates import RedisAggregateState
from quiver.online.sqlite import check_section, normalized, rows_to_table, value_fixer
from quiver.protocols import Capabilities

if TYPE_CHECKING:
    from quiver.definitions import FeatureView

__all__ = ["RedisOnlineStore"]

try:
    import redis
    from hiredis import pack_command  # the RESP encoder in C: 5 µs for a 30-key MGET, redis-py's wrapper 15
except ImportError as e:  # pragma: no cover - reported by plugins.load with the extra to install
    raise ImportError(e.name, name=e.name) from e

_BATCH = 2_000  # keys per script call
_PIPE = 25  # script calls per pipeline round trip
_OFFSET = 10**16  # added to epoch microseconds so that the header's digits are never negative (after 1653)

# KEYS: the entity keys; ARGV: the new values. Writes a value unless the stored
# one has a greater header (a value in another format is replaced); returns how
# many it wrote. About 4 us per key on the server.
_CAS = """
local w = 0
for i = 1, #KEYS do
  local new = ARGV[i]
  local cur = redis.call('GETRANGE', KEYS[i], 0, 37)
  if cur == '' or string.sub(cur, 1, 2) ~= '["' or string.sub(cur, 3) <= string.sub(new, 3, 38) then
    redis.call('SET', KEYS[i], new)
    w = w + 1
  end
end
return w
"""


def _layout_id(view: FeatureView) -> str:
    spec = orjson.dumps([[f.name, f.dtype.name] for f in view.features])
    return hashlib.blake2b(spec, digest_size=4).hexdigest()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _key_sql(view: FeatureView, prefix: str) -> str:
    """DuckDB expression of the Redis key of each row (the same text as ``_key_text``)."""
    parts = []
    for k in view.join_keys:
        parts.append(f"replace(replace(CAST({_quote(k)} AS VARCHAR), '\\', '\\\\'), '|', '\\|')")
    inner = " || '|' || ".join(parts)
    lit = prefix.replace("'", "''")
    return f"'{lit}{{' || {inner} || '}}'"


def _key_text(key: tuple[Any, ...]) -> str:
    if len(key) == 1:
        v = key[0]
        return str(v) if type(v) is int else str(v).replace("\\", "\\\\").replace("|", "\\|")
    return "|".join(str(v).replace("\\", "\\\\").replace("|", "\\|") for v in key)


@dataclass(frozen=True)
class _ReadPlan:
    """What a read of one feature list of one view needs, computed once."""

    prefix: str  # "{project}:{view}:{"
    layout: str
    get: Callable[[list[Any]], tuple[Any, ...]]  # stored array -> (features..., event_us)
    features: list[str]
    fixers: list[tuple[int, Callable[[Any], Any]]]
    single: bool  # one join key (an integer one's text is the number)


def _fix(row: tuple[Any, ...], fixers: list[tuple[int, Callable[[Any], Any]]]) -> tuple[Any, ...]:
    vals = list(row)
    for i, fn in fixers:
        if vals[i] is not None:
            vals[i] = fn(vals[i])
    return tuple(vals)


def _is_json(v: bytes) -> bool:
    try:
        orjson.loads(v)
    except orjson.JSONDecodeError:
        return False
    return True


class RedisOnlineStore(RedisAggregateState):
    """``online: {type: redis, url: redis://127.0.0.1:6379/0}``."""

    capabilities = Capabilities()

    def __init__(self, config: RepoConfig) -> None:
        section = check_section(
            config,
            {
                "type": "redis",
                "url": "redis://host:port/db",
                "key_prefix": "prefix of every key (default: the project name)",
                "batch_size": "keys per write script call",
                "busy_poll_us": "microseconds a one-entity read polls for its reply before it blocks (default 0)",
                "near_cache_keys": "values each reading thread keeps, invalidated by Redis (default 0: off)",
            },
        )
        url = section.get("url", "redis://127.0.0.1:6379/0")
        if not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(f"quiver.yaml: online.url must be a URL like redis://127.0.0.1:6379/0, got {url!r}")
        prefix = section.get("key_prefix", config.project)
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ConfigError(f"quiver.yaml: online.key_prefix must be text without braces, got {prefix!r}")
        batch = section.get("batch_size", _BATCH)
        if not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"quiver.yaml: online.batch_size must be a positive integer, got {batch!r}")
        poll = section.get("busy_poll_us", 0)
        if not isinstance(poll, int) or isinstance(poll, bool) or not 0 <= poll <= 100_000:
            raise ConfigError(f"quiver.yaml: online.busy_poll_us must be microseconds from 0 to 100000 "
                              f"(try 300 where readers and Redis run on different cores), got {poll!r}")
        near = section.get("near_cache_keys", 0)
        if not isinstance(near, int) or isinstance(near, bool) or not 0 <= near <= 100_000_000:
            raise ConfigError(f"quiver.yaml: online.near_cache_keys must be a number of keys from 0 (off) "
                              f"to 100000000 (try 100000), got {near!r}")
        self.url = url
        self.prefix = prefix
        self.batch_size = batch
        self.busy_poll = poll / 1e6
        self._client = redis.Redis.from_url(url)
        self._cas: Any = None
        self._layouts: dict[str, list[str]] = {}
        self._known_layouts: set[str] = set()
        self._plans: dict[tuple[str, tuple[str, ...]], _ReadPlan] = {}
        self._lock = threading.Lock()
        self._reader = threading.local()  # per thread: (pid, a connection checked out of the pool for reads)
        self._layout_seen: dict[str, tuple[str, float]] = {}
        self._near: Any = None
        if near:
            from quiver.online.near_cache import NearCache

            self._near = NearCache(url, near)

    def close(self) -> None:
        self._client.close()
        if self._near is not None:
            self._near.close()

    def _wrote(self) -> None:
        """This process changed keys: its near cache starts over (its own writes read at once)."""
        if self._near is not None:
            self._near.forget()

    def _prefix(self, view_name: str) -> str:
        return f"{self.prefix}:{view_name}:"

    # -- writes ----------------------------------------------------------------------

    def _register_layout(self, view: FeatureView) -> str:
        lid = _layout_id(view)
        if lid not in self._known_layouts:
            self._client.hset(f"{self.prefix}:__layouts__", lid, orjson.dumps(view.feature_names))
            self._known_layouts.add(lid)
            self._layouts[lid] = view.feature_names
        return lid

    def _encode(self, view: FeatureView, table: pa.Table, lid: str) -> tuple[list[Any], list[Any]]:
        """Keys and values of every row, computed by DuckDB in one pass over Arrow."""
        features = view.feature_names
        src = normalized(view, table, features)  # noqa: F841 - read by DuckDB below
        dtypes = {f.name: f.dtype for f in view.features}
        hdr = (f"printf('%018d%018d', least(greatest(__event_us + {_OFFSET}, 0), {10**18 - 1}), "
               f"least(greatest(__created_us + {_OFFSET}, 0), {10**18 - 1}))")
        exprs = [hdr, "__event_us", f"'{lid}'"]
        for f in features:
            dt, col = dtypes[f], _quote(f)
            if dt.element is not None:
                exprs.append(f"to_json({col})")
            elif dt.name == "Bytes":
                exprs.append(f"to_base64({col})")
            elif dt.name in ("Float32", "Float64"):
                exprs.append(f"{col}::DOUBLE")
            else:
                exprs.append(col)
        sql = (
            f"SELECT {_key_sql(view, self._prefix(view.name))} AS k, json_array({', '.join(exprs)})::VARCHAR AS v "
            "FROM src"
        )
        con = duckdb.connect()
        try:
            out = con.sql(sql).to_arrow_table()
        finally:
            con.close()
        return out.column("k").to_pylist(), out.column("v").to_pylist()

    def write(self, view: FeatureView, table: pa.Table) -> int:
        if table.num_rows == 0:
            return 0
        try:
            lid = self._register_layout(view)
            keys, values = self._encode(view, table, lid)
            if self._cas is None:
                self._cas = self._client.register_script(_CAS)
            n = self.batch_size
            pipe = self._client.pipeline(transaction=False)
            calls = 0
            for i in range(0, len(keys), n):
                self._cas(keys=keys[i : i + n], args=values[i : i + n], client=pipe)
                calls += 1
                if calls % _PIPE == 0:
                    pipe.execute()
            pipe.execute()
        except redis.ConnectionError as e:
            raise TransientError(f"online store {self.url}: {e}; retry when Redis is reachable") from e
        except redis.ResponseError as e:
            raise TerminalError(f"online store {self.url}: {e}") from e
        except duckdb.Error as e:
            raise InputError(f"writing {view.name!r} online: cannot encode the rows ({e})") from e
        finally:
            self._wrote()
        return len(keys)

    # -- reads -----------------------------------------------------------------------

    def _layout(self, lid: str) -> list[str]:
        names = self._layouts.get(lid)
        if names is None:
            raw = self._client.hget(f"{self.prefix}:__layouts__", lid)
            names = orjson.loads(raw) if raw else []
            self._layouts[lid] = names
        return names

    def _plan(self, view: FeatureView, features: Sequence[str]) -> _ReadPlan:
        key = (view.name, tuple(features))
        plan = self._plans.get(key)
        if plan is None:
            names = view.feature_names
            dtypes = {f.name: f.dtype for f in view.features}
            picks = [3 + names.index(f) for f in features] + [1]  # features, then the event time
            get = operator.itemgetter(*picks) if len(picks) > 1 else (lambda r: (r[1],))
            fixers = [(i, fx) for i, f in enumerate(features) if (fx := _redis_fixer(dtypes[f])) is not None]
            single = len(view.join_keys) == 1
            plan = _ReadPlan(self._prefix(view.name) + "{", _layout_id(view), get, list(features), fixers, single)
            if len(self._plans) > 4096:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def lookup(
        self, reads: Sequence[tuple[FeatureView, Sequence[tuple[Any, ...]], Sequence[str]]]
    ) -> list[list[tuple[Any, ...] | None]]:
        plans: list[tuple[_ReadPlan, int]] = []
        redis_keys: list[str] = []
        for view, keys, features in reads:
            plan = self._plan(view, features)
            plans.append((plan, len(keys)))
            p = plan.prefix
            if plan.single:
                redis_keys += [f"{p}{k[0]}}}" if type(k[0]) is int else f"{p}{_key_text(k)}}}" for k in keys]
            else:
                redis_keys += [f"{p}{_key_text(k)}}}" for k in keys]
        if not redis_keys:
            return [[] for _ in plans]
        raw = self._mget(redis_keys)
        try:  # every value of the call in one parse
            doc = orjson.loads(b"[" + b",".join([v or b"null" for v in raw]) + b"]")
        except orjson.JSONDecodeError:
            bad = next(k for k, v in zip(redis_keys, raw, strict=True) if v and not _is_json(v))
            raise TerminalError(
                f"online store {self.url}: the value of key {bad!r} is not in quiver's format "
                "(written by another tool or an older quiver?); delete the key or materialize the view again"
            ) from None
        out: list[list[tuple[Any, ...] | None]] = []
        pos = 0
        for plan, n in plans:
            get, lid = plan.get, plan.layout
            rows: list[tuple[Any, ...] | None] = [
                None if r is None else get(r) if r[2] == lid else self._relayout(r, plan.features)
                for r in doc[pos : pos + n]
            ]
            if plan.fixers:
                rows = [None if r is None else _fix(r, plan.fixers) for r in rows]
            pos += n
            out.append(rows)
        return out

    def _mget(self, keys: list[str]) -> list[bytes | None]:
        """One MGET on this thread's read connection.

        The connection is redis-py's (its RESP parser, auth, database selection),
        checked out of the pool once per thread and process and kept: a call skips
        ``Redis.execute_command``'s per-call pool checkout, retry closure and
        observability hooks, about 50 µs of the ~80 µs a one-entity call cost.
        A broken connection is reconnected and the (idempotent) read sent once more.
        With ``near_cache_keys`` the read goes through the thread's near cache instead.
        """
        if self._near is not None:
            try:
                return self._near.mget(keys)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                raise TransientError(f"online store {self.url}: {e}; retry when Redis is reachable") from e
        local = self._reader
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            conn = local.conn = self._client.connection_pool.get_connection()
            local.pid = os.getpid()
        for attempt in (0, 1):
            try:
                conn.send_packed_command([pack_command(("MGET", *keys))], check_health=False)  # type: ignore[arg-type]
                if self.busy_poll:
                    self._poll_reply(local, conn._sock)
                return conn.read_response()  # type: ignore[no-any-return]
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                conn.disconnect()  # the next attempt (or call) connects again
                if attempt:
                    raise TransientError(f"online store {self.url}: {e}; retry when Redis is reachable") from e
            except BaseException:
                conn.disconnect()  # interrupted between send and reply: never read a stale reply later
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _poll_reply(self, local: threading.local, sock: Any) -> None:
        """Wait for a reply by polling the socket, up to ``busy_poll_us``, yielding the core
        at each turn (a Redis on the same core runs), before ``read_response`` blocks.

        Where the reader and Redis sit on different cores, a blocked reader's core goes
        idle, and on a VM whose idle vCPU halts at once the reply must wake it: about
        0.1 ms more per read, and the rest of the read on cold caches. Polling keeps the
        core awake for the time the read would sleep anyway, at the price of that CPU."""
        if getattr(local, "polled", None) is not sock:
            local.poller = select.poll()
            local.poller.register(sock, select.POLLIN)
            local.polled = sock
        poll, end = local.poller.poll, time.perf_counter() + self.busy_poll
        while not poll(0) and time.perf_counter() < end:
            os.sched_yield()

    def _relayout(self, row: list[Any], features: Sequence[str]) -> tuple[Any, ...]:
        """A value written under another feature list, picked by name."""
        names = self._layout(row[2])
        where = {n: i + 3 for i, n in enumerate(names)}
        n = len(row)
        return (*(row[where[f]] if f in where and where[f] < n else None for f in features), row[1])

    def read(self, view: FeatureView, keys: pa.Table, features: Sequence[str]) -> pa.Table:
        key_rows = list(zip(*(keys.column(k).to_pylist() for k in view.join_keys), strict=True))
        rows = self.lookup([(view, key_rows, list(features))])[0] if key_rows else []
        return rows_to_table(view, features, rows)

    def delete_view(self, view_name: str) -> None:
        self._unlink_prefix(self._prefix(view_name))  # its values and its aggregation state
        self._forget_layout(view_name)

    def _unlink_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix``, scanning and unlinking in batches of 10,000."""
        pattern = f"{prefix}*".replace("[", "\\[").replace("?", "\\?")
        batch: list[bytes] = []
        try:
            for k in self._client.scan_iter(match=pattern, count=10_000):
                batch.append(k)
                if len(batch) >= 10_000:
                    self._client.unlink(*batch)
                    batch.clear()
            if batch:
                self._client.unlink(*batch)
        finally:
            self._wrote()


def _redis_fixer(dtype: Any) -> Callable[[Any], Any] | None:
    """Stored JSON -> Python value: numbers, text, booleans and arrays are already
    right; bytes come as base64 and timestamps as epoch microseconds."""
    if dtype.name == "Bytes":
        import base64

        return base64.b64decode
    if dtype.element is not None or dtype.name == "Bool":
        return None
    return value_fixer(dtype)
