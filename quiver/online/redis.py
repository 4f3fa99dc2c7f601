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

The driver (redis-py, with hiredis when installed) is imported here only.
"""

from __future__ import annotations

import hashlib
import operator
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
import pyarrow as pa

from quiver.aggregation.state import aggregates_table, entity_strings, layout, table_rows
from quiver.config import RepoConfig
from quiver.errors import ConfigError, InputError, TerminalError, TransientError
from quiver.online.sqlite import check_section, normalized, rows_to_table, value_fixer
from quiver.protocols import Capabilities

if TYPE_CHECKING:
    from quiver.definitions import FeatureView

__all__ = ["RedisOnlineStore"]

try:
    import redis
except ImportError as e:  # pragma: no cover - reported by plugins.load with the extra to install
    raise ImportError("redis", name="redis") from e

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


class RedisOnlineStore:
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
        self.url = url
        self.prefix = prefix
        self.batch_size = batch
        self._client = redis.Redis.from_url(url)
        self._cas: Any = None
        self._layouts: dict[str, list[str]] = {}
        self._known_layouts: set[str] = set()
        self._plans: dict[tuple[str, tuple[str, ...]], _ReadPlan] = {}
        self._lock = threading.Lock()
        self._reader = threading.local()  # per thread: (pid, a connection checked out of the pool for reads)

    def close(self) -> None:
        self._client.close()

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
        """
        local = self._reader
        conn = getattr(local, "conn", None)
        if conn is None or local.pid != os.getpid():
            conn = local.conn = self._client.connection_pool.get_connection()
            local.pid = os.getpid()
        for attempt in (0, 1):
            try:
                conn.send_packed_command(conn.pack_command("MGET", *keys), check_health=False)
                return conn.read_response()  # type: ignore[no-any-return]
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                conn.disconnect()  # the next attempt (or call) connects again
                if attempt:
                    raise TransientError(f"online store {self.url}: {e}; retry when Redis is reachable") from e
            except BaseException:
                conn.disconnect()  # interrupted between send and reply: never read a stale reply later
                raise
        raise AssertionError("unreachable")  # pragma: no cover

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
        self._unlink_prefix(self._prefix(view_name))

    def _unlink_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix``, scanning and unlinking in batches of 10,000."""
        pattern = f"{prefix}*".replace("[", "\\[").replace("?", "\\?")
        batch: list[bytes] = []
        for k in self._client.scan_iter(match=pattern, count=10_000):
            batch.append(k)
            if len(batch) >= 10_000:
                self._client.unlink(*batch)
                batch.clear()
        if batch:
            self._client.unlink(*batch)
    # -- aggregation state (streaming) ---------------------------------------------------
    # Owned by the streaming work (quiver.ingest.stream). The additive stats (counts, the
    # limbs of exact sums) of one (view, entity, level, group) are one string of float64 slots
    # (quiver.aggregation.packed) that a read fetches whole; min, max, last live in a hash
    # per group and distinct sets in a set per group; raw edge events in one string per
    # minute bucket (or a list, for text values). Every key carries its entity in a hash
    # tag and expires once the longest window has passed it. One Lua script merges a batch
    # and records the stream offsets it covers, atomically, so a killed worker neither
    # loses nor double-counts; a read of additive features is one MGET per entity.

    # ARGV[1]: the hash cells as JSON columns {k, f, o, t, v} plus their keys to expire
    # {ek, em}, the offsets {ok, ov}, and the packed tile keys {pk, pe, pc} (name, expiry,
    # number of records) and the raw event keys {rk, re, rn} (name, expiry, number of
    # values; numeric views APPEND one value, others RPUSH one per event) with the byte
    # length of each value {rl}; ARGV[2]: the packed records ('<i4d': slot, delta), key
    # by key; ARGV[3]: the raw values, concatenated.
    _AGG_LUA = """
local function lt(a, b)
  local x, y = tonumber(a), tonumber(b)
  if x and y then return x < y end
  return a < b
end
local d = cjson.decode(ARGV[1])
for i = 1, #d.ok do  -- a batch whose offsets the state already holds was applied before
  local held = redis.call('HGET', KEYS[1], d.ok[i])
  if held and tonumber(held) >= tonumber(d.ov[i]) then return 0 end
end
local k, f, o, t, v = d.k, d.f, d.o, d.t, d.v
for i = 1, #k do
  local op = o[i]
  if op == '+' then
    redis.call('HINCRBYFLOAT', k[i], f[i], v[i])
  elseif op == 'D' then
    redis.call('SADD', k[i], f[i])
  else
    local cur = redis.call('HGET', k[i], f[i])
    if op == 'L' then
      local ct = redis.call('HGET', k[i], f[i] .. 't')
      if (not cur) or lt(ct, t[i]) or (tonumber(ct) == tonumber(t[i]) and lt(cur, v[i])) then
        redis.call('HSET', k[i], f[i], v[i], f[i] .. 't', t[i])
      end
    elseif (not cur) or (op == '<' and lt(v[i], cur)) or (op == '>' and lt(cur, v[i])) then
      redis.call('HSET', k[i], f[i], v[i])
    end
  end
end
local blob, at = ARGV[2], 1
for i = 1, #d.pk do  -- packed tiles: read, add the deltas slot by slot, write back with its expiry
  local key = d.pk[i]
  local cur = redis.call('GET', key)
  local vals, n = {}, 0
  if cur and #cur >= 8 then
    n = #cur / 8
    vals = {struct.unpack('<' .. string.rep('d', n), cur)}
    vals[n + 1] = nil
  end
  for _ = 1, d.pc[i] do
    local slot, v
    slot, v, at = struct.unpack('<i4d', blob, at)
    slot = slot + 1
    while n < slot do n = n + 1; vals[n] = 0 end
    vals[slot] = vals[slot] + v
  end
  redis.call('SET', key, struct.pack('<' .. string.rep('d', n), unpack(vals, 1, n)), 'PXAT', d.pe[i])
end
local raw, j = ARGV[3], 1
at = 1
for i = 1, #d.rk do  -- raw events; a new key gets its expiry as it is made
  local k = d.rk[i]
  if d.rn[i] == 0 then  -- numeric: fixed-size records appended to one string
    local v = string.sub(raw, at, at + d.rl[j] - 1)
    at, j = at + d.rl[j], j + 1
    if not redis.call('SET', k, v, 'NX', 'PXAT', d.re[i]) then redis.call('APPEND', k, v) end
  else
    local n
    for _ = 1, d.rn[i] do
      n = redis.call('RPUSH', k, string.sub(raw, at, at + d.rl[j] - 1))
      at, j = at + d.rl[j], j + 1
    end
    if n == d.rn[i] then redis.call('PEXPIREAT', k, d.re[i]) end
  end
end
for i = 1, #d.ek do
  redis.call('PEXPIREAT', d.ek[i], d.em[i])
end
for i = 1, #d.ok do
  redis.call('HSET', KEYS[1], d.ok[i], d.ov[i])
end
return 1
"""

    def _agg_prefix(self, view_name: str) -> str:
        return f"{self.prefix}:{view_name}:agg:"

    def write_aggregates(self, writes: Sequence[Any], offsets: dict[str, int] | None = None,
                         now_us: int | None = None, *, wait: bool = True) -> Any:
        """Merge ``StateWrite``s and record ``offsets`` (scope -> next offset) in one script;
        a batch whose offsets are already held is skipped (returns False). Keys, fields and
        values are built by Arrow kernels and cross as one JSON document. With
        ``wait=False`` it returns a function that waits for the reply (True/False), so the
        caller can prepare the next batch while Redis applies this one."""
        import time

        import numpy as np
        import pyarrow.compute as pc

        from quiver.aggregation.windows import GROUP, LEVELS

        from quiver.aggregation.packed import slots

        cols: dict[str, list[Any]] = {c: [] for c in ("k", "f", "o", "t", "v", "ek", "em", "ok", "ov", "pk", "pe", "pc",
                                                      "rk", "re", "rn", "rl")}
        raw_args: list[bytes] = []
        records: list[bytes] = []
        for w in writes:
            lay = w.layout
            p = self._agg_prefix(w.view)
            t = w.table
            if t.num_rows and lay.packed.width:  # additive stats: packed tiles (aggregation.packed)
                sl = slots(t, lay.packed.positions)
                if len(sl.count):
                    lv_s = pc.cast(pa.array(sl.level), pa.string())
                    cols["pk"] += pc.binary_join_element_wise(p + "{", sl.entity, "}:p", lv_s, ":",
                                                              pc.cast(pa.array(sl.group), pa.string()), "").to_pylist()
                    cols["pe"] += (((sl.group + 1) * np.asarray(GROUP)[sl.level] + lay.max_window_us) // 1000).tolist()
                    cols["pc"] += sl.count.tolist()
                    rec = np.empty(len(sl.slot), dtype=[("slot", "<i4"), ("value", "<f8")])
                    rec["slot"], rec["value"] = sl.slot, sl.value
                    records.append(rec.tobytes())
                t = t.filter(pc.not_equal(t.column("op"), "+"))
            if t.num_rows:
                s = lambda c: pc.cast(t.column(c), pa.string())  # noqa: E731
                is_set = pc.equal(t.column("op"), "D")
                lv = pc.if_else(is_set, pc.binary_join_element_wise("s", s("level"), ""), s("level"))
                key = pc.binary_join_element_wise(p + "{", t.column("entity"), "}:", lv, ":", s("group"), "")
                val = pc.coalesce(t.column("sval"), s("val"))
                field = pc.binary_join_element_wise(s("tile"), s("stat"), ":")
                field = pc.if_else(is_set, pc.binary_join_element_wise(field, val, ":"), field)
                cols["k"] += key.to_pylist()
                cols["f"] += field.to_pylist()
                cols["o"] += t.column("op").to_pylist()
                cols["t"] += pc.fill_null(s("ts"), "").to_pylist()
                cols["v"] += pc.fill_null(val, "").to_pylist()
                level = t.column("level").to_numpy()
                group = t.column("group").to_numpy()
                ends = (group + 1) * np.asarray(GROUP)[level] + lay.max_window_us
                exp = pa.table({"k": key, "e": pa.array(ends // 1000)}).group_by("k").aggregate([("e", "max")])
                cols["ek"] += exp.column("k").to_pylist()
                cols["em"] += pc.cast(exp.column("e_max"), pa.string()).to_pylist()
            raw = w.raw_table
            if raw.num_rows:
                self._raw_args(p, lay, raw, raw_args, cols)
        for scope, off in (offsets or {}).items():
            cols["ok"].append(scope)
            cols["ov"].append(str(off))
        doc = orjson.dumps(cols)
        args = (1, f"{self.prefix}:__stream_offsets__", doc, b"".join(records), b"".join(raw_args))
        try:
            sha = getattr(self, "_agg_write_sha", None) or self._client.script_load(self._AGG_LUA)
            self._agg_write_sha = sha
            conn = self._client.connection_pool.get_connection()
        except redis.ConnectionError as e:
            raise TransientError(f"online store {self.url}: {e}; retry the batch") from e
        sent = time.perf_counter()
        try:
            conn.send_command("EVALSHA", sha, *args)
        except BaseException as e:
            self._client.connection_pool.release(conn)
            raise TransientError(f"online store {self.url}: {e}; retry the batch") from e

        def reply() -> bool:
            try:
                try:
                    out = conn.read_response()
                except redis.exceptions.NoScriptError:
                    self._agg_write_sha = self._client.script_load(self._AGG_LUA)
                    out = self._client.execute_command("EVALSHA", self._agg_write_sha, *args)
            except redis.ConnectionError as e:
                conn.disconnect()
                raise TransientError(f"online store {self.url}: {e}; retry the batch") from e
            except redis.ResponseError as e:
                raise TerminalError(f"online store {self.url}: {e}") from e
            finally:
                self._client.connection_pool.release(conn)
            self.agg_write_seconds = time.perf_counter() - sent
            return bool(out)

        _ = LEVELS
        return reply() if wait else reply

    @staticmethod
    def _raw_args(p: str, lay: Any, raw: pa.Table, out: list[bytes], cols: dict[str, list[Any]]) -> None:
        """Raw events: fixed-size records APPENDed per (entity, minute) for numeric views
        (read back in one GET), else one list element per event."""
        import numpy as np
        import pyarrow.compute as pc

        from quiver.aggregation.windows import RAW_BUCKET

        raw = raw.sort_by([("entity", "ascending"), ("bucket", "ascending")])
        n = raw.num_rows
        buckets = raw.column("bucket").to_numpy()
        starts = np.zeros(1, dtype="int64")
        if n > 1:
            e_arr = raw.column("entity").combine_chunks()
            changed = pc.not_equal(e_arr.slice(1), e_arr.slice(0, n - 1)).to_numpy(zero_copy_only=False)
            starts = np.concatenate([starts, np.flatnonzero(changed | (buckets[1:] != buckets[:-1])) + 1])
        heads = raw.take(pa.array(starts))
        tag = "a" if lay.numeric else "r"
        cols["rk"] += pc.binary_join_element_wise(p + "{", heads.column("entity"), "}:" + tag + ":",
                                                  pc.cast(heads.column("bucket"), pa.string()), "").to_pylist()
        cols["re"] += (((heads.column("bucket").to_numpy() + 1) * RAW_BUCKET + lay.max_window_us) // 1000).tolist()
        payload = raw.column("payload").combine_chunks()
        offs = np.frombuffer(payload.buffers()[1], dtype="int32")[payload.offset: payload.offset + n + 1]
        out.append(payload.buffers()[2].to_pybytes()[int(offs[0]): int(offs[-1])])  # the values, in order
        counts = np.diff(np.append(starts, n))
        if lay.numeric:  # one value per key: its records, one slice of the sorted buffer
            cols["rn"] += [0] * len(counts)
            cols["rl"] += (offs[np.append(starts, n)][1:] - offs[starts]).tolist()
        else:
            cols["rn"] += counts.tolist()
            cols["rl"] += np.diff(offs).tolist()

    def read_offsets(self, prefix: str = "") -> dict[str, int]:
        """The next offset to consume per stream scope (``topic/partition``) the state holds."""
        got = self._client.hgetall(f"{self.prefix}:__stream_offsets__")
        out = {k.decode(): int(v) for k, v in got.items()}
        return {k: v for k, v in out.items() if k.startswith(prefix)}

    def read_aggregates(self, view: FeatureView, keys: pa.Table, features: Sequence[str], at: Any) -> pa.Table:
        """Finalized aggregates over ``[at - w, at)``, one row per row of ``keys``."""
        return aggregates_table(self.read_aggregate_rows, view, keys, features, at)

    def read_aggregate_rows(self, view: FeatureView, keys: Sequence[tuple[Any, ...]], features: Sequence[str],
                            at_us: int) -> list[tuple[Any, ...]]:
        """``read_aggregates`` for key tuples: one tuple of feature values per key, at
        ``at_us`` (epoch microseconds); what a request reads, without Arrow."""
        lay = layout(view)
        plan = lay.plan(features, at_us)
        ents = entity_strings(view, keys)
        p = self._agg_prefix(view.name)
        if lay.numeric and lay.packed.handles(plan):
            return self._read_packed(lay, plan, ents, p)
        return table_rows(self._read_cells(lay, plan, ents, p), [a.name for a in plan.aggregations])

    def _read_cells(self, lay: Any, plan: Any, ents: list[str], p: str) -> pa.Table:
        """Any aggregates: the hash cells, distinct sets, packed tiles and raw events of
        the plan, per entity one pipeline, folded by ``StateLayout.fold``."""
        import numpy as np

        from quiver.aggregation.packed import ADDITIVE
        from quiver.aggregation.windows import GROUP, LEVELS

        groups = plan.groups()
        wanted = {i for a in plan.aggregations for i, s in enumerate(lay.stats) if s.column == a.column}
        stats = [(i, s.kind) for i, s in enumerate(lay.stats) if s.kind != "set" and s.kind not in ADDITIVE and i in wanted]
        sets = [i for i, s in enumerate(lay.stats) if s.kind == "set"]
        adds = [(i, lay.packed.positions[i]) for i in sorted(wanted) if lay.stats[i].kind in ADDITIVE]
        fields_of: list[tuple[int, int, list[int], list[bytes], list[tuple[int, int, bool]]]] = []
        for lv, g, tiles in groups:
            fields, meta = [], []
            for tl in tiles:
                for i, kind in stats:
                    fields.append(f"{tl}:{i}".encode())
                    meta.append((tl, i, False))
                    if kind == "last":
                        fields.append(f"{tl}:{i}t".encode())
                        meta.append((tl, i, True))
            fields_of.append((lv, g, tiles, fields, meta))
        pipe = self._client.pipeline(transaction=False)
        uniq = list(dict.fromkeys(ents))
        for e in uniq:
            for lv, g, _, fields, _ in fields_of:
                if fields:
                    pipe.execute_command("HMGET", f"{p}{{{e}}}:{lv}:{g}", *fields)
                if sets:
                    pipe.execute_command("SMEMBERS", f"{p}{{{e}}}:s{lv}:{g}")
                if adds:
                    pipe.execute_command("GET", f"{p}{{{e}}}:p{lv}:{g}")
            for b in plan.raw_buckets:
                if lay.numeric:
                    pipe.execute_command("GET", f"{p}{{{e}}}:a:{b}")
                else:
                    pipe.execute_command("LRANGE", f"{p}{{{e}}}:r:{b}", 0, -1)
        try:
            res = pipe.execute()
        except redis.ConnectionError as e:
            raise TransientError(f"online store {self.url}: {e}; retry when Redis is reachable") from e
        rows_of: dict[str, list[int]] = {}
        for r, e in enumerate(ents):
            rows_of.setdefault(e, []).append(r)
        cells: list[tuple[Any, ...]] = []
        raw: list[tuple[int, bytes]] = []
        pos = 0
        width = lay.packed.width
        num = {i: k in ("n", "s", "q") or lay.value_types[lay.stats[i].column] != pa.string() for i, k in stats}
        set_num = {i: lay.value_types[lay.stats[i].column] != pa.string() for i in sets}
        for e in uniq:
            rows = rows_of[e]
            found: list[tuple[Any, ...]] = []
            for lv, g, tiles, fields, meta in fields_of:
                if fields:
                    values = res[pos]
                    pos += 1
                    got: dict[tuple[int, int], list[Any]] = {}
                    for (tl, i, is_ts), v in zip(meta, values):
                        if v is not None:
                            got.setdefault((tl, i), [None, None])[0 if is_ts else 1] = v
                    for (tl, i), (ts, v) in got.items():
                        if v is not None:
                            found.append((lv, tl, i, None if ts is None else int(float(ts)),
                                          float(v) if num[i] else v.decode()))
                if sets:
                    want = set(tiles)
                    for m in res[pos]:
                        tl, i, v = m.decode().split(":", 2)
                        if int(tl) in want:
                            found.append((lv, int(tl), int(i), None, float(v) if set_num[int(i)] else v))
                    pos += 1
                if adds:
                    packed = np.frombuffer(res[pos] or b"", dtype="<f8")
                    pos += 1
                    first = g * (GROUP[lv] // LEVELS[lv])
                    for tl in tiles:
                        for i, at_ in adds:
                            k = (tl - first) * width + at_
                            if k < len(packed) and packed[k] != 0:
                                found.append((lv, tl, i, None, float(packed[k])))
            for _ in plan.raw_buckets:
                got = res[pos]
                for payload in ([got] if got else []) if lay.numeric else got:
                    raw.extend((r, payload) for r in rows)
                pos += 1
            cells.extend((r, *c) for r in rows for c in found)
        return lay.fold(plan, len(ents), cells, raw)

    def _read_packed(self, lay: Any, plan: Any, ents: list[str], p: str) -> list[tuple[Any, ...]]:
        """Additive aggregates (count, sum, mean, stddev): per entity one MGET of its packed
        tile groups and raw edge buckets (every key in the entity's hash slot), folded in numpy."""
        pk = lay.packed
        groups = pk.groups(plan)
        suffixes = [f"p{lv}:{g}" for lv, g in groups] + [f"a:{b}" for b in plan.raw_buckets]
        uniq = list(dict.fromkeys(ents))
        try:
            if len(uniq) == 1:  # a request's one entity: the kept read connection of ``_mget``
                res = [self._mget([f"{p}{{{uniq[0]}}}:{s}" for s in suffixes])]
            else:
                pipe = self._client.pipeline(transaction=False)
                for e in uniq:
                    pipe.execute_command("MGET", *[f"{p}{{{e}}}:{s}" for s in suffixes])
                res = pipe.execute()
        except redis.ConnectionError as e:
            raise TransientError(f"online store {self.url}: {e}; retry when Redis is reachable") from e
        n = len(groups)
        by_entity = {e: tuple(pk.fold(plan, got[:n], b"".join([x for x in got[n:] if x]))) for e, got in zip(uniq, res)}
        return [by_entity[e] for e in ents]

    def delete_aggregates(self, view_name: str) -> None:
        """Drop a view's aggregation state (before a rebuild)."""
        self._unlink_prefix(self._agg_prefix(view_name))


def _redis_fixer(dtype: Any) -> Callable[[Any], Any] | None:
    """Stored JSON -> Python value: numbers, text, booleans and arrays are already
    right; bytes come as base64 and timestamps as epoch microseconds."""
    if dtype.name == "Bytes":
        import base64

        return base64.b64decode
    if dtype.element is not None or dtype.name == "Bool":
        return None
    return value_fixer(dtype)
