"""Feature value types: names the registry stores, their Arrow types, and errors."""

from __future__ import annotations

import pyarrow as pa
import pytest

from quiver import types
from quiver.errors import DefinitionError, UnknownTypeError

ALL = [*types.PRIMITIVES.values(), *(types.Array(t) for t in types.PRIMITIVES.values())]


def test_the_contract_types_exist() -> None:
    assert set(types.PRIMITIVES) == {"Int32", "Int64", "Float32", "Float64", "String", "Bool", "Bytes", "UnixTimestamp"}


@pytest.mark.parametrize("t", ALL, ids=lambda t: t.name)
def test_every_type_round_trips_through_its_name_and_arrow(t: types.ValueType) -> None:
    assert types.from_name(t.name) == t
    assert types.coerce(t.name) is not None and types.coerce(t) is t
    assert types.from_arrow(t.arrow) == t


def test_arrow_types() -> None:
    assert types.Float64.arrow == pa.float64()
    assert types.UnixTimestamp.arrow == pa.timestamp("us", tz="UTC")
    assert types.Array(types.Int64).arrow == pa.list_(pa.int64())
    assert types.from_arrow(pa.int8()) == types.Int32 and types.from_arrow(pa.uint64()) == types.Int64
    assert types.from_arrow(pa.large_string()) == types.String and types.from_arrow(pa.date32()) == types.UnixTimestamp
    assert types.from_arrow(pa.struct([("a", pa.int64())])) is None


@pytest.mark.parametrize("bad", ["Flaot64", "Array(Array(Int64))", "Array(Nope)", "", "int"])
def test_unknown_names_say_what_is_known(bad: str) -> None:
    with pytest.raises(UnknownTypeError) as info:
        types.from_name(bad)
    assert isinstance(info.value, DefinitionError) and "Float64" in str(info.value)


def test_unknown_names_suggest_the_closest() -> None:
    with pytest.raises(UnknownTypeError, match="Did you mean 'Float64'"):
        types.from_name("Flaot64")


def test_arrays_hold_primitives_only() -> None:
    with pytest.raises(UnknownTypeError, match="primitive"):
        types.Array(types.Array(types.Int64))
    with pytest.raises(UnknownTypeError):
        types.coerce(3.5)
