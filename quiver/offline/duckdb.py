"""OfflineEngine over DuckDB and Parquet: the embedded default."""

from __future__ import annotations

import glob
import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from quiver.config import RepoConfig
from quiver.definitions import FileSource, Source
from quiver.errors import InputError, UnsupportedError
from quiver.protocols import Capabilities

__all__ = ["DuckDBEngine"]


class DuckDBEngine:
    capabilities = Capabilities(historical_retrieval=True, window_aggregation=True, compacted_history=True)

    def __init__(self, config: RepoConfig) -> None:
        self.config = config
        self.path = config.resolve(config.offline.get("path", "data/offline"))
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = duckdb.connect()
            self._con.execute("SET TimeZone = 'UTC'")
        return self._con

    def files(self, source: Source) -> list[str]:
        """The Parquet files of a file source (a file, a folder or a glob)."""
        if not isinstance(source, FileSource):
            raise UnsupportedError(f"source {source.name!r} has no batch files")
        p = str(self.config.resolve(source.path))
        if os.path.isdir(p):
            found = sorted(glob.glob(os.path.join(p, "**", "*.parquet"), recursive=True))
        elif any(c in p for c in "*?["):
            found = sorted(glob.glob(p, recursive=True))
        else:
            found = [p] if os.path.exists(p) else []
        if not found:
            raise InputError(f"source {source.name!r}: no Parquet files at {source.path!r}")
        return found

    def source_schema(self, source: Source) -> pa.Schema:
        files = self.files(source)
        with self._lock:
            rel = self.con.sql(f"SELECT * FROM read_parquet({files!r}, union_by_name=true) LIMIT 0")
            return rel.to_arrow_table().schema

    def read_source(self, source: Source, start: datetime | None = None, end: datetime | None = None) -> pa.RecordBatchReader:
        files = self.files(source)
        ts = source.timestamp_field
        where = []
        params: list[Any] = []
        if start is not None:
            where.append(f'"{ts}" >= ?')
            params.append(start)
        if end is not None:
            where.append(f'"{ts}" < ?')
            params.append(end)
        q = f"SELECT * FROM read_parquet({files!r}, union_by_name=true)"
        if where:
            q += " WHERE " + " AND ".join(where)
        with self._lock:
            return self.con.execute(q, params).to_arrow_reader()  # type: ignore[no-any-return]

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


_ = Path
