"""Online aggregation state: what a stream batch writes and how a read folds it.

The state of an aggregate view is a set of *cells* and *raw events*, both
per entity key (``windows`` says which tiles exist):

* a cell is one stat of one tile: ``(entity, level, tile, stat, op, ts, val)``;
  ``op`` tells the store how to merge a new cell into a stored one
  (``+`` add, ``<`` keep the smaller, ``>`` keep the larger, ``L`` keep the
  greater ``(ts, val)``, ``D`` a member of a distinct set: insert once);
* a raw event is kept per 10-second bucket, packed, for the window edges: a
  numeric one as a fixed-size record of its time, its values and what it adds
  to each additive stat (``_record_dtype``, versioned by ``RAW_FORMAT``).

Both are pure data: the SQLite and Redis stores apply the merge ops in one
transaction with the stream offsets they cover, and hand cells and raw
payloads back to ``fold`` on read. Cells and raw events expire once the
longest window has passed them (``expires_at``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from quiver.aggregation import functions as F
from quiver.aggregation import windows as W
from quiver.aggregation.packed import PackedReader
from quiver.definitions import FeatureView
from quiver.definitions.aggregation import Aggregation
from quiver.errors import InputError

__all__ = ["MERGE_OP", "RAW_FORMAT", "Cells", "ReadPlan", "StateLayout", "StateWrite", "aggregates_table", "entity_keys",
           "entity_strings", "key_tuples", "layout", "layout_mismatch", "table_rows"]

EVENT_TS = "event_timestamp"
# The version of the numeric raw record layout (``StateLayout._record_dtype``) and of the
# raw bucket size (``windows.RAW_BUCKET``; 3: 10-second buckets). Stores keep
# raw events under it, so records of an older layout are never read as this one; they
# expire by themselves, and ``quiver backfill VIEW --online`` rebuilds the state at once.
RAW_FORMAT = 3
_EMPTY_CELLS = pa.table({"entity": pa.array([], pa.int64()), "level": pa.array([], pa.int64()),
                         "tile": pa.array([], pa.int64()), "group": pa.array([], pa.int64()),
                         "stat": pa.array([], pa.int64()), "op": pa.array([], pa.string()),
                         "ts": pa.array([], pa.int64()), "val": pa.array([], pa.float64()),
                         "sval": pa.array([], pa.string())})
_FAST = frozenset({"count", "sum", "mean", "stddev", "min", "max"})
MERGE_OP = {**{k: "+" for k in F.ADDITIVE}, "min": "<", "max": ">", "last": "L", "set": "D"}
KEY_SEP = "\x1f"
_NAN_TEXT = "NaN"  # a float NaN in a JSON raw record (``pack_array``)


def entity_keys(table: pa.Table, join_keys: Sequence[str]) -> pa.Array:
    """One string per row naming its entity (join key values joined by a separator)."""
    _check_keys(table, join_keys)
    parts = [pc.cast(table.column(k), pa.string()) for k in join_keys]
    if len(parts) == 1:
        return pc.fill_null(parts[0], "").combine_chunks()
    return pc.binary_join_element_wise(*parts, KEY_SEP, null_handling="replace", null_replacement="").combine_chunks()


def _check_keys(table: pa.Table, join_keys: Sequence[str]) -> None:
    missing = [k for k in join_keys if k not in table.column_names]
    if missing:
        raise InputError(f"missing join key column(s) {missing}; the rows have {table.column_names}")


def entity_strings(view: FeatureView, keys: Sequence[tuple[Any, ...]]) -> list[str]:
    """``entity_keys`` for key tuples (a request's keys): the same strings, in plain Python
    for integer and text keys, through Arrow's cast (what writes use) for other types."""
    if all(type(v) is int or type(v) is str or v is None for key in keys for v in key):
        if len(view.join_keys) == 1:
            return ["" if v is None else str(v) for v, in keys]
        return [KEY_SEP.join("" if v is None else str(v) for v in key) for key in keys]
    types = {k: d.arrow for e in view.entities for k, d in e.dtypes.items()}
    cols = list(zip(*keys)) if keys else [()] * len(view.join_keys)
    table = pa.table({k: pa.array(list(c), types[k]) for k, c in zip(view.join_keys, cols)})
    strings: list[str] = entity_keys(table, view.join_keys).to_pylist()
    return strings


def key_tuples(table: pa.Table, join_keys: Sequence[str]) -> list[tuple[Any, ...]]:
    """The rows of ``table``'s join key columns as tuples."""
    _check_keys(table, join_keys)
    return list(zip(*(table.column(k).to_pylist() for k in join_keys)))


def aggregates_table(read: Any, view: FeatureView, keys: pa.Table, features: Sequence[str] | None,
                     at: datetime | int) -> pa.Table:
    """A store's ``read_aggregate_rows`` with Arrow in and out: one row per row of ``keys``,
    one column per feature."""
    by_name = {a.name: a for a in view.aggregations}
    names = list(features) if features else list(by_name)
    rows = read(view, key_tuples(keys, view.join_keys), names, W.to_us(at))
    cols = list(zip(*rows)) if rows else [()] * len(names)
    return pa.table({f: _column(list(c), by_name[f].output_dtype().arrow) for f, c in zip(names, cols)})


def table_rows(table: pa.Table, features: Sequence[str]) -> list[tuple[Any, ...]]:
    """The feature columns of a ``fold`` result as row tuples."""
    return list(zip(*(table.column(f).to_pylist() for f in features)))


def _column(values: list[Any], dtype: pa.DataType) -> pa.Array:
    """Python values as an Arrow array of ``dtype`` (a cast only where they do not fit it)."""
    try:
        return pa.array(values, dtype)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(values).cast(dtype, safe=False)


class Cells(NamedTuple):
    """Stored numeric cells as columns (what fast store reads hand to ``fold``)."""

    row: np.ndarray
    level: np.ndarray
    tile: np.ndarray
    stat: np.ndarray
    val: np.ndarray


@dataclass
class StateWrite:
    """What one batch of events adds to one view's state, as columns.

    ``table``: entity, level, tile, group, stat, op, ts (for ``last``), val
    (numeric values) and sval (other values); ``raw_table``: entity, bucket and
    the packed event. ``cells``/``raw`` give the same as Python tuples."""

    view: str
    table: pa.Table
    raw_table: pa.Table
    events: int = 0
    max_event_us: int | None = None
    layout: StateLayout | None = None  # for the stores: expiry times

    @property
    def cells(self) -> list[tuple[Any, ...]]:
        """(entity, level, tile, stat, op, ts, val) per cell."""
        return self.cells_of(self.table)

    @staticmethod
    def cells_of(t: pa.Table) -> list[tuple[Any, ...]]:
        """``cells`` of ``t``: some rows of a ``table``."""
        if t.num_rows == 0:
            return []
        cols = [t.column(c).to_pylist() for c in ("entity", "level", "tile", "stat", "op", "ts", "val", "sval")]
        return [(e, lv, tl, st, op, ts, v if sv is None else sv) for e, lv, tl, st, op, ts, v, sv in zip(*cols)]

    @property
    def raw(self) -> list[tuple[str, int, bytes]]:
        t = self.raw_table
        return list(zip(*(t.column(c).to_pylist() for c in ("entity", "bucket", "payload"))))

    def raw_runs(self) -> RawRuns:
        """The raw events (at least one) sorted by (entity, bucket), as runs of one (entity,
        bucket) each: what a store keeps as one value (numeric records, appended)."""
        raw = self.raw_table.sort_by([("entity", "ascending"), ("bucket", "ascending")])
        n = raw.num_rows
        buckets = raw.column("bucket").to_numpy()
        starts = np.zeros(1, dtype="int64")
        if n > 1:
            e_arr = raw.column("entity").combine_chunks()
            changed = pc.not_equal(e_arr.slice(1), e_arr.slice(0, n - 1)).to_numpy(zero_copy_only=False)
            starts = np.concatenate([starts, np.flatnonzero(changed | (buckets[1:] != buckets[:-1])) + 1])
        payload = raw.column("payload").combine_chunks()
        offs = np.frombuffer(payload.buffers()[1], dtype="int32")[payload.offset: payload.offset + n + 1].astype("int64")
        data = payload.buffers()[2].to_pybytes()[int(offs[0]): int(offs[-1])]
        offs -= offs[0]
        return RawRuns(raw.take(pa.array(starts)), np.diff(np.append(starts, n)), offs[np.append(starts, n)], offs, data)


class RawRuns(NamedTuple):
    """``StateWrite.raw_runs``: per run its entity and bucket (``heads``) and event count;
    the byte offsets in ``data`` (all payloads, in order) of each run and of each event,
    the end included."""

    heads: pa.Table
    counts: np.ndarray
    run_offsets: np.ndarray
    event_offsets: np.ndarray
    data: bytes


@dataclass
class ReadPlan:
    """The tiles and raw buckets a read at ``at`` needs, for some features."""

    at: int
    aggregations: list[Aggregation]
    covers: dict[int, W.Cover]  # window (us) -> cover
    tiles: dict[int, list[int]] = field(default_factory=dict)  # level -> sorted tile indices
    raw_buckets: list[int] = field(default_factory=list)
    _runs: list[tuple[int, int, int]] | None = None

    def tile_ranges(self) -> list[tuple[int, int, int]]:
        """(level, first tile, last tile) per level, for range queries."""
        return [(lv, ts[0], ts[-1]) for lv, ts in self.tiles.items() if ts]

    def runs(self) -> list[tuple[int, int, int]]:
        """(level, first, last) of each run of consecutive tiles, for range queries."""
        if self._runs is not None:
            return self._runs
        out = []
        for lv, tiles in self.tiles.items():
            start = prev = tiles[0] if tiles else 0
            for t in tiles[1:]:
                if t != prev + 1:
                    out.append((lv, start, prev))
                    start = t
                prev = t
            if tiles:
                out.append((lv, start, prev))
        self._runs = out
        return out

    def groups(self) -> list[tuple[int, int, list[int]]]:
        """(level, group, tiles) for stores that keep tiles in groups."""
        out: dict[tuple[int, int], list[int]] = {}
        for lv, tiles in self.tiles.items():
            for t in tiles:
                out.setdefault((lv, W.group_of(lv, t)), []).append(t)
        return [(lv, g, ts) for (lv, g), ts in sorted(out.items())]


class StateLayout:
    """The state of one aggregate view: its stats, raw columns and expiry."""

    def __init__(self, view: FeatureView) -> None:
        if not view.is_aggregate:
            raise InputError(f"feature view {view.name!r} has no aggregations; it keeps no aggregation state")
        self.view = view
        self.stats = F.stats_for(view.aggregations)
        self.stat_index = {st.name: i for i, st in enumerate(self.stats)}
        self.columns = list(dict.fromkeys(st.column for st in self.stats))
        self.max_window_us = int(max(a.window for a in view.aggregations).total_seconds() * 1_000_000)
        self.levels = W.levels_for(self.max_window_us)  # tile levels kept: LEVELS[:levels]
        self.value_types: dict[str, pa.DataType] = {c: self._value_type(c) for c in self.columns}
        self.numeric = all(pa.types.is_integer(t) or pa.types.is_floating(t) for t in self.value_types.values())
        self._tile_cache: dict[tuple[tuple[int, int], ...], dict[int, list[int]]] = {}
        self._by_name = {a.name: a for a in view.aggregations}
        self.packed = PackedReader(self)  # additive stats as packed tiles (stores may use it)
        self._raw_dtype = self._record_dtype()
        self.signature = self._signature()

    def _signature(self) -> str:
        """What the stored state's meaning depends on: its stats in order (hash fields and
        packed slots are their positions), value types, tile levels, the longest window
        (older events have expired) and the record format. Stores record it per view and
        refuse state written under another (``layout_mismatch``), rather than read one
        layout's bytes as another's."""
        parts = (RAW_FORMAT, W.LEVELS, W.GROUP, W.RAW_BUCKET, self.levels, self.max_window_us,
                 [(st.column, st.kind) for st in self.stats], [str(self.value_types[c]) for c in self.columns],
                 self._raw_dtype.descr)
        return hashlib.blake2b(repr(parts).encode(), digest_size=8).hexdigest()

    def _record_dtype(self) -> np.dtype:
        """A numeric raw event's record: its time, each column's value (``RAW_NULL`` for
        null) and ``d``, what the event adds to each packed slot (its counts and the limbs
        of its exact sums, ``PackedReader.positions``) as int32: worked out once, at
        write, so that a read adds them as they are."""
        fields: list[tuple[Any, ...]] = [("ts", "<i8")] + [(f"c{i}", "<f8") for i in range(len(self.columns))]
        if self.packed.width:
            fields.append(("d", "<i4", (self.packed.width,)))
        return np.dtype(fields)

    def _record_deltas(self, rec: np.ndarray) -> np.ndarray:
        """``d`` of raw records whose time and values are set: per column its
        ``functions.additive_values`` (and ``n``, not null), an out-of-range value's NaN
        limbs as ``functions.LIMB_NAN``."""
        d = np.zeros((len(rec), self.packed.width))
        for j, c in enumerate(self.columns):
            slots = [(self.packed.positions[i], st.kind) for i, st in enumerate(self.stats)
                     if st.column == c and st.kind in F.ADDITIVE]
            if not slots:
                continue
            v = rec[f"c{j}"]
            exact = F.additive_values(v, [k for _, k in slots])
            for p, kind in slots:
                d[:, p] = ~F.raw_null(v) if kind == "n" else exact[kind]
        return np.where(np.isnan(d), float(F.LIMB_NAN), d).astype("<i4")

    def _value_type(self, column: str) -> pa.DataType:
        """The type values of ``column`` are kept as: the source schema's when it declares
        one, else what min/max/last output, else numbers when summed, else text."""
        declared = {f.name: f.dtype for f in getattr(self.view.source, "schema", ())}
        if column in declared:
            return declared[column].arrow
        aggs = [a for a in self.view.aggregations if a.column == column]
        for a in aggs:
            if a.function in ("min", "max", "last"):
                return a.output_dtype().arrow
        if any(a.function in ("sum", "mean", "stddev") for a in aggs):
            return pa.float64()
        if all(a.function == "count" for a in aggs):
            return pa.float64()  # only nulls matter
        return pa.string()

    # -- expiry ------------------------------------------------------------------

    def group_expires_at(self, level: np.ndarray, group: np.ndarray) -> np.ndarray:
        """When storage groups (arrays of levels and group indices) and their tiles can go:
        the group's end plus the longest window."""
        ends: np.ndarray = (group + 1) * np.asarray(W.GROUP)[level] + self.max_window_us
        return ends

    def raw_expires_at(self, bucket: np.ndarray) -> np.ndarray:
        """When raw buckets can go: a minute after the longest window has passed them, for
        a read of that window's start minute as its tile less the events before the start
        (``windows.cover``)."""
        ends: np.ndarray = (bucket + 1) * W.RAW_BUCKET + self.max_window_us + W.LEVELS[0]
        return ends

    # -- write ---------------------------------------------------------------------

    def write(self, events: pa.Table, ts: str = EVENT_TS, now_us: int | None = None) -> StateWrite:
        """Cells and raw events for a batch: events pre-merged per tile, vectorized.
        With ``now_us``, events older than the longest window are left out: no read
        at ``now`` or later can see them (they still go to the offline store)."""
        if now_us is not None and events.num_rows:
            t_all = pc.cast(events.column(ts), pa.int64())
            events = events.filter(pc.greater_equal(t_all, now_us - self.max_window_us))
        ent = entity_keys(events, self.view.join_keys)
        t_us = pc.cast(events.column(ts), pa.int64()).to_numpy(zero_copy_only=False)
        codes = pc.dictionary_encode(ent)
        idx = codes.indices.to_numpy(zero_copy_only=False).astype("int64")
        names_arr = codes.dictionary
        parts: list[pa.Table] = []
        for level, size in enumerate(W.LEVELS[: self.levels]):
            tile = t_us // size
            tmin = int(tile.min()) if len(tile) else 0
            span = int(tile.max()) - tmin + 1 if len(tile) else 1
            owner = idx * span + (tile - tmin)
            merged = F.merge_states(F.init_states(events, self.stats, owner, ts), self.stats)
            if merged.num_rows == 0:
                continue
            own = merged.column(F.OWNER).to_numpy()
            ent_i = own // span
            tiles = (own % span) + tmin
            for st in self.stats:
                col = merged.column(st.name).combine_chunks()
                rows = np.arange(len(own))
                tss = None
                if st.kind == "set":
                    rows = pc.list_parent_indices(col).to_numpy()
                    col = pc.list_flatten(col)
                elif st.kind in F.ADDITIVE:  # adding zero changes nothing (most high limbs): no cell
                    rows = np.flatnonzero(col.to_numpy(zero_copy_only=False) != 0)
                    col = col.take(pa.array(rows))
                elif st.kind in ("min", "max", "last"):
                    rows = np.flatnonzero(pc.is_valid(col).to_numpy(zero_copy_only=False))
                    col = col.take(pa.array(rows))
                    if st.kind == "last":
                        tss = merged.column(st.name + "_ts").combine_chunks().take(pa.array(rows))
                parts.append(self._cells(ent_i[rows], level, tiles[rows], st, col, tss))
        table = pa.concat_tables(parts) if parts else _EMPTY_CELLS
        table = table.set_column(0, "entity", names_arr.take(table.column("entity"))) if table.num_rows else \
            _EMPTY_CELLS.set_column(0, "entity", pa.array([], pa.string()))
        raw = pa.table({"entity": ent, "bucket": pa.array(t_us // W.RAW_BUCKET, pa.int64()),
                        "payload": self.pack_array(events, t_us)})
        return StateWrite(self.view.name, table, raw, events.num_rows, int(t_us.max()) if len(t_us) else None, self)

    def _cells(self, ent: np.ndarray, level: int, tiles: np.ndarray, st: F.Stat, col: pa.Array,
               tss: pa.Array | None) -> pa.Table:
        n = len(ent)
        vt = self.value_types[st.column]
        numeric = st.kind in F.ADDITIVE or pa.types.is_integer(vt) or pa.types.is_floating(vt)
        return pa.table({
            "entity": pa.array(ent, pa.int64()),
            "level": pa.array(np.full(n, level, dtype="int64")),
            "tile": pa.array(tiles, pa.int64()),
            "group": pa.array(tiles * W.LEVELS[level] // W.GROUP[level], pa.int64()),
            "stat": pa.array(np.full(n, self.stat_index[st.name], dtype="int64")),
            "op": pa.array([MERGE_OP[st.kind]] * n, pa.string()),
            "ts": tss.cast(pa.int64()) if tss is not None else pa.nulls(n, pa.int64()),
            "val": col.cast(pa.float64()) if numeric else pa.nulls(n, pa.float64()),
            "sval": pa.nulls(n, pa.string()) if numeric else col.cast(pa.string()),
        })

    def pack_array(self, events: pa.Table, t_us: np.ndarray) -> pa.Array:
        """Each event's time and stat columns as bytes (fixed-width when numeric)."""
        if self.numeric:
            rec = np.empty(len(t_us), dtype=self._raw_dtype)
            rec["ts"] = t_us
            for i, c in enumerate(self.columns):
                col = events.column(c)
                if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):  # counted only
                    col = pc.if_else(pc.is_valid(col), 1.0, None)
                rec[f"c{i}"] = pc.fill_null(pc.cast(col, pa.float64()), F.RAW_NULL).to_numpy(zero_copy_only=False)
            if self.packed.width:
                rec["d"] = self._record_deltas(rec)
            size = self._raw_dtype.itemsize
            fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(size), len(rec), [None, pa.py_buffer(rec.tobytes())])
            return fixed.cast(pa.binary())
        # JSON has no NaN (orjson writes null): a NaN of a float column goes as the text "NaN"
        cols = [[_NAN_TEXT if v != v else v for v in events.column(c).to_pylist()]
                if pa.types.is_floating(self.value_types[c]) else events.column(c).to_pylist() for c in self.columns]
        return pa.array([orjson.dumps(row) for row in zip(t_us.tolist(), *cols)], pa.binary())

    def unpack(self, payloads: Sequence[bytes]) -> pa.Table:
        """Packed raw events back to a table (event time in us, stat columns)."""
        if self.numeric:
            rec = np.frombuffer(b"".join(payloads), dtype=self._raw_dtype)
            cols: dict[str, Any] = {EVENT_TS: rec["ts"].copy()}
            for i, c in enumerate(self.columns):
                v = rec[f"c{i}"]
                cols[c] = pa.array(v, mask=F.raw_null(v)).cast(self.value_types[c], safe=False)
            return pa.table(cols)
        rows = [orjson.loads(p) for p in payloads]
        data = {EVENT_TS: pa.array([r[0] for r in rows], pa.int64())}
        for i, c in enumerate(self.columns):
            vals = [r[i + 1] for r in rows]
            if pa.types.is_floating(self.value_types[c]):
                vals = [float("nan") if v == _NAN_TEXT else v for v in vals]
            try:
                data[c] = pa.array(vals, self.value_types[c])
            except (pa.ArrowInvalid, pa.ArrowTypeError):  # e.g. numbers kept as text: Arrow's text form
                data[c] = pc.cast(pa.array(vals), self.value_types[c])
        return pa.table(data)

    # -- read ------------------------------------------------------------------------

    def plan(self, features: Sequence[str] | None, at: datetime | int, invertible: bool = False) -> ReadPlan:
        """Which tiles and raw buckets a read of ``features`` at ``at`` needs; ``invertible``
        (stats that add, folded with signs: ``PackedReader``): an edge minute may be read
        as its tile less the raw events outside the window (``windows.cover``)."""
        aggs = [self._by_name[f] for f in features] if features else list(self.view.aggregations)
        t = W.to_us(at)
        covers: dict[int, W.Cover] = {}
        for a in aggs:
            w = int(a.window.total_seconds() * 1_000_000)
            if w not in covers:
                covers[w] = W.cover(t - w, t, self.levels, invertible)
        key = tuple(c.aligned for c in covers.values())
        cached = self._tile_cache.get(key)
        if cached is None:
            acc: dict[int, set[int]] = {}
            for c in covers.values():
                for lv, tl in c.tiles:
                    acc.setdefault(lv, set()).add(tl)
            cached = {lv: sorted(ts) for lv, ts in sorted(acc.items())}
            if len(self._tile_cache) > 256:
                self._tile_cache.clear()
            self._tile_cache[key] = cached
        raw = sorted({b for c in covers.values() for b, _, _ in (*c.raw, *c.less)})
        return ReadPlan(t, aggs, covers, cached, raw)

    def fold(
        self,
        plan: ReadPlan,
        n_keys: int,
        cells: Sequence[tuple[int, int, int, int, Any, Any]] | Cells,
        raw: Sequence[tuple[int, bytes]],
    ) -> pa.Table:
        """Feature values per key row from stored cells ``(row, level, tile, stat, ts, val)``
        and raw events ``(row, packed)``; an empty window gives count 0 and nulls."""
        if self.fast(plan):
            return self._fold_fast(plan, n_keys, cells, raw)
        if isinstance(cells, Cells):
            cells = [(int(r), int(lv), int(t), int(st), None, float(v)) for r, lv, t, st, v in zip(*cells)]
        cell_t = self._cell_states(cells)
        if raw:
            rows, payloads = zip(*raw)
            ev = self.unpack(payloads)
            rows_arr = self._raw_rows(raw) if self.numeric else np.asarray(rows, dtype="int64")
            raw_states = F.init_states(ev, self.stats, pa.array(rows_arr, pa.int64()), EVENT_TS)
            raw_ts = ev.column(EVENT_TS).to_numpy()
        else:
            raw_states, raw_ts = None, np.empty(0, "int64")
        out: dict[str, pa.Array] = {}
        tile_key = None
        if cell_t.num_rows:
            tile_key = pc.add(pc.multiply(cell_t.column("_tile"), 4), cell_t.column("_level"))
        for w, cov in plan.covers.items():
            parts = []
            if tile_key is not None and cov.tiles:
                wanted = pa.array([tl * 4 + lv for lv, tl in cov.tiles], pa.int64())
                parts.append(cell_t.filter(pc.is_in(tile_key, wanted)).drop_columns(["_tile", "_level"]))
            if raw_states is not None:
                keep = _raw_keep(raw_ts, cov)
                if keep.any():
                    parts.append(raw_states.filter(pa.array(keep)))
            merged = self._merge_rows(parts, n_keys)
            for a in plan.aggregations:
                if int(a.window.total_seconds() * 1_000_000) == w:
                    out[a.name] = F.finalize(merged, a, a.output_dtype().arrow)
        return pa.table({a.name: out[a.name] for a in plan.aggregations})

    def _fold_fast(
        self,
        plan: ReadPlan,
        n_keys: int,
        cells: Sequence[tuple[int, int, int, int, Any, Any]] | Cells,
        raw: Sequence[tuple[int, bytes]],
    ) -> pa.Table:
        """The same fold in numpy, for numeric stats that add, or keep a min or max
        (the common case, and the one request latency depends on)."""
        if isinstance(cells, Cells):
            crow, cstat, cval = cells.row, cells.stat, cells.val
            clv, ctl = cells.level, cells.tile
        elif cells:
            rows_c, lv_c, tl_c, st_c, _, val_c = zip(*cells)
            crow, clv, ctl = (np.asarray(x, dtype="int64") for x in (rows_c, lv_c, tl_c))
            cstat = np.asarray(st_c, dtype="int64")
            cval = np.asarray(val_c, dtype="float64")
        else:
            crow = clv = ctl = cstat = np.empty(0, "int64")
            cval = np.empty(0, "float64")
        if raw:
            rrow = self._raw_rows(raw)
            rec = np.frombuffer(b"".join(p for _, p in raw), dtype=self._raw_dtype)
            rts = rec["ts"]
        else:
            rrow = np.empty(0, "int64")
            rec, rts = None, np.empty(0, "int64")
        out: dict[str, pa.Array] = {}
        stat_mask = [cstat == i for i in range(len(self.stats))]
        raw_val = {c: rec[f"c{j}"] for j, c in enumerate(self.columns)} if rec is not None else {}
        raw_ok = {c: ~np.isnan(v) for c, v in raw_val.items()}  # neither null nor NaN
        raw_set = {c: ~F.raw_null(v) for c, v in raw_val.items()}  # not null: what count counts
        raw_delta = self.packed.deltas(rec) if rec is not None and self.packed.width else None
        one = n_keys == 1  # a request for one entity: plain sums beat bincount

        def total(rows: np.ndarray, w: np.ndarray | None, n_rows: int) -> np.ndarray:
            if one:
                return np.array([float(w.sum()) if w is not None else float(n_rows)])
            return np.bincount(rows, weights=w, minlength=n_keys).astype("float64")

        for w, cov in plan.covers.items():
            m = np.zeros(len(ctl), dtype=bool)
            for lv, lo, hi in cov.runs():
                m |= (clv == lv) & (ctl >= lo) & (ctl <= hi)
            keep = _raw_keep(rts, cov) if rec is not None else np.zeros(len(rts), dtype=bool)
            acc: dict[str, np.ndarray] = {}
            for i, st in enumerate(self.stats):
                sel = m & stat_mask[i]
                ok = raw_set if st.kind in ("n", "min", "max") else raw_ok
                rsel = keep & ok[st.column] if rec is not None else keep
                rv = raw_val[st.column][rsel] if rec is not None else np.empty(0)
                rr = rrow[rsel]
                if st.kind in F.ADDITIVE:
                    x = None if st.kind == "n" or raw_delta is None else raw_delta[rsel, self.packed.positions[i]]
                    acc[st.name] = total(crow[sel], cval[sel], 0) + total(rr, x, len(rr))
                else:
                    acc[st.name], acc[st.name + "?"] = _extreme(
                        st.kind, np.concatenate((crow[sel], rr)), np.concatenate((cval[sel], rv)), n_keys)
            for agg in plan.aggregations:
                if int(agg.window.total_seconds() * 1_000_000) == w:
                    out[agg.name] = _finalize_np(agg, acc, self.value_types[agg.column])
        return pa.table({a.name: out[a.name] for a in plan.aggregations})

    def _raw_rows(self, raw: Sequence[tuple[int, bytes]]) -> np.ndarray:
        """The key row of every packed record (a payload may hold several, appended)."""
        size = self._raw_dtype.itemsize
        return np.repeat(np.asarray([r for r, _ in raw], dtype="int64"), [len(p) // size for _, p in raw])

    def fast(self, plan: ReadPlan) -> bool:
        """Whether ``plan`` folds on the numpy path (numeric stats that add or keep min/max)."""
        return self.numeric and all(a.function in _FAST for a in plan.aggregations)

    def _schema(self) -> pa.Schema:
        fields = [pa.field(F.OWNER, pa.int64())]
        for st in self.stats:
            vt = self.value_types[st.column]
            if st.kind == "n":
                fields.append(pa.field(st.name, pa.int64()))
            elif st.kind in F.ADDITIVE:
                fields.append(pa.field(st.name, pa.float64()))
            elif st.kind == "last":
                fields += [pa.field(st.name + "_ts", pa.int64()), pa.field(st.name, vt)]
            elif st.kind == "set":
                fields.append(pa.field(st.name, pa.list_(vt)))
            else:
                fields.append(pa.field(st.name, vt))
        return pa.schema(fields)

    def _cell_states(self, cells: Sequence[tuple[int, int, int, int, Any, Any]]) -> pa.Table:
        """Stored cells as state rows: one row per cell, its stat set, the others empty."""
        schema = self._schema()
        if not cells:
            return schema.empty_table().append_column("_tile", pa.array([], pa.int64())).append_column(
                "_level", pa.array([], pa.int64()))
        rows, levels, tiles, stats, tss, vals = (list(c) for c in zip(*cells))
        stat_arr = np.asarray(stats)
        cols: dict[str, pa.Array] = {F.OWNER: pa.array(rows, pa.int64())}
        n = len(rows)
        for i, st in enumerate(self.stats):
            mask = stat_arr != i
            f = schema.field(st.name)
            if st.kind == "set":
                vals_i = [[v] if s == i else [] for s, v in zip(stats, vals)]
                cols[st.name] = pa.array(vals_i, f.type)
                continue
            if st.kind in F.ADDITIVE:
                arr = np.asarray([v if s == i else 0 for s, v in zip(stats, vals)], dtype="float64")
                cols[st.name] = pa.array(arr).cast(f.type, safe=False)
                continue
            picked = [v if s == i else None for s, v in zip(stats, vals)]
            cols[st.name] = pa.array(picked).cast(f.type, safe=False) if n else pa.array([], f.type)
            if st.kind == "last":
                cols[st.name + "_ts"] = pa.array([int(t) if s == i and t is not None else None for s, t in zip(stats, tss)], pa.int64())
            del mask
        t = pa.table({f.name: cols[f.name] for f in schema})
        return t.append_column("_tile", pa.array(tiles, pa.int64())).append_column("_level", pa.array(levels, pa.int64()))

    def _merge_rows(self, parts: list[pa.Table], n_keys: int) -> pa.Table:
        """Merge state parts per key row and return exactly one row per key row."""
        schema = self._schema()
        parts = [p.select(schema.names).cast(schema) for p in parts if p.num_rows]
        if parts:
            merged = F.merge_states(pa.concat_tables(parts), self.stats)
        else:
            merged = schema.empty_table()
        own = merged.column(F.OWNER).to_numpy() if merged.num_rows else np.empty(0, "int64")
        pos = np.full(n_keys, -1, dtype="int64")
        pos[own] = np.arange(len(own))
        idx = pa.array(pos, mask=pos < 0)
        return merged.take(idx)


def _finalize_np(agg: Aggregation, acc: dict[str, np.ndarray], value_type: pa.DataType) -> pa.Array:
    """``functions.finalize`` for numpy accumulators (same rules: empty -> 0 or null)."""
    c, f = agg.column, agg.function
    out_type = agg.output_dtype().arrow
    n = acc.get(f"{c}.n", np.zeros(0))
    if f == "count":
        res = pa.array(np.rint(n).astype("int64"))
    elif f in ("min", "max"):
        res = pa.array(acc[f"{c}.{f}"], mask=~acc[f"{c}.{f}?"]).cast(value_type, safe=False)
    else:  # sum, mean, stddev: exact sums (``exact``)
        s = np.stack([acc[f"{c}.{k}"] for k in F.SUM_LIMBS], axis=1)
        q = np.stack([acc[f"{c}.{k}"] for k in F.SQUARE_LIMBS], axis=1) if f == "stddev" else None
        res = F.finish_exact(agg, acc[f"{c}.f"], s, q)
    return res if res.type == out_type else res.cast(out_type, safe=False)


def _extreme(kind: str, rows: np.ndarray, vals: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """Per key row the min or max of ``vals`` (the values of rows ``rows``), a NaN ordered
    above every number as DuckDB orders it (max: NaN once there is one; min: NaN only
    when there is nothing else), and whether the row had any value (else null)."""
    present = np.zeros(n_keys, dtype=bool)
    present[rows] = True
    nan = np.isnan(vals)
    best = np.full(n_keys, np.inf if kind == "min" else -np.inf)
    (np.minimum if kind == "min" else np.maximum).at(best, rows[~nan], vals[~nan])
    if nan.any():
        has_nan = np.zeros(n_keys, dtype=bool)
        has_nan[rows[nan]] = True
        if kind == "min":
            has_nan[rows[~nan]] = False
        best[has_nan] = np.nan
    return best, present


def _raw_keep(ts: np.ndarray, cov: W.Cover) -> np.ndarray:
    """Raw events that count in a window: inside ``[start, end)`` and not under its
    tiles (``aligned``), which already hold them (a cover without ``less`` pieces)."""
    a, b = cov.aligned
    return (ts >= cov.start) & (ts < cov.end) & ((ts < a) | (ts >= b))


_LAYOUTS: dict[str, StateLayout] = {}


def layout_mismatch(where: str, view: str) -> InputError:
    """The error of a read or write that meets a view's state written under another
    ``StateLayout.signature``: its aggregations (or their columns, types or longest
    window) changed since, or this process runs an older definition than the writer's."""
    return InputError(f"online store {where}: the aggregation state of view {view!r} was written for other "
                      f"aggregations than this definition of it has (features, their order, columns, types or "
                      f"longest window changed); rebuild it with: quiver backfill {view} --online (or, if it was "
                      f"rebuilt for a newer definition, load that one: quiver apply)")


def layout(view: FeatureView) -> StateLayout:
    """The view's ``StateLayout``, built once per definition object (a read plans with it)."""
    lay = _LAYOUTS.get(view.name)
    if lay is None or lay.view is not view:
        if len(_LAYOUTS) > 256:
            _LAYOUTS.clear()
        lay = _LAYOUTS[view.name] = StateLayout(view)
    return lay
