"""Spool files of the served-vector log -> Parquet.

A spool file (written by ``served_log.ServedLog``) is the length of a header,
the header ``(SPOOL_MAGIC, 3, {number: Arrow schema})`` and one marshal list
of records, one per logged response: ``(number, request time in epoch µs,
column...)``, the columns (lists, one value per entity row) in the order of
the schema's fields after the request time; all read back in one
``marshal.loads``.
Each becomes one Parquet file per schema under ``date=YYYY-MM-DD/`` (the day
of its first request), named after the spool file, so compacting a file twice
(two readers at once, or a crash between writing the Parquet file and
deleting the spool) writes the same file again rather than a duplicate.

Per schema each column's lists are chained and converted in one Arrow call, so
100,000 logged responses take well under a second. Run as
``python -m quiver.monitoring.served_compact ROOT`` it is the child process
the logger starts in long-running servers (at the lowest CPU priority).
"""

from __future__ import annotations

import gc
import logging
import marshal
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from quiver.monitoring.served_log import REQUEST_TIME, SPOOL_HEAD, SPOOL_MAGIC, SPOOL_VERSION, TS, spool_dir
from quiver.offline.parquet import write_atomic

__all__ = ["compact", "read_spool"]

log = logging.getLogger("quiver.monitoring")


def read_spool(data: bytes) -> dict[int, pa.Table]:
    """One spool file's bytes -> a table per schema number."""
    (hl,) = SPOOL_HEAD.unpack_from(data)
    header = marshal.loads(data[SPOOL_HEAD.size:SPOOL_HEAD.size + hl])
    if not (isinstance(header, tuple) and header[:1] == (SPOOL_MAGIC,)):
        raise ValueError("not a served-log spool file (no header)")
    if header[1] != SPOOL_VERSION:
        raise ValueError(f"a served-log spool file of format {header[1]}; this version reads {SPOOL_VERSION}")
    schemas = {no: pa.ipc.read_schema(pa.py_buffer(raw)) for no, raw in header[2].items()}
    with _no_gc():  # a million small lists: the cyclic GC would rescan them again and again
        recs = marshal.loads(memoryview(data)[SPOOL_HEAD.size + hl:])
        groups: dict[int, list[tuple[Any, ...]]] = {}
        for rec in recs:
            groups.setdefault(rec[0], []).append(rec)
        return {no: _table(schemas[no], group) for no, group in groups.items()}


def _table(schema: pa.Schema, recs: list[tuple[Any, ...]]) -> pa.Table:
    """Records ``(number, time, column...)`` of one schema -> a table: each column's
    lists gathered and chained in C and converted in one Arrow call."""
    fields = list(schema)[1:]
    times = np.fromiter(map(itemgetter(1), recs), dtype=np.int64, count=len(recs))
    if fields:
        lengths = np.fromiter(map(len, map(itemgetter(2), recs)), dtype=np.int64, count=len(recs))
        if int(lengths.sum()) != len(recs):  # responses of several entity rows: one request time per row
            times = np.repeat(times, lengths)
    arrays = [pa.array(times, type=pa.int64()).cast(TS)]
    for i, f in enumerate(fields, start=2):
        arrays.append(pa.array(list(chain.from_iterable(map(itemgetter(i), recs))), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


@contextmanager
def _no_gc() -> Iterator[None]:
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def compact(root: Path | str) -> int:
    """Turn every finished spool file under ``root`` into Parquet; returns the rows written."""
    root = Path(root)
    d = spool_dir(root)
    if not d.is_dir():
        return 0
    rows = 0
    for spool in sorted(d.glob("*.rec")):
        try:
            data = spool.read_bytes()
        except FileNotFoundError:
            continue  # another reader compacted it
        try:
            tables = read_spool(data)
        except Exception:
            log.exception("served-vector log: %s cannot be read; moved aside as .bad", spool.name)
            os.replace(spool, spool.with_suffix(".bad"))
            continue
        for no, table in tables.items():
            if not table.num_rows:
                continue
            first = table.column(REQUEST_TIME)[0].value
            day = datetime.fromtimestamp(first / 1e6, UTC).strftime("%Y-%m-%d")
            out = root / f"date={day}"
            out.mkdir(parents=True, exist_ok=True)
            write_atomic(table, out / f"{spool.stem}-{no}.parquet")
            rows += table.num_rows
        try:
            spool.unlink()
        except FileNotFoundError:
            pass
    return rows


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if hasattr(os, "nice"):
        os.nice(19)  # serving comes first: this only gets a core nobody else wants
    logging.basicConfig(level=logging.WARNING)
    for root in args:
        compact(root)


if __name__ == "__main__":
    main()
