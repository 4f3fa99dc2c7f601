"""The in-process push source: whatever rows a caller hands over, as one Arrow table.

``store.push`` and ``POST /v1/push`` accept a list of dicts, a dict of lists,
a pandas or polars DataFrame, or an Arrow table; this turns each into a
``pa.Table`` so the stream path sees the same thing Kafka messages become.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from quiver.errors import InputError

__all__ = ["to_table"]


def to_table(rows: Any) -> pa.Table:
    """Rows in any of the accepted shapes -> an Arrow table."""
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if isinstance(rows, dict):
        try:
            return pa.table({k: list(v) if not isinstance(v, list | pa.Array) else v for k, v in rows.items()})
        except (TypeError, pa.ArrowInvalid) as e:
            raise InputError(f"push: the dict of columns cannot be read ({e}); give equal-length lists") from None
    if isinstance(rows, list | tuple):
        if not all(isinstance(r, dict) for r in rows):
            raise InputError("push: a list of rows must hold dicts (column -> value)")
        try:
            return pa.Table.from_pylist(list(rows))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise InputError(f"push: the rows have mixed types in a column ({e})") from None
    if hasattr(rows, "to_arrow") and not hasattr(rows, "iloc"):  # polars
        return rows.to_arrow()
    if hasattr(rows, "iloc"):  # pandas
        return pa.Table.from_pandas(rows, preserve_index=False)
    raise InputError(f"push: cannot read rows of type {type(rows).__name__}; give a list of dicts, a dict of "
                     "lists, a pandas/polars DataFrame or a pyarrow Table")
