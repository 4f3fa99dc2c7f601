"""Exact sums (``quiver.aggregation.exact``) against their plain-Python definition.

The limbs of every value add back to ``trunc(v * 2**52)``; limb sums in any order
give the same integer; the DuckDB SQL gives the same doubles as the numpy fold and
the oracle, bit for bit, on adversarial floats.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.aggregation import exact as E
from quiver.errors import InputError
from quiver.testing.reference import aggregate

# adversarial finite values within range: tiny, huge, negative, integers, many fractional bits
in_range = st.one_of(
    st.floats(min_value=-3.7e22, max_value=3.7e22, allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-9, max_value=1e-9),
    st.integers(-(2**53), 2**53).map(float),
    st.integers(-(10**6), 10**6).map(lambda k: k / 1024 + 1 / 3),
    st.sampled_from([0.0, -0.0, 2.0**-52, -(2.0**-52), 2.0**-53, 5e-324, 0.1, -0.1, 2.0**52 - 0.5, 2.0**74]),
)
# the sum of 40 squares stays below 2**75, the range of exact sums
squarable = st.floats(min_value=-2.5e10, max_value=2.5e10, allow_nan=False, allow_infinity=False)


def bits(x: float | None) -> bytes | None:
    return None if x is None else struct.pack("<d", x)


def limb_value(col: np.ndarray) -> int:
    return sum(int(d) << (26 * k) for k, d in enumerate(col))


@given(st.lists(in_range, min_size=1, max_size=50))
def test_limbs_add_back_to_the_exact_integer(values: list[float]) -> None:
    lim = E.limbs(np.asarray(values))
    assert lim.shape == (E.LIMBS, len(values))
    assert np.all(np.abs(lim) < 2**26) and np.all(lim == np.trunc(lim))
    for j, v in enumerate(values):
        assert limb_value(lim[:, j]) == math.trunc(v * 2**52), v


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(in_range, min_size=1, max_size=60), st.randoms(use_true_random=False), st.integers(1, 6))
def test_merge_order_never_changes_the_sum(values: list[float], rnd, parts: int) -> None:
    """Tiles of any grouping, merged in any order, give the same limb sums and value."""
    lim = E.limbs(np.asarray(values))
    want = E.combine(lim.sum(axis=1))
    total = sum(math.trunc(v * 2**52) for v in values)
    assert want == (total if abs(total) < 2**127 else None)
    if want is None:
        return
    order = list(range(len(values)))
    rnd.shuffle(order)
    cuts = sorted(rnd.sample(range(1, len(values)), min(parts - 1, len(values) - 1))) if len(values) > 1 else []
    tiles = [lim[:, order[a:b]].sum(axis=1) for a, b in zip([0, *cuts], [*cuts, len(values)])]
    rnd.shuffle(tiles)
    acc = np.zeros(E.LIMBS)
    for t in tiles:
        acc += t
    assert E.combine(acc) == want
    n = float(len(values))
    got = E.finish("sum", n, acc, None, "f", "c")
    assert bits(got) == bits(aggregate("sum", [{"c": v} for v in values], "c"))


@given(st.lists(squarable, min_size=2, max_size=40))
def test_stddev_and_mean_equal_the_oracle(values: list[float]) -> None:
    x = np.asarray(values)
    s = E.limbs(x).sum(axis=1)
    q = E.limbs(x * x, np.isfinite(x)).sum(axis=1)
    rows = [{"c": v} for v in values]
    for fn in ("mean", "stddev"):
        assert bits(E.finish(fn, float(len(values)), s, q, "f", "c")) == bits(aggregate(fn, rows, "c")), fn


def test_many_equal_values_stay_exact() -> None:
    v = 0.1
    n = 200_000
    lim = E.limbs(np.full(n, v)).sum(axis=1)
    assert E.combine(lim) == n * math.trunc(v * 2**52)
    assert E.finish("sum", float(n), lim, None, "f", "c") == float(n * math.trunc(v * 2**52)) / 2**52


def test_non_finite_values_are_skipped_and_huge_ones_refused() -> None:
    lim = E.limbs(np.asarray([1.5, math.nan, math.inf, -math.inf]))
    assert E.combine(lim.sum(axis=1)) == math.trunc(1.5 * 2**52)
    rows = [{"c": v} for v in (1.5, math.nan, math.inf, None)]
    assert aggregate("sum", rows, "c") == 1.5 and aggregate("count", rows, "c") == 3
    assert aggregate("stddev", rows, "c") is None  # one finite value
    huge = E.limbs(np.asarray([1.0, 4e22]))
    assert E.combine(huge.sum(axis=1)) is None
    with pytest.raises(InputError, match="amount_sum_1h"):
        E.finish("sum", 2.0, huge.sum(axis=1), None, "amount_sum_1h", "amount")
    with pytest.raises(InputError):
        aggregate("sum", [{"c": 4e22}], "c")
    sq = E.limbs(np.asarray([2e11]) ** 2, np.asarray([True]))
    assert E.combine(sq.sum(axis=1)) is None  # squares leave the range sooner


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), st.one_of(st.none(), squarable, st.sampled_from([math.nan, math.inf]))),
                min_size=1, max_size=40))
def test_duckdb_sql_equals_numpy_bit_for_bit(rows: list[tuple[int, float | None]]) -> None:
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    con.execute("CREATE TABLE t (g INTEGER, c DOUBLE)")
    con.executemany("INSERT INTO t VALUES (?, ?)", rows)
    exprs = [E.sql_template(f).format(c='"c"', w='"c" IS NOT NULL', err="'too large'")
             for f in ("sum", "mean", "stddev")]
    got = {g: vals for g, *vals in con.execute(f"SELECT g, {', '.join(exprs)} FROM t GROUP BY g").fetchall()}
    for g in got:
        vals = [v for k, v in rows if k == g and v is not None]
        x = np.asarray(vals, dtype="float64")
        ok = np.isfinite(x)
        s, q = E.limbs(x).sum(axis=1), E.limbs(x * x, ok).sum(axis=1)
        want = [E.finish(f, float(ok.sum()), s, q, "f", "c") for f in ("sum", "mean", "stddev")]
        assert [bits(v) for v in got[g]] == [bits(v) for v in want], (g, vals, got[g], want)
        oracle = [aggregate(f, [{"c": v} for v in vals], "c") for f in ("sum", "mean", "stddev")]
        assert [bits(v) for v in oracle] == [bits(v) for v in want]


def test_duckdb_refuses_a_value_out_of_range_with_the_message() -> None:
    duckdb = pytest.importorskip("duckdb")
    con = duckdb.connect()
    sql = E.sql_template("sum").format(c="c", w="c IS NOT NULL", err="'feature x: too large'")
    assert con.execute(f"SELECT {sql} FROM (VALUES (1.5::DOUBLE), (3e22::DOUBLE)) t(c)").fetchone() == (3e22 + 1.5,)
    with pytest.raises(duckdb.Error, match="feature x: too large"):
        con.execute(f"SELECT {sql} FROM (VALUES (1.5::DOUBLE), (4e22::DOUBLE)) t(c)").fetchone()
