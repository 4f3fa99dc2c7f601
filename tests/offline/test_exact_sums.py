"""The offline engine's sum, mean and stddev are the exact sums of ``quiver.aggregation.exact``:
non-finite values skipped, results equal to the oracle's bit for bit, and a value too large
for an exact sum refused with a message naming the feature (training sets and materialize);
its min, max and last order a NaN as the oracle does."""

from __future__ import annotations

import math
import struct
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from quiver.errors import InputError
from quiver.testing.reference import window_aggregate
from tests.offline.harness import AGGS, SEC, TS, as_reference_rows, at, engine, make_views, training_set, write_rows

EXACT = [a for a in AGGS if a.function in ("sum", "mean", "stddev")]


def bits(x: float | None) -> bytes | None:
    return None if x is None else struct.pack("<d", x)


def test_non_finite_skipped_and_sums_exact(tmp_path: Path) -> None:
    amounts = [0.1, 0.2, math.nan, math.inf, 1 / 3, None, -math.inf, 1e9 + 0.5, -2.5e-9]
    rows = [{"uid": 1, "ts": i * SEC // 2, "created": 0, "amount": v} for i, v in enumerate(amounts)]
    views = make_views()
    eng = engine(tmp_path)
    try:
        write_rows(tmp_path, "snap", [])
        write_rows(tmp_path, "pairs", [])
        write_rows(tmp_path, "events", rows)
        times = [s * SEC // 2 for s in range(2, 12)]
        frame = pa.table({"uid": pa.array([1] * len(times), pa.int64()),
                          "event_timestamp": pa.array([at(t) for t in times], TS)})
        got = training_set(eng, views, [f"agg:{a.name}" for a in EXACT], frame).to_pylist()
        refs = [(a.column, a.function, a.window, a.name) for a in EXACT]
        want = window_aggregate([{"uid": 1, "event_timestamp": at(t)} for t in times], as_reference_rows(rows),
                                ["uid"], refs)
        for g, w in zip(got, want, strict=True):
            assert {k: bits(g[k]) for k in w} == {k: bits(v) for k, v in w.items()}
        assert any(w["amount_sum_10s"] is not None for w in want)
    finally:
        eng.close()


def test_nan_orders_above_every_number_in_min_max_and_last(tmp_path: Path) -> None:
    """DuckDB's order, which the oracle and the online state keep: max is NaN once the
    window holds one, min only when it holds nothing else; last breaks a time tie by the
    greater value, a NaN above any number."""
    amounts = [3.0, math.nan, -1.0, math.inf, None, math.nan, 2.0]
    rows = [{"uid": 1, "ts": i * SEC, "created": 0, "amount": v} for i, v in enumerate(amounts)]
    rows += [{"uid": 2, "ts": SEC, "created": 0, "amount": math.nan}, {"uid": 3, "ts": SEC, "created": 0, "amount": 5.0},
             {"uid": 3, "ts": SEC, "created": 0, "amount": math.nan}]  # a tie at the same instant
    picked = [a for a in AGGS if a.function in ("min", "max", "last")]
    eng = engine(tmp_path)
    try:
        write_rows(tmp_path, "snap", [])
        write_rows(tmp_path, "pairs", [])
        write_rows(tmp_path, "events", rows)
        keys = [(u, t) for u in (1, 2, 3) for t in range(1, 9)]
        frame = pa.table({"uid": pa.array([u for u, _ in keys], pa.int64()),
                          "event_timestamp": pa.array([at(t * SEC) for _, t in keys], TS)})
        got = training_set(eng, make_views(), [f"agg:{a.name}" for a in picked], frame).to_pylist()
        refs = [(a.column, a.function, a.window, a.name) for a in picked]
        want = window_aggregate([{"uid": u, "event_timestamp": at(t * SEC)} for u, t in keys],
                                as_reference_rows(rows), ["uid"], refs)
        for g, w in zip(got, want, strict=True):
            for k, v in w.items():
                assert g[k] == v or (v != v and g[k] != g[k]), (g, k, v)
        assert any(w["amount_max_10s"] != w["amount_max_10s"] and w["amount_min_10s"] == w["amount_min_10s"]
                   for w in want)  # a window where the two differ
    finally:
        eng.close()


def test_a_value_too_large_is_refused_with_the_feature_named(tmp_path: Path) -> None:
    rows = [{"uid": 1, "ts": SEC, "created": 0, "amount": 1.0}, {"uid": 1, "ts": 2 * SEC, "created": 0, "amount": 4e22}]
    views = {"agg": make_views()["agg"]}
    eng = engine(tmp_path)
    try:
        write_rows(tmp_path, "events", rows)
        frame = pa.table({"uid": pa.array([1], pa.int64()), "event_timestamp": pa.array([at(3 * SEC)], TS)})
        with pytest.raises(InputError, match=r"feature 'amount_(sum|mean|stddev)_\d+s'.*too large for an exact sum"):
            training_set(eng, views, ["agg:amount_sum_10s"], frame)
        with pytest.raises(InputError, match="too large for an exact sum"):
            eng.materialize(views["agg"], at(0) - timedelta(days=1), at(3 * SEC))  # aggregates at end
    finally:
        eng.close()
