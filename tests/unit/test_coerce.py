"""Coercion by declared type (``types.to_array``, ``coerce_value``, ``coerce_columns``).

A brute-force reference written from the rules (lossless conversions only;
bools are never numbers; numbers are never strings) is compared with the
Arrow-based implementation by hypothesis.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver import types
from quiver.errors import InputError

INTS = {"Int32": (-(2**31), 2**31 - 1), "Int64": (-(2**63), 2**63 - 1)}


class Bad(Exception):
    pass


def reference(v: Any, t: types.ValueType) -> Any:
    """The rules, one value at a time."""
    if v is None:
        return None
    if t.element is not None:
        if not isinstance(v, list):
            raise Bad
        return [reference(x, t.element) for x in v]
    if isinstance(v, bool):
        if t.name == "Bool":
            return v
        raise Bad
    if t.name in INTS:
        lo, hi = INTS[t.name]
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, int) and lo <= v <= hi:
            return v
        raise Bad
    if t.name in ("Float64", "Float32"):
        if isinstance(v, int | float):
            return float(v)
        raise Bad
    if t.name == "String":
        if isinstance(v, str):
            return v
        raise Bad
    raise Bad


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**31) - 5, max_value=2**31 + 5),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.integers(-1000, 1000).map(float),
    st.text(max_size=5),
)
TARGETS = [types.Int32, types.Int64, types.Float64, types.String]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b) and type(a) is type(b)


@settings(max_examples=300, deadline=None)
@given(st.lists(scalars, max_size=6), st.sampled_from(TARGETS))
def test_lists_convert_exactly_when_the_reference_does(values: list[Any], t: types.ValueType) -> None:
    try:
        want = [reference(v, t) for v in values]
    except Bad:
        with pytest.raises(InputError, match="field 'f'"):
            types.to_array(values, t, "f")
        return
    got = types.to_array(values, t, "f")
    assert got.type == t.arrow
    assert all(_same(a, b) for a, b in zip(got.to_pylist(), want, strict=True)), (got.to_pylist(), want)


@settings(max_examples=300, deadline=None)
@given(scalars, st.sampled_from(TARGETS))
def test_one_value_matches_the_reference(v: Any, t: types.ValueType) -> None:
    try:
        want = reference(v, t)
    except Bad:
        with pytest.raises(InputError, match="'k'"):
            types.coerce_value(v, t, "k")
        return
    assert _same(types.coerce_value(v, t, "k"), want)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.lists(st.one_of(st.none(), st.integers(-100, 100)), max_size=3)), max_size=5))
def test_arrays_convert_element_by_element(values: list[Any]) -> None:
    t = types.Array(types.Float64)
    got = types.to_array(values, t, "f")
    assert got.type == pa.list_(pa.float64())
    assert got.to_pylist() == [reference(v, t) for v in values]


def test_an_integer_pushed_to_a_float_feature_is_a_float() -> None:
    arr = types.to_array([1, 2, None], types.Float64, "credit_limit")
    assert arr.type == pa.float64() and arr.to_pylist() == [1.0, 2.0, None]
    assert isinstance(types.coerce_value(3, types.Float64, "x"), float)


def test_an_int32_key_from_json_numbers() -> None:
    assert types.to_array([7, 8.0], types.Int32, "store_id").type == pa.int32()
    assert types.coerce_value(7.0, types.Int32, "store_id") == 7


@pytest.mark.parametrize(
    ("values", "t", "fragment"),
    [
        (["abc"], types.Int64, "'abc' (str)"),
        ([1.5], types.Int64, "1.5 (float)"),
        ([True], types.Int64, "True (bool)"),
        ([2**31], types.Int32, "between -2**31 and 2**31-1"),
        ([1], types.String, "1 (int)"),
        ([1], types.Bool, "true or false"),
        ([[1, "a"]], types.Array(types.Float64), "'a' (str)"),
        ([3], types.Array(types.Float64), "send a list"),
        (["not a time"], types.UnixTimestamp, "timestamp"),
    ],
)
def test_impossible_coercions_name_the_field_and_the_value(values: list[Any], t: types.ValueType, fragment: str) -> None:
    with pytest.raises(InputError) as e:
        types.to_array(values, t, "the_field")
    assert "'the_field'" in str(e.value) and fragment in str(e.value)
    assert isinstance(e.value, ValueError)


def test_not_a_list() -> None:
    with pytest.raises(InputError, match="expected a list"):
        types.to_array("abc", types.String, "f")


def test_arrow_columns_cast_losslessly_or_fail() -> None:
    assert types.to_array(pa.array([1, 2], pa.int64()), types.Int32, "k").type == pa.int32()
    assert types.to_array(pa.chunked_array([[1], [2]]), types.Float64, "k").type == pa.float64()
    with pytest.raises(InputError, match="'k' is Int32"):
        types.to_array(pa.array([2**40]), types.Int32, "k")
    with pytest.raises(InputError, match="'k' is Int64: cannot use 2.5"):
        types.to_array(pa.array([2.5]), types.Int64, "k")
    with pytest.raises(InputError, match="'k' is Float64: cannot use 'x'"):
        types.to_array(pa.array(["x"]), types.Float64, "k")
    assert types.to_array(pa.nulls(2), types.String, "k").type == pa.string()


def test_timestamps_from_iso_strings_epoch_seconds_and_datetimes() -> None:
    want = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    vals = ["2026-01-02T03:04:05Z", "2026-01-02T04:04:05+01:00", want.timestamp(), int(want.timestamp()),
            datetime(2026, 1, 2, 3, 4, 5), datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))]
    for v in vals:
        got = types.to_array([v], types.UnixTimestamp, "event_timestamp")
        assert got.type == types.TIMESTAMP and got[0].as_py() == want, v


def test_coerce_columns_casts_only_declared_columns() -> None:
    t = pa.table({"amount": [1, 2], "note": [1, 2], "user_id": [1, 2]})
    out = types.coerce_columns(t, {"amount": types.Float64, "user_id": types.Int32})
    assert out.schema.field("amount").type == pa.float64()
    assert out.schema.field("user_id").type == pa.int32()
    assert out.schema.field("note").type == pa.int64()
    with pytest.raises(InputError, match="'note'"):
        types.coerce_columns(pa.table({"note": ["x"]}), {"note": types.Float64})
