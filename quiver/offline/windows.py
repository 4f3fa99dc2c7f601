"""Window aggregations in DuckDB: each entity row's aggregates over ``[t - w, t)``.

One range join per aggregate view on the keys and
``t - max(w) <= event_time < t``, grouped by entity row, with one ``FILTER``
per shorter window; the same SQL serves training rows and ``materialize``
(aggregates at ``end``). Null inputs are skipped by every function (SQL
semantics, like ``quiver.testing.reference``): ``count`` counts non-null
values, ``last`` is the latest non-null value (ties on event time broken by
created time), ``stddev`` is the sample standard deviation (null below two
values). An empty window gives count 0 and null for the others. ``sum``,
``mean`` and ``stddev`` are the exact sums of ``quiver.aggregation.exact``
(HUGEINT sums of ``trunc(v * 2**52)``), equal to the online state's bit for bit;
a value too large for them fails the query with an ``InputError`` naming the
feature.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from quiver import types
from quiver.aggregation.functions import FUNCTIONS, sql_error
from quiver.errors import InputError
from quiver.definitions import Aggregation, FeatureView
from quiver.offline.scan import duck_type, ident, lit
from quiver.plan.retrieval import row_numbers

if TYPE_CHECKING:
    from quiver.offline.duckdb import DuckDBEngine
    from quiver.offline.history import Generation

__all__ = ["aggregate_expr", "aggregates_at", "window_cte"]


def micros(w: timedelta) -> int:
    return w // timedelta(microseconds=1)


def aggregate_expr(a: Aggregation, x: str, t: str, max_window: timedelta, input_type: pa.DataType | None) -> str:
    """The SQL of one aggregation over joined events ``x`` for entity time ``t``."""
    col = f"{x}.{ident(a.column)}"
    conds = [f"{col} IS NOT NULL"]
    if a.window < max_window:
        conds.append(f"{x}.event_timestamp >= {t} - to_microseconds({micros(a.window)})")
    where = " AND ".join(conds)
    if a.function == "last":  # DESIGN §2's tie-break on equal event times: the greatest created time
        expr = f"arg_max({col}, ({x}.event_timestamp, {x}.created_timestamp)) FILTER (WHERE {where})"
    else:  # the same SQL the aggregation algebra declares for its tiles
        expr = FUNCTIONS[a.function].sql.format(c=col, ts=f"{x}.event_timestamp", w=where,
                                                err=sql_error(a.name, a.column))
    in_t = types.from_arrow(input_type) if input_type is not None else None
    return f"CAST({expr} AS {duck_type(a.output_dtype(in_t))})"


def window_cte(
    entities: str,
    events: str,
    keys: list[str],
    aggs: list[tuple[Aggregation, str]],
    input_types: dict[str, pa.DataType],
    *,
    row: str,
    ts: str,
    as_known: bool = False,
    key_match: list[str] | None = None,
) -> str:
    """SELECT ``row`` and one column per (aggregation, output name) for every
    entity row that has at least one event in its longest window. ``key_match``
    replaces the plain key equalities (e.g. with a cast of the entity side)."""
    max_w = max(a.window for a, _ in aggs)
    on = key_match or [f"x.{ident(k)} = e.{ident(k)}" for k in keys]
    t = f"e.{ident(ts)}"
    on += [f"x.event_timestamp >= {t} - to_microseconds({micros(max_w)})", f"x.event_timestamp < {t}"]
    if as_known:
        on.append(f"x.created_timestamp <= {t}")
    cols = [f"{aggregate_expr(a, 'x', t, max_w, input_types.get(a.column))} AS {ident(name)}" for a, name in aggs]
    return (
        f"SELECT e.{ident(row)}, {', '.join(cols)} FROM {entities} e JOIN {events} x ON {' AND '.join(on)} "
        f"GROUP BY e.{ident(row)}"
    )


def finish(aggs: list[tuple[Aggregation, str]], alias: str) -> list[str]:
    """Output expressions after the LEFT JOIN: a missing window counts 0."""
    out = []
    for a, name in aggs:
        ref = f"{alias}.{ident(name)}"
        out.append(f"COALESCE({ref}, 0) AS {ident(name)}" if a.function in ("count", "count_distinct") else f"{ref} AS {ident(name)}")
    return out


def aggregates_at(engine: DuckDBEngine, view: FeatureView, gen: Generation, latest: pa.Table, end: datetime) -> pa.Table:
    """For ``materialize`` of an aggregate view: each key's aggregates at ``end``."""
    keys = view.join_keys
    events = f"read_parquet({lit(str(gen.latest))})"
    aggs = [(a, a.name) for a in view.aggregations]
    with engine.cursor() as cur:
        schema = cur.sql(f"SELECT * FROM {events} LIMIT 0").to_arrow_table().schema
        input_types = {c: schema.field(c).type for c in schema.names}
        cur.register("__latest", latest.append_column("__row", row_numbers(latest.num_rows)))
        kcols = ", ".join(ident(k) for k in keys)
        ents = f"(SELECT __row, {kcols}, ?::TIMESTAMPTZ AS __t FROM __latest)"
        cte = window_cte("ents", events, keys, aggs, input_types, row="__row", ts="__t")
        q = (
            f"WITH ents AS {ents}, w AS ({cte}) SELECT {', '.join('l.' + ident(k) for k in keys)}, "
            f"{', '.join(finish(aggs, 'w'))}, l.event_timestamp, l.created_timestamp "
            f"FROM __latest l LEFT JOIN w USING (__row) ORDER BY l.__row"
        )
        try:
            return cur.sql(q, params=[end]).to_arrow_table()
        except duckdb.InvalidInputException as e:  # raised by the exact sums' error(): a value out of range
            raise InputError(str(e).removeprefix("Invalid Input Error: ")) from None
