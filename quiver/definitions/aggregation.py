"""Aggregation: a time-window aggregate over a source column.

Named ``{column}_{function}_{window}`` (``amount_sum_10m``) unless given a
name. Evaluated at ``t`` it covers events with ``t - w <= event_time < t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from quiver import types
from quiver.definitions._base import check_name, duration_or_none
from quiver.errors import DefinitionError, UnknownTypeError, closest
from quiver.timeutil import format_window

__all__ = ["FUNCTIONS", "Aggregation"]

FUNCTIONS = ("count", "sum", "mean", "min", "max", "stddev", "last", "count_distinct")
_FIXED_DTYPE = {"count": types.Int64, "count_distinct": types.Int64, "mean": types.Float64, "stddev": types.Float64}


@dataclass(frozen=True, slots=True, init=False)
class Aggregation:
    """``Aggregation("amount", "sum", window=timedelta(minutes=10))``.

    ``dtype`` is the output type; by default Int64 for counts, Float64 for
    mean and stddev, and the input column's type (Float64 when unknown) for
    the others.
    """

    column: str
    function: str
    window: timedelta
    name: str
    dtype: types.ValueType | None

    def __init__(
        self,
        column: str,
        function: str,
        window: timedelta | str,
        name: str | None = None,
        dtype: types.ValueType | str | None = None,
    ) -> None:
        label = f"Aggregation({column!r}, {function!r})"
        if not isinstance(column, str) or not column:
            raise DefinitionError(f"{label}: column must name a source column")
        if not isinstance(function, str) or function not in FUNCTIONS:
            raise DefinitionError(
                f"{label}: unknown aggregation function {function!r}.{closest(str(function), FUNCTIONS)}"
                f" Known: {', '.join(FUNCTIONS)}"
            )
        w = duration_or_none(label, "window", window)
        if w is None:
            raise DefinitionError(f"{label}: window is required, e.g. timedelta(minutes=10)")
        if name is None:
            name = f"{column}_{function}_{format_window(w)}"
        check_name("aggregation", name)
        object.__setattr__(self, "column", column)
        object.__setattr__(self, "function", function)
        object.__setattr__(self, "window", w)
        object.__setattr__(self, "name", name)
        try:
            declared = types.coerce(dtype) if dtype is not None else None
        except UnknownTypeError as e:
            raise UnknownTypeError(f"{label}: {e}") from None
        fixed = _FIXED_DTYPE.get(function)
        if fixed is not None and declared not in (None, fixed):
            raise DefinitionError(f"{label}: {function} always gives {fixed.name}; drop dtype={declared.name}")
        object.__setattr__(self, "dtype", fixed or declared)

    def output_dtype(self, input_dtype: types.ValueType | None = None) -> types.ValueType:
        if self.dtype is not None:
            return self.dtype
        if self.function == "sum" and input_dtype in (types.Int32, types.Int64):
            return types.Int64
        if self.function in ("min", "max", "last") and input_dtype is not None:
            return input_dtype
        return types.Float64

    def to_spec(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "function": self.function,
            "window": self.window.total_seconds(),
            "name": self.name,
            "dtype": self.dtype.name if self.dtype else None,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Aggregation:
        return cls(spec["column"], spec["function"], timedelta(seconds=spec["window"]), spec["name"], spec.get("dtype"))
