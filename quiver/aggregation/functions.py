"""One table of aggregation functions: init / merge / finalize, vectorized over Arrow.

Every function is built from a few *stats*, the partial aggregates that tiles
hold and that merge in any order:

====== ==================================== ==========================
stat   init (one event, value v)            merge
====== ==================================== ==========================
n      1 if v is not null else 0            add
f      1 if v is finite else 0              add
s0-s4  the limbs of trunc(v * 2**52)        add
q0-q4  the limbs of trunc(v * v * 2**52)    add
min    v                                    smallest (a NaN above every number)
max    v                                    largest (a NaN above every number)
last   (event time, v)                      greatest (time, v)
set    {v}                                  union
====== ==================================== ==========================

``sum``, ``mean`` and ``stddev`` are exact sums of integers (``exact`` holds the
definition, the limbs and the SQL): equal online and offline, bit for bit, in
any order of additions; they skip non-finite values as they skip nulls.

``FUNCTIONS`` says which stats each function needs and how it finalizes.
The stream path (tiles online), request-time reads and the offline SQL all
come from this one table; ``sql_expression`` gives the offline engine the
same meaning in SQL (nulls ignored, empty window: count 0 and null others,
``last`` ties broken by the greater value, ``stddev`` the sample deviation, by
the formula of ``exact``).

A state table has one row per group, an ``owner`` column (the group), and
one column per stat named ``{column}.{stat}`` (``last`` has ``.last_ts`` and
``.last``; ``set`` is a list column).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quiver.aggregation import exact as E
from quiver.definitions.aggregation import Aggregation

__all__ = [
    "ADDITIVE",
    "FUNCTIONS",
    "Function",
    "Stat",
    "additive_values",
    "finalize",
    "finish_exact",
    "init_states",
    "merge_states",
    "sql_error",
    "sql_expression",
    "stats_for",
]

OWNER = "owner"


@dataclass(frozen=True, slots=True)
class Stat:
    """One partial aggregate of one source column."""

    column: str
    kind: str  # n, f, s0-s4, q0-q4, min, max, last, set

    @property
    def name(self) -> str:
        return f"{self.column}.{self.kind}"


@dataclass(frozen=True, slots=True)
class Function:
    stats: tuple[str, ...]
    # offline SQL over the window's rows: {c} the quoted column, {ts} the event time,
    # {w} the condition on the rows (the window, not null), {err} the out-of-range message
    sql: str


SUM_LIMBS = tuple(f"s{k}" for k in range(E.LIMBS))
SQUARE_LIMBS = tuple(f"q{k}" for k in range(E.LIMBS))
ADDITIVE = frozenset({"n", "f", *SUM_LIMBS, *SQUARE_LIMBS})  # stats that merge by adding

# Raw numeric events are float64 records; a null is kept as this one NaN (a quiet NaN with
# a payload no arithmetic makes), so a NaN value stays a value: ``count`` counts it, as
# the tiles and DuckDB do, and the exact sums skip it, as every non-finite value.
RAW_NULL = np.array([0x7FF8_0000_0000_0BAD], dtype="<u8").view("<f8")[0]
_RAW_NULL_BITS = np.uint64(0x7FF8_0000_0000_0BAD)


def raw_null(v: np.ndarray) -> np.ndarray:
    """Where raw event values ``v`` (float64) are null."""
    null: np.ndarray = np.ascontiguousarray(v).view("<u8") == _RAW_NULL_BITS
    return null


# Raw numeric records also carry each value's exact-sum stats (``additive_values``; limbs are
# below 2**26 in magnitude) as int32, worked out once at write, so a read adds them as they
# are. An out-of-range value (NaN limbs) is kept as this limb, which no value makes.
LIMB_NAN = np.int32(-(2**31))


FUNCTIONS: dict[str, Function] = {
    "count": Function(("n",), "count({c}) FILTER (WHERE {w})"),
    "sum": Function(("f", *SUM_LIMBS), E.sql_template("sum")),
    "mean": Function(("f", *SUM_LIMBS), E.sql_template("mean")),
    "min": Function(("min",), "min({c}) FILTER (WHERE {w})"),
    "max": Function(("max",), "max({c}) FILTER (WHERE {w})"),
    "stddev": Function(("f", *SUM_LIMBS, *SQUARE_LIMBS), E.sql_template("stddev")),
    "last": Function(("last",), "arg_max({c}, ({ts}, {c})) FILTER (WHERE {w})"),
    "count_distinct": Function(("set",), "count(DISTINCT {c}) FILTER (WHERE {w})"),
}


def stats_for(aggregations: Sequence[Aggregation]) -> list[Stat]:
    """The distinct stats a set of aggregations needs (shared between them)."""
    out: list[Stat] = []
    for a in aggregations:
        for kind in FUNCTIONS[a.function].stats:
            st = Stat(a.column, kind)
            if st not in out:
                out.append(st)
    return out


def sql_expression(agg: Aggregation, ts: str = "event_timestamp") -> str:
    """The offline SQL aggregate for ``agg`` (DuckDB dialect), same meaning as the tiles."""
    c = f'"{agg.column}"'
    expr = FUNCTIONS[agg.function].sql.format(c=c, ts=f'"{ts}"', w=f"{c} IS NOT NULL",
                                              err=sql_error(agg.name, agg.column))
    return f"coalesce({expr}, 0)" if agg.function in ("count", "count_distinct") else expr


def sql_error(feature: str, column: str) -> str:
    """The out-of-range message of exact sums as an SQL string literal."""
    return "'" + str(E.out_of_range(feature, column)).replace("'", "''") + "'"


# -- init: events -> one state row per event ----------------------------------------


def _numeric(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.cast(col, pa.float64()) if not pa.types.is_floating(col.type) else col


def additive_values(v: np.ndarray, kinds: Sequence[str]) -> dict[str, np.ndarray]:
    """Each value's contribution to the exact-sum stats ``kinds`` (``f``, ``s*``, ``q*``)
    of float64 values ``v`` (NaN for null)."""
    ok = np.isfinite(v)
    out: dict[str, np.ndarray] = {"f": ok.astype("float64")}
    if any(k in SUM_LIMBS for k in kinds):
        out.update(zip(SUM_LIMBS, E.limbs(v, ok)))
    if any(k in SQUARE_LIMBS for k in kinds):
        with np.errstate(over="ignore", invalid="ignore"):
            out.update(zip(SQUARE_LIMBS, E.limbs(v * v, ok)))
    return out


def init_states(events: pa.Table, stats: Sequence[Stat], owner: pa.Array | np.ndarray, ts: str) -> pa.Table:
    """One state row per event (the ``init`` of the algebra)."""
    cols: dict[str, pa.Array | np.ndarray] = {OWNER: owner}
    exact: dict[str, dict[str, np.ndarray]] = {}  # per column: its values' exact-sum stats
    for st in stats:
        v = events.column(st.column)
        if st.kind == "n":
            cols[st.name] = pc.cast(pc.is_valid(v), pa.int64())
        elif st.kind in ADDITIVE:
            if st.column not in exact:
                x = pc.fill_null(_numeric(v), np.nan).to_numpy(zero_copy_only=False)
                exact[st.column] = additive_values(x, [s.kind for s in stats if s.column == st.column])
            cols[st.name] = exact[st.column][st.kind]
        elif st.kind in ("min", "max"):
            cols[st.name] = v
        elif st.kind == "last":
            cols[st.name + "_ts"] = pc.cast(events.column(ts), pa.int64())
            cols[st.name] = v
        elif st.kind == "set":
            flat = v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
            cols[st.name] = pa.ListArray.from_arrays(pa.array(np.arange(len(flat) + 1, dtype="int32")), flat)
    return pa.table(cols)


# -- merge: state rows -> one state row per owner ------------------------------------

_ARROW_MERGE = {**{k: "sum" for k in ADDITIVE}, "min": "min", "max": "max"}


def merge_states(states: pa.Table, stats: Sequence[Stat]) -> pa.Table:
    """Merge state rows with the same ``owner`` (order does not matter); sorted by owner."""
    if states.num_rows == 0:
        return states
    aggs: list[tuple[str, str] | tuple[str, str, pc.FunctionOptions]] = []
    for st in stats:
        if st.kind in _ARROW_MERGE:
            opts = pc.ScalarAggregateOptions(skip_nulls=True, min_count=0 if st.kind in ADDITIVE else 1)
            aggs.append((st.name, _ARROW_MERGE[st.kind], opts))
    out = states.group_by(OWNER, use_threads=False).aggregate(aggs)
    out = out.rename_columns([_strip(c, stats) for c in out.column_names]).sort_by(OWNER)
    for st in stats:
        if st.kind == "max" and pa.types.is_floating(states.schema.field(st.name).type):
            out = _max_nan(states, out, st)
        elif st.kind == "set":
            out = _merge_set(states, out, st)
        elif st.kind == "last":
            out = _merge_last(states, out, st)
    return out


def _max_nan(states: pa.Table, out: pa.Table, st: Stat) -> pa.Table:
    """NaN where an owner's values hold one: NaN orders above every number (as in DuckDB
    and Spark), where Arrow's max skips it."""
    nan = pc.fill_null(pc.is_nan(states.column(st.name)), False)
    if not pc.any(nan).as_py():
        return out
    hit = pc.is_in(out.column(OWNER), value_set=pc.unique(states.column(OWNER).filter(nan)))
    col = pc.if_else(hit, pa.scalar(float("nan"), out.schema.field(st.name).type), out.column(st.name))
    return out.set_column(out.schema.get_field_index(st.name), st.name, col)


def _strip(name: str, stats: Sequence[Stat]) -> str:
    for st in stats:
        for suffix in ("_sum", "_min", "_max", "_list"):
            if name == st.name + suffix:
                return st.name
    return name


def _merge_set(states: pa.Table, out: pa.Table, st: Stat) -> pa.Table:
    """Per owner, the union of the sets (nulls dropped)."""
    lists = states.column(st.name).combine_chunks()
    values = lists.flatten()
    owners = states.column(OWNER).combine_chunks().take(pc.list_parent_indices(lists))
    pairs = pa.table({OWNER: owners, "v": values}).filter(pc.is_valid(values))
    uniq = pairs.group_by([OWNER, "v"], use_threads=False).aggregate([])
    sets = uniq.group_by(OWNER, use_threads=False).aggregate([("v", "list")])
    col = _align(out, sets).column("v_list")
    return out.append_column(st.name, pc.if_else(pc.is_valid(col), col, pa.scalar([], col.type)))


def _align(out: pa.Table, part: pa.Table) -> pa.Table:
    """Rows of ``part`` in the order of ``out``'s owners (null rows where absent)."""
    pos = pc.index_in(out.column(OWNER), value_set=part.column(OWNER).combine_chunks())
    return part.take(pos)


def _merge_last(states: pa.Table, out: pa.Table, st: Stat) -> pa.Table:
    """Per owner, the (time, value) with the greatest time, ties to the greater value."""
    t = states.select([OWNER, st.name + "_ts", st.name]).filter(pc.is_valid(states.column(st.name)))
    order = [(OWNER, "ascending"), (st.name + "_ts", "descending"), (st.name, "descending")]
    if pa.types.is_floating(t.schema.field(st.name).type):  # a NaN is the greater value (Arrow sorts it last)
        t = t.append_column("_nan", pc.is_nan(t.column(st.name)))
        order.insert(2, ("_nan", "descending"))
    t = t.sort_by(order)
    best = t.group_by(OWNER, use_threads=False).aggregate([(st.name + "_ts", "first"), (st.name, "first")])
    best = best.rename_columns([OWNER, st.name + "_ts", st.name])
    joined = _align(out, best)
    out = out.append_column(st.name + "_ts", joined.column(st.name + "_ts"))
    return out.append_column(st.name, joined.column(st.name))


# -- finalize: state -> feature values -----------------------------------------------


def finalize(states: pa.Table, agg: Aggregation, out_type: pa.DataType | None = None) -> pa.Array:
    """The feature values of ``agg`` from merged states (one per row)."""
    c = agg.column
    f = agg.function

    def col(kind: str) -> pa.Array:
        return states.column(f"{c}.{kind}").combine_chunks() if states.num_rows else pa.array([], pa.float64())

    if f == "count":
        res = pc.fill_null(col("n"), 0)
    elif f == "count_distinct":
        res = pc.fill_null(pc.list_value_length(col("set")), 0)
    elif f in ("sum", "mean", "stddev"):
        def arr(kind: str) -> np.ndarray:
            return np.asarray(pc.fill_null(col(kind), 0.0).to_numpy(zero_copy_only=False), dtype="float64")

        q = np.stack([arr(k) for k in SQUARE_LIMBS], axis=1) if f == "stddev" else None
        res = finish_exact(agg, arr("f"), np.stack([arr(k) for k in SUM_LIMBS], axis=1), q)
    elif f in ("min", "max"):
        res = col(f)
    elif f == "last":
        res = col("last")
    else:  # pragma: no cover - Aggregation validates the name
        raise ValueError(f)
    if out_type is not None and res.type != out_type:
        res = pc.cast(res, out_type, safe=False)
    return res


def finish_exact(agg: Aggregation, n: np.ndarray, s: np.ndarray, q: np.ndarray | None) -> pa.Array:
    """``sum``/``mean``/``stddev`` per row from the finite counts ``n`` and the limb sums
    ``s`` and ``q`` (rows x limbs): ``exact.finish`` on each row, exact Python ints."""
    ns, ss = n.tolist(), s.tolist()
    qs = q.tolist() if q is not None else [None] * len(ns)
    return pa.array([E.finish(agg.function, a, b, c, agg.name, agg.column) for a, b, c in zip(ns, ss, qs)],
                    pa.float64())
