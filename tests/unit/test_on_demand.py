"""The on-demand runner: ``transform_arrow`` (training and serving) and ``transform_row``.

Both modes give the same values on the same inputs; request values are coerced
to their declared types before the function sees them; every failure of the
user's function names the view; a view rebuilt from the registry computes the
same values.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver import Entity, FeatureView, Field, FileSource, OnDemandFeatureView, RequestSource, types
from quiver.definitions.on_demand import OnDemandError
from quiver.errors import DefinitionError, InputError

user = Entity(name="user", join_keys=["user_id"])
profile = FeatureView(name="profile", entities=[user], source=FileSource("p.parquet"), ttl=timedelta(days=1),
                      schema=[Field("avg", types.Float64), Field("n", types.Int64)])
req = RequestSource(name="req", schema=[Field("amount", types.Float64)])


def ratio_py(row):  # noqa: ANN001, ANN201 - a user function as users write them
    if row["amount"] is None or not row["avg"]:
        return {"ratio": None, "big": None}
    return {"ratio": row["amount"] / row["avg"], "big": row["amount"] > 100}


def ratio_pd(df):  # noqa: ANN001, ANN201
    out = pd.DataFrame(index=df.index)
    out["ratio"] = df["amount"] / df["avg"].where(df["avg"] != 0)
    out["big"] = (df["amount"] > 100).where(df["amount"].notna() & df["avg"].notna() & (df["avg"] != 0))
    return out


SCHEMA = [Field("ratio", types.Float64), Field("big", types.Bool)]
PY = OnDemandFeatureView("ratio_py", [req, profile[["avg"]]], SCHEMA, ratio_py, "python")
PD = OnDemandFeatureView("ratio_pd", [req, profile[["avg"]]], SCHEMA, ratio_pd, "pandas")

floats = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.integers(-1000, 1000).map(float), st.just(0.0))


def _eq(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0)
    return bool(a == b)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(floats, floats), max_size=6))
def test_python_and_pandas_modes_agree_and_match_per_row(rows: list[tuple[Any, Any]]) -> None:
    table = pa.table({"amount": pa.array([r[0] for r in rows], pa.float64()),
                      "avg": pa.array([r[1] for r in rows], pa.float64()), "user_id": list(range(len(rows)))})
    a = PY.transform_arrow(table)
    b = PD.transform_arrow(table)
    assert a.schema == b.schema == pa.schema([("ratio", pa.float64()), ("big", pa.bool_())])
    assert a.num_rows == b.num_rows == len(rows)
    for name in ("ratio", "big"):
        assert all(_eq(x, y) for x, y in zip(a[name].to_pylist(), b[name].to_pylist(), strict=True)), name
    for i, (amount, avg) in enumerate(rows):
        one = PY.transform_row({"amount": amount, "avg": avg})
        assert _eq(one["ratio"], a["ratio"][i].as_py()) and one["big"] == a["big"][i].as_py()
        assert PD.transform_row({"amount": amount, "avg": avg}) == {k: a[k][i].as_py() for k in ("ratio", "big")}


def test_request_values_are_coerced_before_the_function_sees_them() -> None:
    seen: list[type] = []

    def spy(row):  # noqa: ANN001, ANN202
        seen.append(type(row["amount"]))
        return {"ratio": row["amount"], "big": False}

    odfv = OnDemandFeatureView("spy", [req, profile[["avg"]]], SCHEMA, spy)
    out = odfv.transform_arrow(pa.table({"amount": [3, 4], "avg": [1.0, 1.0]}))  # ints for a Float64 field
    assert seen == [float, float] and out["ratio"].to_pylist() == [3.0, 4.0]
    assert odfv.transform_row({"amount": 5, "avg": 1.0})["ratio"] == 5.0 and seen[-1] is float
    with pytest.raises(InputError, match="'amount'"):
        odfv.transform_arrow(pa.table({"amount": ["ten"], "avg": [1.0]}))


def test_outputs_are_coerced_to_the_declared_schema() -> None:
    odfv = OnDemandFeatureView("ints", [req], [Field("x", types.Float64), Field("k", types.Int32)],
                               lambda r: {"x": 1, "k": 2})
    out = odfv.transform_arrow(pa.table({"amount": [1.0]}))
    assert out.schema == pa.schema([("x", pa.float64()), ("k", pa.int32())])
    assert out.to_pylist() == [{"x": 1.0, "k": 2}]


def test_a_failing_function_names_the_view() -> None:
    def boom(row):  # noqa: ANN001, ANN202
        raise ZeroDivisionError("no")

    odfv = OnDemandFeatureView("boom_view", [req], [Field("x", types.Float64)], boom)
    with pytest.raises(OnDemandError, match="'boom_view'.*ZeroDivisionError: no") as e:
        odfv.transform_arrow(pa.table({"amount": [1.0]}))
    assert isinstance(e.value, RuntimeError) and isinstance(e.value.__cause__, ZeroDivisionError)
    with pytest.raises(OnDemandError, match="'boom_view'"):
        odfv.transform_row({"amount": 1.0})


@pytest.mark.parametrize(
    ("mode", "udf", "fragment"),
    [
        ("python", lambda r: [1], "must return a dict"),
        ("python", lambda r: {"y": 1}, "returned no \\['x'\\]"),
        ("python", lambda r: {"x": "not a number"}, "output field 'x' is Float64"),
        ("pandas", lambda df: [1], "must return a DataFrame"),
        ("pandas", lambda df: pd.DataFrame({"x": [1.0, 2.0, 3.0]}), "DataFrame of 1 rows"),
        ("pandas", lambda df: pd.DataFrame({"y": df["amount"]}), "returned no columns \\['x'\\]"),
    ],
)
def test_wrong_shapes_from_the_function_name_the_view(mode: str, udf: Any, fragment: str) -> None:
    odfv = OnDemandFeatureView("shape", [req], [Field("x", types.Float64)], udf, mode)
    with pytest.raises(OnDemandError, match=f"'shape'.*{fragment}"):
        odfv.transform_arrow(pa.table({"amount": [1.0]}))


def test_missing_inputs_are_input_errors_that_say_where_they_come_from() -> None:
    with pytest.raises(InputError, match="'ratio_py' needs inputs \\['amount'\\].*request_context"):
        PY.transform_arrow(pa.table({"avg": [1.0]}))
    with pytest.raises(InputError, match="\\['avg'\\]"):
        PY.transform_row({"amount": 1.0})


def test_no_rows_means_no_call() -> None:
    def never(df):  # noqa: ANN001, ANN202
        raise AssertionError("called")

    odfv = OnDemandFeatureView("never", [req], [Field("x", types.Float64)], never, "pandas")
    out = odfv.transform_arrow(pa.table({"amount": pa.array([], pa.float64())}))
    assert out.num_rows == 0 and out.schema == pa.schema([("x", pa.float64())])


def test_inputs_are_named_once() -> None:
    clash = RequestSource(name="clash", schema=[Field("avg", types.Float64)])
    with pytest.raises(DefinitionError, match="\\['avg'\\]"):
        OnDemandFeatureView("c", [clash, profile[["avg"]]], SCHEMA, ratio_py)
    assert PY.input_names == ["avg", "amount"]


def test_a_view_rebuilt_from_the_registry_computes_the_same_and_its_source_is_its_version() -> None:
    import numpy as np

    rows = pa.table({"amount": [10.0, None, 500.0], "avg": [4.0, 1.0, 0.0]})
    for odfv in (PY, PD):
        again = OnDemandFeatureView.from_spec(odfv.to_spec())
        assert again.transform_arrow(rows).equals(odfv.transform_arrow(rows))
        assert again.to_spec() == odfv.to_spec()
    assert np is not None

    def ratio_py(row):  # noqa: ANN001, ANN202 - same name, different body
        return {"ratio": 0.0, "big": False}

    changed = OnDemandFeatureView("ratio_py", [req, profile[["avg"]]], SCHEMA, ratio_py)
    assert changed.to_spec()["udf_source"] != PY.to_spec()["udf_source"]


def test_the_fraud_example_functions() -> None:
    from quiver.examples.fraud import features as fraud

    nyc_london = fraud.tx_distance.transform_row({"lat": 51.5074, "lon": -0.1278, "home_lat": 40.7128,
                                                  "home_lon": -74.0060})
    assert nyc_london["distance_from_home_km"] == pytest.approx(5570, rel=0.01)
    assert fraud.tx_distance.transform_row({"lat": None, "lon": 1.0, "home_lat": 1.0, "home_lon": 1.0}) == {
        "distance_from_home_km": None}
    ratio = fraud.amount_vs_avg.transform_arrow(pa.table({"amount": [50, 10.0, 1.0], "avg_amount_90d": [25.0, None, 0.0]}))
    assert ratio["amount_to_avg_90d"].to_pylist() == [2.0, None, None]
    assert [f.split(":")[0] for f in fraud.fraud_model.features].count("user_profile") == 5
    assert len(fraud.fraud_model.features) == 10
