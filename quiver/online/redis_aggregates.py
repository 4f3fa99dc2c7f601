"""The streaming aggregation state in Redis: the part of ``RedisOnlineStore`` that
aggregate views use (``quiver.ingest.stream`` writes it, reads fold it).

The additive stats (counts, the
limbs of exact sums) of one (view, entity, level, group) are one string of float64 slots
(quiver.aggregation.packed) that a read fetches whole; min, max, last live in a hash
per group and distinct sets in a set per group; raw edge events in one string per
10-second bucket (or a list, for text values). Every key carries its entity in a hash
tag and expires once the longest window has passed it. One Lua script merges a batch
and records the stream offsets it covers, atomically, so a killed worker neither
loses nor double-counts; a read of additive features is one MGET per entity.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import orjson
import pyarrow as pa
import redis

from quiver.aggregation.state import RAW_FORMAT, aggregates_table, entity_strings, layout, layout_mismatch, table_rows
from quiver.errors import TerminalError, TransientError

if TYPE_CHECKING:
    from quiver.definitions import FeatureView

__all__ = ["RedisAggregateState"]

_NUMERIC_RAW = f"a{RAW_FORMAT}"  # the key tag of numeric raw records (fixed-size, appended)
_TEXT_RAW = f"r{RAW_FORMAT}"  # the key tag of other raw events (one list element each)
_LAYOUT_RECHECK = 1.0  # seconds a reader trusts that a view's state is still of its layout


class RedisAggregateState:
    """Aggregation state methods of ``RedisOnlineStore`` (which provides the client, the
    key prefix, the URL, its read connection ``_mget`` and ``_unlink_prefix``)."""

    _client: Any
    prefix: str
    url: str
    _mget: Callable[[list[str]], list[bytes | None]]
    _wrote: Callable[[], None]
    _unlink_prefix: Callable[[str], None]
    _layout_seen: dict[str, tuple[str, float]]  # view -> (signature its state matched, when)
    # a stream worker's batch under a backlog: one script, which every reader waits for
    # (redis-server spends about 7.5 µs per event: some 40 ms a batch)
    stream_batch_size = 5_000

    # KEYS: the stream offsets hash, the layouts hash (view -> signature). ARGV[1]: the hash
    # cells as JSON columns {k, f, o, t, v} (o: the merge op, after a 't' for text values)
    # plus their keys to expire {ek, em}, the offsets {ok, ov}, the views and their layout
    # signatures {lv, ls}, the packed tile keys {pk, pe, pc} (name, expiry, number of
    # records) and the raw event keys {rk, re, rn} (name, expiry, number of values; numeric
    # views APPEND one value, others RPUSH one per event) with the byte length of each value
    # {rl}; ARGV[2]: the packed records ('<i4d': slot, delta), key by key; ARGV[3]: the raw
    # values, concatenated.
    _AGG_LUA = """
local function lt(a, b, text)  -- numbers in order with NaN above them all (as DuckDB orders them)
  local x, y = tonumber(a), tonumber(b)
  if text or not (x and y) then return a < b end
  if x ~= x then return false end
  if y ~= y then return true end
  return x < y
end
local d = cjson.decode(ARGV[1])
for i = 1, #d.ok do  -- a batch whose offsets the state already holds was applied before
  local held = redis.call('HGET', KEYS[1], d.ok[i])
  if held and tonumber(held) >= tonumber(d.ov[i]) then return 0 end
end
for i = 1, #d.lv do  -- each view's state is of one layout (StateLayout.signature)
  local sig = redis.call('HGET', KEYS[2], d.lv[i])
  if sig and sig ~= d.ls[i] then return redis.error_reply('QUIVER_LAYOUT ' .. d.lv[i]) end
  if not sig then redis.call('HSET', KEYS[2], d.lv[i], d.ls[i]) end
end
local k, f, o, t, v = d.k, d.f, d.o, d.t, d.v
for i = 1, #k do
  local op, text = o[i], #o[i] == 2
  if text then op = string.sub(op, 2) end
  if op == '+' then
    redis.call('HINCRBYFLOAT', k[i], f[i], v[i])
  elseif op == 'D' then
    redis.call('SADD', k[i], f[i])
  else
    local cur = redis.call('HGET', k[i], f[i])
    if op == 'L' then
      local ct = redis.call('HGET', k[i], f[i] .. 't')
      if (not cur) or lt(ct, t[i]) or (tonumber(ct) == tonumber(t[i]) and lt(cur, v[i], text)) then
        redis.call('HSET', k[i], f[i], v[i], f[i] .. 't', t[i])
      end
    elseif (not cur) or (op == '<' and lt(v[i], cur, text)) or (op == '>' and lt(cur, v[i], text)) then
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

    @property
    def _layouts_key(self) -> str:
        return f"{self.prefix}:__agg_layouts__"

    def _check_layout(self, lay: Any) -> None:
        """Refuse to read a view whose state was written under another ``StateLayout.signature``.
        A match is trusted for ``_LAYOUT_RECHECK`` seconds (a read stays one round trip);
        anything else is looked up at once."""
        name, now = lay.view.name, time.monotonic()
        seen = self._layout_seen.get(name)
        if seen is not None and seen[0] == lay.signature and now - seen[1] < _LAYOUT_RECHECK:
            return
        try:
            got = self._client.hget(self._layouts_key, name)
        except redis.ConnectionError as e:
            raise TransientError(f"online store {self.url}: {e}; retry when Redis is reachable") from e
        if got is not None and got.decode() != lay.signature:
            self._layout_seen.pop(name, None)
            raise layout_mismatch(self.url, name)
        self._layout_seen[name] = (lay.signature, now)

    def write_aggregates(self, writes: Sequence[Any], offsets: dict[str, int] | None = None,
                         now_us: int | None = None, *, wait: bool = True) -> Any:
        """Merge ``StateWrite``s and record ``offsets`` (scope -> next offset) in one script;
        a batch whose offsets are already held is skipped (returns False). Keys, fields and
        values are built by Arrow kernels and cross as one JSON document. With
        ``wait=False`` it returns a function that waits for the reply (True/False), so the
        caller can prepare the next batch while Redis applies this one."""
        import numpy as np
        import pyarrow.compute as pc

        from quiver.aggregation.packed import slots

        cols: dict[str, list[Any]] = {c: [] for c in ("k", "f", "o", "t", "v", "ek", "em", "ok", "ov", "pk", "pe", "pc",
                                                      "rk", "re", "rn", "rl")}
        sigs = {w.view: w.layout.signature for w in writes}
        cols["lv"], cols["ls"] = list(sigs), list(sigs.values())
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
                    cols["pe"] += (lay.group_expires_at(sl.level, sl.group) // 1000).tolist()
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
                # text values compare as text ('t' before the op), numbers as numbers
                text = pc.and_(pc.is_valid(t.column("sval")), pc.invert(is_set))
                cols["o"] += pc.if_else(text, pc.binary_join_element_wise("t", t.column("op"), ""),
                                        t.column("op")).to_pylist()
                cols["t"] += pc.fill_null(s("ts"), "").to_pylist()
                cols["v"] += pc.fill_null(val, "").to_pylist()
                level = t.column("level").to_numpy()
                group = t.column("group").to_numpy()
                ends = lay.group_expires_at(level, group)
                exp = pa.table({"k": key, "e": pa.array(ends // 1000)}).group_by("k").aggregate([("e", "max")])
                cols["ek"] += exp.column("k").to_pylist()
                cols["em"] += pc.cast(exp.column("e_max"), pa.string()).to_pylist()
            if w.raw_table.num_rows:
                self._raw_args(p, lay, w, raw_args, cols)
        for scope, off in (offsets or {}).items():
            cols["ok"].append(scope)
            cols["ov"].append(str(off))
        doc = orjson.dumps(cols)
        args = (2, f"{self.prefix}:__stream_offsets__", self._layouts_key, doc, b"".join(records), b"".join(raw_args))
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
                if str(e).startswith("QUIVER_LAYOUT "):
                    raise layout_mismatch(self.url, str(e).removeprefix("QUIVER_LAYOUT ")) from None
                raise TerminalError(f"online store {self.url}: {e}") from e
            finally:
                self._client.connection_pool.release(conn)
                self._wrote()
            self.agg_write_seconds = time.perf_counter() - sent
            return bool(out)

        return reply() if wait else reply

    @staticmethod
    def _raw_args(p: str, lay: Any, w: Any, out: list[bytes], cols: dict[str, list[Any]]) -> None:
        """Raw events: fixed-size records APPENDed per (entity, raw bucket) for numeric views
        (read back in one GET), else one list element per event."""
        import numpy as np
        import pyarrow.compute as pc

        runs = w.raw_runs()
        tag = _NUMERIC_RAW if lay.numeric else _TEXT_RAW
        cols["rk"] += pc.binary_join_element_wise(p + "{", runs.heads.column("entity"), "}:" + tag + ":",
                                                  pc.cast(runs.heads.column("bucket"), pa.string()), "").to_pylist()
        cols["re"] += (lay.raw_expires_at(runs.heads.column("bucket").to_numpy()) // 1000).tolist()
        out.append(runs.data)
        if lay.numeric:  # one value per key: its records, one slice of the sorted buffer
            cols["rn"] += [0] * len(runs.counts)
            cols["rl"] += np.diff(runs.run_offsets).tolist()
        else:
            cols["rn"] += runs.counts.tolist()
            cols["rl"] += np.diff(runs.event_offsets).tolist()

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
        self._check_layout(lay)
        ents = entity_strings(view, keys)
        p = self._agg_prefix(view.name)
        prog = lay.packed.program(features, at_us, _NUMERIC_RAW)
        if prog is not None:
            rows = self._read_packed(lay.packed, prog, at_us, ents, p)
            if rows is not None:
                return rows
        plan = lay.plan(features, at_us)
        return table_rows(self._read_cells(lay, plan, ents, p), [a.name for a in plan.aggregations])

    def _read_cells(self, lay: Any, plan: Any, ents: list[str], p: str) -> pa.Table:
        """Any aggregates: the hash cells, distinct sets, packed tiles and raw events of
        the plan, per entity one pipeline, folded by ``StateLayout.fold``."""
        from quiver.aggregation.packed import ADDITIVE

        groups = plan.groups()
        wanted = {i for a in plan.aggregations for i, s in enumerate(lay.stats) if s.column == a.column}
        stats = [(i, s.kind) for i, s in enumerate(lay.stats) if s.kind != "set" and s.kind not in ADDITIVE and i in wanted]
        sets = [i for i, s in enumerate(lay.stats) if s.kind == "set"]
        adds = [i for i in sorted(wanted) if lay.stats[i].kind in ADDITIVE]
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
                    pipe.execute_command("GET", f"{p}{{{e}}}:{_NUMERIC_RAW}:{b}")
                else:
                    pipe.execute_command("LRANGE", f"{p}{{{e}}}:{_TEXT_RAW}:{b}", 0, -1)
        try:
            res = pipe.execute()
        except redis.ConnectionError as err:
            raise TransientError(f"online store {self.url}: {err}; retry when Redis is reachable") from err
        rows_of: dict[str, list[int]] = {}
        for r, e in enumerate(ents):
            rows_of.setdefault(e, []).append(r)
        cells: list[tuple[Any, ...]] = []
        raw: list[tuple[int, bytes]] = []
        pos = 0
        # which stats hold numbers (min, max, last and distinct members of a text column are text)
        num = {i: lay.value_types[s.column] != pa.string() for i, s in enumerate(lay.stats)}
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
                            found.append((lv, int(tl), int(i), None, float(v) if num[int(i)] else v))
                    pos += 1
                if adds:
                    found += lay.packed.cells(lv, g, tiles, res[pos], adds)
                    pos += 1
            for _ in plan.raw_buckets:
                bucket = res[pos]
                for payload in ([bucket] if bucket else []) if lay.numeric else bucket:
                    raw.extend((r, payload) for r in rows)
                pos += 1
            cells.extend((r, *c) for r in rows for c in found)
        return lay.fold(plan, len(ents), cells, raw)

    def _read_packed(self, pk: Any, prog: Any, at_us: int, ents: list[str], p: str) -> list[tuple[Any, ...]] | None:
        """Additive aggregates (count, sum, mean, stddev): per entity one MGET of its packed
        tile groups and raw edge buckets (every key in the entity's hash slot), folded in numpy;
        None where a value out of range was read (``PackedReader.fold``)."""
        uniq = list(dict.fromkeys(ents))
        try:
            if len(uniq) == 1:  # a request's one entity: the kept read connection of ``_mget``
                res = [self._mget([f"{p}{{{uniq[0]}}}:{s}" for s in prog.suffixes])]
            else:
                pipe = self._client.pipeline(transaction=False)
                for e in uniq:
                    pipe.execute_command("MGET", *[f"{p}{{{e}}}:{s}" for s in prog.suffixes])
                res = pipe.execute()
        except redis.ConnectionError as e:
            raise TransientError(f"online store {self.url}: {e}; retry when Redis is reachable") from e
        by_entity = {e: pk.fold(prog, at_us, got) for e, got in zip(uniq, res)}
        if any(v is None for v in by_entity.values()):
            return None
        return [by_entity[e] for e in ents]

    def delete_aggregates(self, view_name: str) -> None:
        """Drop a view's aggregation state (before a rebuild)."""
        self._unlink_prefix(self._agg_prefix(view_name))
        self._forget_layout(view_name)

    def _forget_layout(self, view_name: str) -> None:
        """The view's state is gone: the next write records its layout anew."""
        self._client.hdel(self._layouts_key, view_name)
        self._layout_seen.pop(view_name, None)
