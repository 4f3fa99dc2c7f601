"""Feature value types and their Arrow equivalents.

A ``ValueType`` is a small frozen value: ``types.Float64``, ``types.Array(types.Int64)``.
Its ``name`` (``"Float64"``, ``"Array(Int64)"``) is what the registry stores, and
``from_name`` reads it back. ``arrow`` gives the column type every backend uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from quiver.errors import InputError, UnknownTypeError, closest

__all__ = [
    "Array",
    "Bool",
    "Bytes",
    "Float32",
    "Float64",
    "Int32",
    "Int64",
    "PRIMITIVES",
    "String",
    "UnixTimestamp",
    "ValueType",
    "from_arrow",
    "from_name",
]

TIMESTAMP = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True, slots=True)
class ValueType:
    """A feature's declared type; ``element`` is set for arrays."""

    name: str
    element: ValueType | None = None

    @property
    def arrow(self) -> pa.DataType:
        if self.element is not None:
            return pa.list_(self.element.arrow)
        return _ARROW[self.name]

    @property
    def is_numeric(self) -> bool:
        return self.name in ("Int32", "Int64", "Float32", "Float64")

    def __repr__(self) -> str:
        return f"types.{self.name}"


Int32 = ValueType("Int32")
Int64 = ValueType("Int64")
Float32 = ValueType("Float32")
Float64 = ValueType("Float64")
String = ValueType("String")
Bool = ValueType("Bool")
Bytes = ValueType("Bytes")
UnixTimestamp = ValueType("UnixTimestamp")

PRIMITIVES: dict[str, ValueType] = {
    t.name: t for t in (Int32, Int64, Float32, Float64, String, Bool, Bytes, UnixTimestamp)
}
_ARROW: dict[str, pa.DataType] = {
    "Int32": pa.int32(),
    "Int64": pa.int64(),
    "Float32": pa.float32(),
    "Float64": pa.float64(),
    "String": pa.string(),
    "Bool": pa.bool_(),
    "Bytes": pa.binary(),
    "UnixTimestamp": TIMESTAMP,
}


def Array(element: ValueType) -> ValueType:  # noqa: N802 - reads like a type
    """An array of a primitive type: ``Array(Int64)``."""
    if not isinstance(element, ValueType) or element.element is not None:
        raise UnknownTypeError(f"Array() takes a primitive type such as types.Int64, got {element!r}")
    return ValueType(f"Array({element.name})", element)


_ARRAY_RE = re.compile(r"^Array\((\w+)\)$")


def from_name(name: str) -> ValueType:
    """Parse a stored type name; unknown names raise ``UnknownTypeError``."""
    if name in PRIMITIVES:
        return PRIMITIVES[name]
    m = _ARRAY_RE.match(name)
    if m and m.group(1) in PRIMITIVES:
        return Array(PRIMITIVES[m.group(1)])
    known = list(PRIMITIVES) + [f"Array({p})" for p in PRIMITIVES]
    raise UnknownTypeError(f"unknown dtype {name!r}.{closest(name, known)} Known: {', '.join(PRIMITIVES)} and Array(...) of each")


def coerce(value: Any) -> ValueType:
    """Accept a ValueType or its name."""
    if isinstance(value, ValueType):
        return value
    if isinstance(value, str):
        return from_name(value)
    raise UnknownTypeError(f"unknown dtype {value!r}: use one of quiver.types ({', '.join(PRIMITIVES)}, Array(...))")


def from_arrow(t: pa.DataType) -> ValueType | None:
    """The quiver type closest to an Arrow type, or None when there is none."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = from_arrow(t.value_type)
        return Array(inner) if inner else None
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return UnixTimestamp
    if pa.types.is_boolean(t):
        return Bool
    if pa.types.is_integer(t):
        return Int32 if t.bit_width <= 32 and pa.types.is_signed_integer(t) else Int64
    if pa.types.is_float32(t) or pa.types.is_float16(t):
        return Float32
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return Float64
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return String
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return Bytes
    return None


# -- coercion by declared type --------------------------------------------------------
# Values arrive as JSON numbers, strings and lists (HTTP, push) or as Arrow columns of
# whatever type a file had. Each is turned into the declared type once, at the edge,
# so an integer pushed to a Float64 feature is stored as a float and an Int32 key sent
# as a JSON number finds its row. What cannot be converted without loss is an error
# that names the field.


def to_array(values: Any, dtype: ValueType, field: str) -> pa.Array | pa.ChunkedArray:
    """``values`` (a Python sequence, an Arrow array or column, a pandas Series) as
    an Arrow array of ``dtype``; raises ``InputError`` naming ``field``."""
    if isinstance(values, pa.ChunkedArray):
        return pa.chunked_array([_cast(c, dtype, field) for c in values.chunks], type=dtype.arrow)
    if isinstance(values, pa.Array):
        return _cast(values, dtype, field)
    if isinstance(values, str | bytes | dict) or not hasattr(values, "__len__"):
        raise InputError(f"field {field!r}: expected a list of values, got {type(values).__name__} {values!r:.80}")
    try:
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        arr = _mixed_numbers(values, dtype, field)
    if _is_number(arr.type) and dtype.name != "Bool" and any(v is True or v is False for v in values):
        raise InputError(_bad_value(values, dtype, field))  # Arrow reads [1, True] as numbers; we do not
    return _cast(arr, dtype, field, values)


def _mixed_numbers(values: Any, dtype: ValueType, field: str) -> pa.Array:
    """Big integers mixed with floats (Arrow will not infer one type for them): the slow path."""
    try:
        if dtype.name in ("Float64", "Float32") and not any(isinstance(v, bool | str) for v in values):
            return pa.array([float(v) if isinstance(v, int) else v for v in values], type=pa.float64())
        if dtype.name in _INT_RANGE:
            ints = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
            return pa.array(ints, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError):
        pass
    raise InputError(_bad_value(values, dtype, field))


def coerce_value(value: Any, dtype: ValueType, field: str) -> Any:
    """One value in ``dtype``'s Python form (``3`` for Float64 is ``3.0``)."""
    if value is None:
        return None
    t = type(value)
    if t is int and dtype.name in ("Int64", "Int32") and -(2**31) <= value < 2**31:
        return value  # the common case, without a round trip through Arrow
    if t is float and dtype.name in ("Float64", "Float32"):
        return value
    if t is str and dtype.name == "String":
        return value
    return to_array([value], dtype, field)[0].as_py()


def coerce_columns(table: pa.Table, dtypes: dict[str, ValueType]) -> pa.Table:
    """Cast the columns of ``table`` that ``dtypes`` names to their declared types."""
    for i, name in enumerate(table.column_names):
        dtype = dtypes.get(name)
        if dtype is not None and table.schema.field(i).type != dtype.arrow:
            table = table.set_column(i, name, to_array(table.column(i), dtype, name))
    return table


_INT_RANGE = {"Int32": (-(2**31), 2**31 - 1), "Int64": (-(2**63), 2**63 - 1)}


def _cast(arr: pa.Array, dtype: ValueType, field: str, raw: Any = None) -> pa.Array:
    """The one conversion table: source Arrow type -> declared type, lossless only."""
    target = dtype.arrow
    s = arr.type
    if s == target:
        return arr
    if pa.types.is_null(s):
        return pa.nulls(len(arr), target)
    if dtype.element is not None:
        if not (pa.types.is_list(s) or pa.types.is_large_list(s)):
            raise InputError(_bad_type(arr, dtype, field, raw))
        values = _cast(arr.values, dtype.element, field)
        return pa.ListArray.from_arrays(arr.offsets.cast(pa.int32()), values, mask=arr.is_null())
    ok = {
        "Int32": _is_number, "Int64": _is_number, "Float32": _is_number, "Float64": _is_number,
        "String": _is_string, "Bytes": lambda t: _is_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t),
        "Bool": pa.types.is_boolean,
        "UnixTimestamp": lambda t: _is_number(t) or _is_string(t) or pa.types.is_timestamp(t) or pa.types.is_date(t),
    }[dtype.name]
    if not ok(s):
        raise InputError(_bad_type(arr, dtype, field, raw))
    try:
        if dtype.name == "UnixTimestamp":
            return _to_timestamp(arr, field)
        # to a float, rounding is the conversion (an int above 2**53, a double to Float32)
        return arr.cast(target, safe=not pa.types.is_floating(target))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OverflowError):
        raise InputError(_bad_value(raw if raw is not None else arr.to_pylist(), dtype, field)) from None


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _to_timestamp(arr: pa.Array, field: str) -> pa.Array:
    """Timestamps, dates, ISO strings, or epoch seconds -> ``timestamp[us, tz=UTC]``."""
    import pyarrow.compute as pc

    from quiver.timeutil import to_timestamp_array

    if _is_number(arr.type):
        us = pc.multiply(arr.cast(pa.float64()), 1_000_000.0)
        return pc.round(us).cast(pa.int64()).cast(TIMESTAMP)
    if _is_string(arr.type):
        try:
            return pc.cast(arr, TIMESTAMP)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            from quiver.timeutil import to_utc

            return pa.array([None if v is None else to_utc(v, f"field {field!r}") for v in arr.to_pylist()], TIMESTAMP)
    return to_timestamp_array(arr, field)


def _bad_type(arr: pa.Array, dtype: ValueType, field: str, raw: Any) -> str:
    if raw is None and len(arr) <= 10_000:
        raw = arr.to_pylist()
    if raw is not None:
        return _bad_value(raw, dtype, field)
    return f"field {field!r} is {dtype.name}: cannot convert a column of {arr.type} to it; fix the data or the declared type"


def _bad_value(values: Any, dtype: ValueType, field: str) -> str:
    """Name the first value that does not convert (the error path only)."""
    if dtype.element is not None:
        for v in values:
            if isinstance(v, list | tuple):
                msg = _bad_value(v, dtype.element, field)
                if "cannot use" in msg:
                    return msg.replace(f"is {dtype.element.name}", f"is {dtype.name}", 1)
            elif v is not None:
                return f"field {field!r} is {dtype.name}: cannot use {v!r} ({type(v).__name__}); send a list"
    for v in values:
        if v is None:
            continue
        ok = True
        if isinstance(v, bool):
            ok = dtype.name == "Bool"
        elif isinstance(v, int):
            lo, hi = _INT_RANGE.get(dtype.name, (-(2**63), 2**63 - 1))
            ok = (dtype.is_numeric or dtype.name == "UnixTimestamp") and lo <= v <= hi
        elif isinstance(v, float):
            lo, hi = _INT_RANGE.get(dtype.name, (-(2**63), 2**63 - 1))
            ok = dtype.name in ("Float64", "Float32", "UnixTimestamp") or (
                dtype.is_numeric and v.is_integer() and lo <= v <= hi)
        elif isinstance(v, str):
            ok = dtype.name in ("String", "Bytes", "UnixTimestamp")
        if not ok:
            return (f"field {field!r} is {dtype.name}: cannot use {v!r} ({type(v).__name__}); "
                    f"send {_EXPECT.get(dtype.name, 'a list of ' + (dtype.element.name if dtype.element else '?'))}")
    return f"field {field!r} is {dtype.name}: its values cannot be converted; send {_EXPECT.get(dtype.name, 'lists')}"


_EXPECT = {
    "Int32": "an integer between -2**31 and 2**31-1",
    "Int64": "an integer",
    "Float32": "a number",
    "Float64": "a number",
    "String": "a string",
    "Bool": "true or false",
    "Bytes": "a string",
    "UnixTimestamp": "an ISO-8601 string or epoch seconds",
}
