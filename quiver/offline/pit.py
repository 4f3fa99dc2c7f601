"""The point-in-time join in DuckDB: one query per retrieval plan.

Snapshot views are chained ``ASOF LEFT JOIN``s of the entity rows onto each
view's history deduplicated on (keys, event time) by the greatest created
time: after that deduplication no two candidates tie on event time, so the
ASOF match (the greatest event time <= t) is exactly the row DESIGN §2
chooses, and the ttl only has to null it out when it is older than
``t - ttl``. The history is the compacted generation when it is fresh (no
dedupe, no sort at query time), else the source files deduplicated in the
same query with ``QUALIFY`` (the cold path; same result).

As-known-at (``as_known=True``) also needs ``created_timestamp <= t``, which an
ASOF join cannot express: those views use a range join on the keys, the ttl
bounds and the created time, keeping the best row per entity row. Aggregate
views use the range join of ``quiver.offline.windows``. Both are joined back
on the entity row number, and the output is ordered by it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from quiver.errors import InputError
from quiver.offline.scan import file_list, ident, projection_sql
from quiver.offline.windows import finish, micros, window_cte
from quiver.plan.retrieval import EntityInput, RetrievalPlan, ViewPlan

if TYPE_CHECKING:
    from quiver.offline.duckdb import DuckDBEngine

__all__ = ["run_plan"]

BATCH_ROWS = 64 * 1024
_INTS = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}


def _history(engine: DuckDBEngine, vp: ViewPlan, as_known: bool) -> str:
    """The SQL of the view's candidate rows (view column names)."""
    view = vp.view
    files = engine.view_files(view)
    gen = engine.fresh_history(view, files)
    keys = [ident(k) for k in vp.join_keys]
    values = [ident(a.column) for a in vp.aggregations] if vp.is_aggregate else [ident(f) for f in vp.features]
    cols = ", ".join(dict.fromkeys(keys + values + ["event_timestamp", "created_timestamp"]))
    if gen is not None:
        paths = [gen.latest] if (vp.is_aggregate or not as_known) else [gen.latest, gen.superseded]
        return f"SELECT {cols} FROM read_parquet({file_list(paths)})"
    proj = projection_sql(view, files)
    if vp.is_aggregate or as_known:
        return f"SELECT {cols} FROM ({proj})"
    has_created = any(s is not None and s.created_timestamp_column for s in (files.batch, files.stream))
    if not has_created:
        return f"SELECT {cols} FROM ({proj})"
    return (
        f"SELECT {cols} FROM ({proj}) QUALIFY row_number() OVER "
        f"(PARTITION BY {', '.join(keys)}, event_timestamp ORDER BY created_timestamp DESC) = 1"
    )


def _key_match(cur: duckdb.DuckDBPyConnection, vp: ViewPlan, hist: str, alias: str, ent_types: dict[str, str]) -> list[str]:
    """Equality conditions on the join keys, casting the entity side when the types differ."""
    rel = cur.sql(f"SELECT * FROM ({hist}) LIMIT 0")
    hist_types = {c: str(t) for c, t in zip(rel.columns, rel.types, strict=True)}
    out = []
    for k in vp.join_keys:
        et, ht = ent_types[k], hist_types[k]
        left = f"e.{ident(k)}"
        if et != ht:
            if (et in _INTS and ht in _INTS) or (et == "VARCHAR" and ht == "VARCHAR"):
                left = f"CAST({left} AS {ht})"
            else:
                raise InputError(
                    f"entity column {k!r} is {et} but feature view {vp.view.name!r} stores it as {ht}; "
                    f"convert the column to {ht.lower()} (the same type as the source)"
                )
        out.append(f"{left} = {alias}.{ident(k)}")
    return out


def build_sql(engine: DuckDBEngine, cur: duckdb.DuckDBPyConnection, plan: RetrievalPlan, ent: EntityInput) -> str:
    rel = cur.sql("SELECT * FROM __entities LIMIT 0")
    ent_types = {c: str(t) for c, t in zip(rel.columns, rel.types, strict=True)}
    ts, row = ident(ent.timestamp_column), ident(ent.row_column)
    ctes = ["e AS (SELECT * FROM __entities)"]
    joins: list[str] = []
    select: list[str] = ["e.*"]
    for i, vp in enumerate(plan.views):
        h = f"h{i}"
        hist = _history(engine, vp, plan.as_known)
        match = _key_match(cur, vp, hist, "x" if (vp.is_aggregate or plan.as_known) else h, ent_types)
        ctes.append(f"{h} AS ({hist})")
        if vp.is_aggregate:
            w = f"w{i}"
            schema = cur.sql(f"SELECT * FROM ({hist}) LIMIT 0").to_arrow_table().schema
            in_types = {n: schema.field(n).type for n in schema.names}
            aggs = [(a, vp.columns[a.name]) for a in vp.aggregations]
            cte = window_cte("e", h, vp.join_keys, aggs, in_types, row=ent.row_column, ts=ent.timestamp_column,
                             as_known=plan.as_known, key_match=match)
            ctes.append(f"{w} AS ({cte})")
            joins.append(f"LEFT JOIN {w} ON {w}.{row} = e.{row}")
            select += finish(aggs, w)
        elif plan.as_known:
            k = f"k{i}"
            on = match + [f"x.event_timestamp <= e.{ts}", f"x.created_timestamp <= e.{ts}"]
            if vp.ttl is not None:
                on.append(f"x.event_timestamp >= e.{ts} - to_microseconds({micros(vp.ttl)})")
            feats = ", ".join(f"x.{ident(f)} AS {ident(vp.columns[f])}" for f in vp.features)
            ctes.append(
                f"{k} AS (SELECT e.{row}, {feats} FROM e JOIN {h} x ON {' AND '.join(on)} QUALIFY row_number() OVER "
                f"(PARTITION BY e.{row} ORDER BY x.event_timestamp DESC, x.created_timestamp DESC) = 1)"
            )
            joins.append(f"LEFT JOIN {k} ON {k}.{row} = e.{row}")
            select += [f"{k}.{ident(vp.columns[f])}" for f in vp.features]
        else:
            joins.append(f"ASOF LEFT JOIN {h} ON {' AND '.join(match)} AND e.{ts} >= {h}.event_timestamp")
            for f in vp.features:
                val = f"{h}.{ident(f)}"
                if vp.ttl is not None:
                    val = f"CASE WHEN {h}.event_timestamp >= e.{ts} - to_microseconds({micros(vp.ttl)}) THEN {val} END"
                select.append(f"{val} AS {ident(vp.columns[f])}")
    return f"WITH {', '.join(ctes)}\nSELECT {', '.join(select)}\nFROM e\n{chr(10).join(joins)}\nORDER BY e.{row}"


def run_plan(engine: DuckDBEngine, plan: RetrievalPlan, ent: EntityInput) -> pa.RecordBatchReader:
    """Execute ``plan`` for the entity rows; batches stream out in entity-row order."""
    cur = engine.cursor()
    try:
        cur.register("__entities", ent.table)
        sql = build_sql(engine, cur, plan, ent)
        reader = cur.sql(sql).to_arrow_reader(BATCH_ROWS)
    except duckdb.InvalidInputException as e:  # e.g. the exact sums' error(): a value out of range
        cur.close()
        raise InputError(str(e).removeprefix("Invalid Input Error: ")) from None
    except BaseException:
        cur.close()
        raise

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from reader
        except duckdb.InvalidInputException as e:
            raise InputError(str(e).removeprefix("Invalid Input Error: ")) from None
        finally:
            cur.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches())


def sql_for(engine: DuckDBEngine, plan: RetrievalPlan, ent: EntityInput) -> str:
    """The query ``run_plan`` would run (for snapshots and debugging)."""
    with engine.cursor() as cur:
        cur.register("__entities", ent.table)
        return build_sql(engine, cur, plan, ent)

