"""Writing Parquet files that readers may be scanning at the same moment."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["write_atomic"]


def write_atomic(table: pa.Table, target: Path) -> None:
    """``table`` to ``target`` through a hidden temporary file in the same folder and a
    rename, so a reader (or a crash) never sees half a file, and an existing file of that
    name is replaced whole."""
    tmp = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, target)
