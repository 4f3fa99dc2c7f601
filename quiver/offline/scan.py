"""What the DuckDB engine reads for a view: its files, their fingerprint, and
the SQL that projects them to the view's column names.

A view's rows live in its batch source's Parquet files and, for a
``KafkaSource``/``PushSource``, in the event files that pushes and stream
workers append under ``{offline}/events/{source}/date=YYYY-MM-DD/``. Each
group of files is projected with its own source's column names (a Kafka
source and its batch source may name the timestamp differently) and the two
are unioned by name, so everything above this module sees one table with the
view's names: join keys, features, ``event_timestamp``, ``created_timestamp``.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from quiver import types
from quiver.definitions import FeatureView, FileSource, Source
from quiver.errors import InputError

__all__ = [
    "ViewFiles",
    "duck_type",
    "empty_projection",
    "event_files",
    "fingerprint",
    "ident",
    "lit",
    "projection_sql",
    "view_columns",
]

LAYOUT_VERSION = 1  # bump when the compacted layout changes: old histories become stale


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def lit(value: str) -> str:
    """A quoted SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def file_list(paths: Sequence[str | Path]) -> str:
    return "[" + ", ".join(lit(str(p)) for p in paths) + "]"


_DUCK = {
    "Int32": "INTEGER",
    "Int64": "BIGINT",
    "Float32": "FLOAT",
    "Float64": "DOUBLE",
    "String": "VARCHAR",
    "Bool": "BOOLEAN",
    "Bytes": "BLOB",
    "UnixTimestamp": "TIMESTAMPTZ",
}


def duck_type(t: types.ValueType) -> str:
    if t.element is not None:
        return duck_type(t.element) + "[]"
    return _DUCK[t.name]


def event_files(root: Path, source: Source) -> list[str]:
    """The Parquet files ``write_events`` appended for ``source`` (never a temp file)."""
    d = root / "events" / source.name
    if not d.is_dir():
        return []
    return sorted(glob.glob(os.path.join(str(d), "date=*", "*.parquet")))


@dataclass(frozen=True)
class ViewFiles:
    """The files behind one view, split by which source's column names they use."""

    batch: FileSource | None
    batch_files: list[str]
    stream: Source | None
    stream_files: list[str]

    @property
    def all(self) -> list[str]:
        return self.batch_files + self.stream_files

    def fingerprint(self, extra: str = "") -> str:
        return fingerprint(self.all, extra)


def fingerprint(paths: Sequence[str], extra: str = "") -> str:
    """Paths, sizes and modification times: any added, removed or rewritten file changes it."""
    h = hashlib.sha256(f"{LAYOUT_VERSION}|{extra}".encode())
    for p in paths:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        h.update(f"|{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def view_columns(view: FeatureView) -> list[str]:
    """The value columns a view's history keeps: features, or the aggregated source columns."""
    if view.is_aggregate:
        return list(dict.fromkeys(a.column for a in view.aggregations))
    return view.feature_names


def _value_types(view: FeatureView) -> dict[str, str]:
    if view.is_aggregate:
        return {c: "DOUBLE" for c in view_columns(view)}
    return {f.name: duck_type(f.dtype) for f in view.features}


def _key_types(view: FeatureView) -> dict[str, str]:
    return {k: duck_type(t) for e in view.entities for k, t in e.dtypes.items()}


def _one_projection(view: FeatureView, source: Source, files: list[str], cast_values: bool) -> str:
    reverse = {feat: col for col, feat in source.field_mapping.items()}
    cols: list[str] = []
    for k in view.join_keys:
        cols.append(f"{ident(reverse.get(k, k))} AS {ident(k)}")
    value_types = _value_types(view)
    for c in view_columns(view):
        src = reverse.get(c, c)
        expr = ident(src)
        if cast_values and not view.is_aggregate:
            expr = f"CAST({expr} AS {value_types[c]})"
        cols.append(f"{expr} AS {ident(c)}")
    ts = f"CAST({ident(source.timestamp_field)} AS TIMESTAMPTZ)"
    cols.append(f"{ts} AS event_timestamp")
    created = source.created_timestamp_column
    cols.append(f"CAST({ident(created)} AS TIMESTAMPTZ) AS created_timestamp" if created else f"{ts} AS created_timestamp")
    union = ", union_by_name=true" if len(files) > 1 else ""  # files written at different times may differ
    return f"SELECT {', '.join(cols)} FROM read_parquet({file_list(files)}{union})"


def empty_projection(view: FeatureView) -> str:
    """A relation with the view's columns and no rows (a push source nobody pushed to yet)."""
    cols = [f"CAST(NULL AS {t}) AS {ident(k)}" for k, t in _key_types(view).items()]
    cols += [f"CAST(NULL AS {t}) AS {ident(c)}" for c, t in _value_types(view).items()]
    cols += ["CAST(NULL AS TIMESTAMPTZ) AS event_timestamp", "CAST(NULL AS TIMESTAMPTZ) AS created_timestamp"]
    return f"SELECT {', '.join(cols)} WHERE false"


def projection_sql(view: FeatureView, files: ViewFiles, cast_values: bool = True) -> str:
    """One SELECT over all of a view's files with the view's column names."""
    parts = []
    if files.batch_files and files.batch is not None:
        parts.append(_one_projection(view, files.batch, files.batch_files, cast_values))
    if files.stream_files and files.stream is not None:
        parts.append(_one_projection(view, files.stream, files.stream_files, cast_values))
    if not parts:
        return empty_projection(view)
    return "\nUNION ALL BY NAME\n".join(parts)


def missing_files_error(source: Source) -> InputError:
    return InputError(f"source {source.name!r}: no Parquet files at {getattr(source, 'path', '?')!r}")
