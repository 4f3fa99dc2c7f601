"""Where the monitor reads a view's values: which files, which columns, which SQL.

A view's values are read where the offline store keeps them: its batch
source's files plus the events pushed or streamed into its source (under
``{offline}/events/``), each projected to the view's names. A column missing
from a group of files is left out of the relation and reported by the schema
check, so one bad column never hides the others. Snapshot views are profiled
per feature; aggregate views per input column of their value aggregations
(``amount`` for ``amount_sum_1h``), since their features are computed on read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from quiver.definitions import FeatureView, Source
from quiver.errors import InputError

__all__ = ["ViewData", "view_data", "sql_list", "quote"]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def sql_list(values: list[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "''") + "'" for v in values) + "]"


@dataclass(frozen=True)
class ViewData:
    """The columns of one view as the monitor reads them.

    ``relation`` is a DuckDB FROM-clause (a parenthesised SELECT);
    ``columns`` maps a monitored name (feature or input column) to its column
    in the relation; ``missing`` names expected columns the data lacks.
    """

    view: FeatureView
    relation: str
    timestamp: str
    columns: dict[str, str]
    types: dict[str, pa.DataType]
    expected: dict[str, Any]  # monitored name -> quiver ValueType (None when unknown)
    missing: list[str]
    files: list[str]


def monitored_columns(view: FeatureView) -> dict[str, tuple[str, Any]]:
    """Monitored name -> (column name in the view's terms, expected dtype or None)."""
    if not view.is_aggregate:
        return {f.name: (f.name, f.dtype) for f in view.schema}
    out: dict[str, tuple[str, Any]] = {}
    for a in view.aggregations:
        if a.function in ("count", "count_distinct"):
            continue  # counting ids says nothing about the ids' distribution
        out.setdefault(a.column, (a.column, None))
    return out


def _groups(engine: Any, view: FeatureView) -> list[tuple[Source, list[str]]]:
    """(source, files) pairs holding the view's rows: the batch source's files and,
    when the engine keeps them, the events pushed or streamed into the view's source."""
    vf = getattr(engine, "view_files", None)
    if callable(vf):
        files = vf(view)
        groups = []
        if files.batch is not None and files.batch_files:
            groups.append((files.batch, list(files.batch_files)))
        if files.stream is not None and files.stream_files:
            groups.append((files.stream, list(files.stream_files)))
        return groups
    src = view.source.batch
    return [(src, list(engine.files(src)))] if src is not None else []


def view_data(engine: Any, view: FeatureView) -> ViewData:
    """Resolve the files and columns of ``view``: one relation with the view's
    names (join keys, monitored columns, ``event_timestamp``), columns that a
    source lacks left out and listed in ``missing``."""
    groups = _groups(engine, view)
    if not groups:
        raise InputError(f"feature view {view.name!r} has no data to monitor yet (no source files, no pushed events)")
    wanted = monitored_columns(view)
    con = connection(engine)
    parts, present, all_files = [], None, []
    types: dict[str, pa.DataType] = {}
    try:
        for src, files in groups:
            rel = f"read_parquet({sql_list(files)}, union_by_name=true)"
            schema = con.sql(f"SELECT * FROM {rel} LIMIT 0").to_arrow_table().schema
            names = set(schema.names)
            reverse = {feat: col for col, feat in src.field_mapping.items()}
            cols = [f"{quote(reverse.get(k, k))} AS {quote(k)}" for k in view.join_keys if reverse.get(k, k) in names]
            have = set()
            for n, (col, _) in wanted.items():
                c = reverse.get(col, col)
                if c in names:
                    cols.append(f"{quote(c)} AS {quote(n)}")
                    have.add(n)
                    types.setdefault(n, schema.field(c).type)
            cols.append(f"CAST({quote(src.timestamp_field)} AS TIMESTAMPTZ) AS event_timestamp")
            parts.append(f"SELECT {', '.join(cols)} FROM {rel}")
            present = have if present is None else present & have
            all_files += files
    finally:
        con.close()
    present = present or set()
    relation = "(" + "\nUNION ALL BY NAME\n".join(parts) + ")"
    missing = [n for n in wanted if n not in present]
    return ViewData(view, relation, "event_timestamp", {n: n for n in wanted if n in present},
                    {n: t for n, t in types.items() if n in present},
                    {n: dt for n, (_, dt) in wanted.items()}, missing, all_files)


def connection(engine: Any) -> Any:
    """A DuckDB cursor of the offline engine (its own connection per call, so
    the monitor never contends with the engine's own queries)."""
    con = getattr(engine, "con", None)
    if con is not None and hasattr(con, "cursor"):
        cur = con.cursor()
        cur.execute("SET TimeZone = 'UTC'")
        return cur
    import duckdb  # an engine without DuckDB (Spark): profile its files with an embedded DuckDB

    cur = duckdb.connect()
    cur.execute("SET TimeZone = 'UTC'")
    return cur
