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

from quiver.errors import UnknownTypeError, closest

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
