"""Training sets: entity rows in, a point-in-time correct ``RetrievalJob`` out.

This layer turns whatever the user hands over (pandas, polars, Arrow, a
Parquet path, an SQL query, or nothing but a time range) into one Arrow table
of entity rows with a UTC ``event_timestamp`` and a row number, compiles the
request into an engine-neutral plan, and leaves the join to the engine.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from quiver.definitions import FeatureView
from quiver.errors import InputError, UnsupportedError
from quiver.plan.features import FeatureSelection
from quiver.plan.retrieval import ENTITY_TS, ROW_ID, EntityInput, build_plan, row_numbers
from quiver.retrieval.job import RetrievalJob
from quiver.timeutil import TIMESTAMP, to_timestamp_array, to_utc

if TYPE_CHECKING:
    from quiver.protocols import OfflineEngine
    from quiver.registry import Registry

__all__ = ["entity_table", "historical_job", "prepare_entities"]

BATCH_ROWS = 128 * 1024
_SQL_START = ("select", "with", "from", "(", "values", "table")


def entity_table(entity_df: Any, engine: OfflineEngine) -> pa.Table:
    """pandas, polars, Arrow, a Parquet path or an SQL query -> an Arrow table."""
    if isinstance(entity_df, pa.Table):
        return entity_df
    if isinstance(entity_df, pa.RecordBatch):
        return pa.Table.from_batches([entity_df])
    if isinstance(entity_df, pa.RecordBatchReader):
        return entity_df.read_all()
    if isinstance(entity_df, Path) or isinstance(entity_df, str):
        text = str(entity_df).strip()
        if isinstance(entity_df, str) and text.lower().startswith(_SQL_START) and not os.path.exists(text):
            return engine.query(text)
        if os.path.exists(text):
            try:
                return pq.ParquetFile(text).read() if os.path.isfile(text) else pq.read_table(text)
            except (pa.ArrowInvalid, OSError) as e:
                raise InputError(f"entity rows at {text!r} are not readable Parquet: {e}") from None
        raise InputError(f"entity rows {text!r}: no such Parquet file or folder, and not an SQL query (SELECT ...)")
    module = type(entity_df).__module__.split(".")[0]
    if module == "pandas":
        return pa.Table.from_pandas(entity_df, preserve_index=False)
    if module == "polars":
        return entity_df.to_arrow()
    raise InputError(
        f"entity rows of type {type(entity_df).__name__} are not supported; pass a pandas or polars DataFrame, "
        "a pyarrow Table, a Parquet path or an SQL query"
    )


def _utc(col: pa.ChunkedArray) -> pa.ChunkedArray:
    t = col.type
    if pa.types.is_timestamp(t) and t.unit == "ns":  # pandas: drop the nanoseconds before the checked cast
        col = col.cast(pa.timestamp("us", tz=t.tz), safe=False)
    return to_timestamp_array(col, ENTITY_TS)


def prepare_entities(table: pa.Table) -> EntityInput:
    """Check the timestamp column, normalise it to UTC microseconds, number the rows."""
    if ENTITY_TS not in table.column_names:
        stamps = [f.name for f in table.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
        hint = f" It has timestamp columns {stamps}: rename the one that holds each row's time." if stamps else ""
        raise InputError(
            f"the entity rows have no {ENTITY_TS!r} column (the time at which each row's features are wanted).{hint}"
            f" Their columns: {', '.join(table.column_names)}"
        )
    if ROW_ID in table.column_names:
        raise InputError(f"the entity rows have a column named {ROW_ID!r}, which quiver reserves; rename it")
    ts = _utc(table[ENTITY_TS])
    if ts.null_count:
        raise InputError(f"{ts.null_count} entity rows have no {ENTITY_TS!r}; every row needs a time")
    table = table.set_column(table.schema.get_field_index(ENTITY_TS), ENTITY_TS, ts)
    table = table.append_column(ROW_ID, row_numbers(table.num_rows))
    # engines scan Arrow in parallel by batch: one 1M-row chunk (pyarrow's default row
    # group) would be read by one thread. Slicing is zero-copy.
    return EntityInput(pa.Table.from_batches(table.to_batches(max_chunksize=BATCH_ROWS), table.schema))


def historical_job(
    engine: OfflineEngine,
    registry: Registry,
    selection: FeatureSelection,
    entity_df: Any = None,
    *,
    full_feature_names: bool = False,
    start: Any = None,
    end: Any = None,
    as_known: bool = False,
    persist: Any = None,
) -> RetrievalJob:
    """Build the plan now (so bad input fails at once); run it when the job is read."""
    if not engine.capabilities.historical_retrieval:
        raise UnsupportedError(f"the offline engine {type(engine).__name__} cannot build training sets")
    if entity_df is None:
        table = _timeline(engine, registry, selection, start, end)
    else:
        if start is not None or end is not None:
            raise InputError("start/end are for a training set without entity rows; with entity_df, leave them out")
        table = entity_table(entity_df, engine)
    ent = prepare_entities(table)
    plan = build_plan(
        selection, [c for c in ent.table.column_names if c != ROW_ID], registry.get_view,
        full_feature_names=full_feature_names, as_known=as_known,
    )
    if any(v.is_aggregate for v in plan.views) and not engine.capabilities.window_aggregation:
        raise UnsupportedError(f"the offline engine {type(engine).__name__} cannot compute window aggregations")
    meta = {
        "features": plan.refs,
        "feature_service": selection.service,
        "full_feature_names": full_feature_names,
        "as_known": as_known,
        "entity_rows": ent.table.num_rows,
        "start": None if start is None else to_utc(start, "start").isoformat(),
        "end": None if end is None else to_utc(end, "end").isoformat(),
    }
    job = RetrievalJob(plan, lambda: engine.get_historical_features(plan, ent), persist, meta)
    job.entities = ent  # type: ignore[attr-defined]
    return job


def _timeline(engine: OfflineEngine, registry: Registry, selection: FeatureSelection, start: Any, end: Any) -> pa.Table:
    """Entity rows for a training set without an entity frame: every key and event time in the range."""
    if start is None or end is None:
        raise InputError("without entity rows, give start= and end= (the range of event times to return)")
    s, e = to_utc(start, "start"), to_utc(end, "end")
    if e <= s:
        raise InputError(f"end ({e.isoformat()}) must be after start ({s.isoformat()})")
    views: list[FeatureView] = [v.view for v in selection.stored if isinstance(v.view, FeatureView)]
    for od in selection.on_demand:
        for ref in od.view.input_refs():  # type: ignore[union-attr]
            v = registry.get_view(ref.split(":")[0])
            if isinstance(v, FeatureView):
                views.append(v)
    if not views:
        raise InputError("without entity rows, ask for at least one stored feature (its rows give the entity rows)")
    keys = {tuple(v.join_keys) for v in views}
    if len(keys) > 1:
        raise InputError(
            f"without entity rows all views must share their join keys; these have {sorted(keys)}: "
            "pass an entity frame with every key instead"
        )
    table = engine.entity_timeline(list({v.name: v for v in views}.values()), s, e)
    return table.set_column(table.schema.get_field_index(ENTITY_TS), ENTITY_TS, table[ENTITY_TS].cast(TIMESTAMP))


