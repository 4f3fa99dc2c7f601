"""The aggregation state against brute force: merge order, tile edges, expiry, late events.

Values are small integers and floats with many fractional bits; sum, mean and
stddev are exact sums (``quiver.aggregation.exact``), so every result compares
with the oracle's with ``==``, whatever the order tiles merge in.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver import Aggregation, Entity, FeatureView, PushSource
from quiver.aggregation import windows as W
from quiver.aggregation.functions import FUNCTIONS, sql_expression
from quiver.aggregation.state import StateLayout, StateWrite
from quiver.testing.reference import aggregate

T0 = int(datetime(2026, 3, 1, tzinfo=UTC).timestamp() * 1_000_000)
WINDOWS = [timedelta(seconds=30), timedelta(minutes=10), timedelta(hours=1), timedelta(days=1), timedelta(days=2)]
USER = Entity(name="user", join_keys=["user_id"])


def make_view(functions: list[str] | None = None, windows: list[timedelta] | None = None) -> FeatureView:
    aggs = [Aggregation("amount", f, window=w) for f in functions or list(FUNCTIONS) for w in windows or WINDOWS]
    return FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=aggs)


class MemoryCells:
    """A plain-Python store of cells, applying the merge ops one by one (the obvious way)."""

    def __init__(self, layout: StateLayout) -> None:
        self.layout = layout
        self.cells: dict[tuple[Any, ...], list[Any]] = {}
        self.raw: list[tuple[str, int, bytes]] = []

    def apply(self, w: StateWrite) -> None:
        for e, lv, tl, stat, op, ts, val in w.cells:
            key = (e, lv, tl, stat, val) if op == "D" else (e, lv, tl, stat)
            old = self.cells.get(key)
            if old is None:
                self.cells[key] = [ts, val]
            elif op == "+":
                old[1] += val
            elif op == "<":
                old[1] = min(old[1], val)
            elif op == ">":
                old[1] = max(old[1], val)
            elif op == "L" and (ts, val) > (old[0], old[1]):
                self.cells[key] = [ts, val]
        self.raw.extend(w.raw)

    def expire(self, now: int) -> None:
        lay = self.layout
        self.cells = {k: v for k, v in self.cells.items() if lay.group_expires_at(k[1], W.group_of(k[1], k[2])) > now}
        self.raw = [r for r in self.raw if lay.raw_expires_at(r[1]) > now]

    def read(self, entities: list[str], at: int, features: list[str] | None = None) -> pa.Table:
        plan = self.layout.plan(features, at)
        row = {e: i for i, e in enumerate(entities)}
        tiles = {(lv, t) for lv, ts in plan.tiles.items() for t in ts}
        cells = [(row[k[0]], k[1], k[2], k[3], v[0], v[1]) for k, v in self.cells.items()
                 if k[0] in row and (k[1], k[2]) in tiles]
        buckets = set(plan.raw_buckets)
        raw = [(row[e], p) for e, b, p in self.raw if e in row and b in buckets]
        return self.layout.fold(plan, len(entities), cells, raw)


def brute(events: list[tuple[int, int, float | None]], user: int, t: int, agg: Aggregation) -> Any:
    """DESIGN §2 written out: events of ``user`` with ``t - w <= ts < t``."""
    w = int(agg.window.total_seconds() * 1_000_000)
    rows = [(ts, v) for u, ts, v in events if u == user and t - w <= ts < t]
    vals = [v for _, v in rows if v is not None]
    f = agg.function
    if f == "count":
        return len(vals)
    if f == "count_distinct":
        return len(set(vals))
    if not vals:
        return None
    if f in ("sum", "mean", "stddev"):  # the oracle's exact-sum definition
        return aggregate(f, [{"v": v} for v in vals], "v")
    return {
        "min": lambda: min(vals),
        "max": lambda: max(vals),
        "last": lambda: max((ts, v) for ts, v in rows if v is not None)[1],
    }[f]()


def to_table(events: list[tuple[int, int, float | None]]) -> pa.Table:
    return pa.table({
        "user_id": pa.array([e[0] for e in events], pa.int64()),
        "amount": pa.array([e[2] for e in events], pa.float64()),
        "event_timestamp": pa.array([e[1] for e in events], pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    })


def same(got: Any, want: Any, func: str) -> bool:
    if want is None or got is None:
        return got is None and want is None
    return bool(got == want)  # exactly, sum, mean and stddev included


# times near tile edges: multiples of a minute, an hour, a day, give or take a microsecond
edge = st.builds(
    lambda base, k, d: T0 + base * k + d,
    st.sampled_from([W.MINUTE, W.HOUR, W.DAY]),
    st.integers(-50, 50),
    st.sampled_from([-1, 0, 1, 7_000_000]),
)
anytime = st.integers(T0 - 3 * W.DAY, T0 + 3 * W.DAY)
value = st.one_of(st.none(), st.integers(-20, 20).map(float),
                  st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: x / 3), st.sampled_from([0.1, 0.2, 0.3, 1e-17]))
event = st.tuples(st.integers(0, 2), st.one_of(edge, anytime), value)


FAST = ["count", "sum", "mean", "stddev", "min", "max"]  # folded by the numpy path


@pytest.mark.parametrize("functions", [None, FAST], ids=["all", "numeric"])
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=st.lists(event, min_size=1, max_size=60), at=st.lists(st.one_of(edge, anytime), min_size=1, max_size=3),
       split=st.integers(1, 4), seed=st.integers(0, 10))
def test_state_equals_brute_force_in_any_order(
    functions: list[str] | None, events: list[Any], at: list[int], split: int, seed: int
) -> None:
    view = make_view(functions)
    layout = StateLayout(view)
    mem = MemoryCells(layout)
    order = np.random.default_rng(seed).permutation(len(events))  # late and out-of-order events
    for part in np.array_split(order, split):
        if len(part):
            mem.apply(layout.write(to_table([events[i] for i in part])))
    users = ["0", "1", "2", "9"]
    for t in at:
        got = mem.read(users, t).to_pylist()
        for i, u in enumerate(users):
            for agg in view.aggregations:
                want = brute(events, int(u), t, agg)
                assert same(got[i][agg.name], want, agg.function), (agg.name, u, t, got[i][agg.name], want)


@settings(max_examples=40, deadline=None)
@given(events=st.lists(event, min_size=1, max_size=40), lag=st.integers(0, 3 * W.DAY))
def test_expired_state_changes_no_result(events: list[Any], lag: int) -> None:
    """Dropping what is older than the longest window changes no value read at that time or later."""
    view = make_view(["count", "sum", "last"])
    layout = StateLayout(view)
    mem = MemoryCells(layout)
    mem.apply(layout.write(to_table(events)))
    t = max(e[1] for e in events) + lag
    before = mem.read(["0", "1", "2"], t).to_pylist()
    mem.expire(t)
    assert mem.read(["0", "1", "2"], t).to_pylist() == before


@given(start=st.integers(T0 - 40 * W.DAY, T0), length=st.integers(0, 40 * W.DAY), invertible=st.booleans(),
       snap=st.sampled_from([None, W.RAW_BUCKET, W.LEVELS[0]]))
def test_cover_partitions_the_window(start: int, length: int, invertible: bool, snap: int | None) -> None:
    """Tiles plus ``raw`` less ``less`` pieces count every instant of ``[start, end)`` once
    and nothing else; every piece lies in its raw bucket; the read cost is bounded."""
    if snap:
        start -= start % snap  # edges on bucket and minute boundaries too
    end = start + length
    c = W.cover(start, end, invertible=invertible)
    signed = ([(tl * W.LEVELS[lv], (tl + 1) * W.LEVELS[lv], 1) for lv, tl in c.tiles]
              + [(lo, hi, 1) for _, lo, hi in c.raw] + [(lo, hi, -1) for _, lo, hi in c.less])
    cuts = sorted({x for lo, hi, _ in signed for x in (lo, hi)} | {start, end})
    for lo, hi in zip(cuts, cuts[1:]):  # on each elementary segment: the sum of the signs covering it
        weight = sum(sg for a, b, sg in signed if a <= lo and hi <= b)
        assert weight == (1 if start <= lo and hi <= end else 0), (lo, hi, weight)
    for b, lo, hi in c.raw + c.less:
        assert b * W.RAW_BUCKET <= lo < hi <= (b + 1) * W.RAW_BUCKET
    if not invertible:
        assert not c.less
    # bounded read cost, however long the window
    per_minute = W.LEVELS[0] // W.RAW_BUCKET
    assert len(c.tiles) <= 2 * 59 + 2 * 23 + length // W.DAY + 1
    assert len(c.raw) + len(c.less) <= 2 * per_minute + 1
    if invertible and c.tiles:  # the start's minute: at most half of it raw, whichever half is shorter
        first = start // W.LEVELS[0] * W.LEVELS[0]
        assert len([p for p in c.raw + c.less if first <= p[1] < first + W.LEVELS[0]]) <= per_minute // 2


@settings(max_examples=30, deadline=None)
@given(events=st.lists(event, min_size=1, max_size=40), t=anytime)
def test_offline_sql_means_the_same(events: list[Any], t: int) -> None:
    """The SQL the offline engine is given computes what the tiles compute."""
    duckdb = pytest.importorskip("duckdb")
    view = make_view(windows=[timedelta(hours=1), timedelta(days=1)])
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    tbl = to_table(events)  # noqa: F841 - read by DuckDB
    for agg in view.aggregations:
        w = int(agg.window.total_seconds() * 1_000_000)
        q = (f"SELECT user_id, {sql_expression(agg)} AS v FROM tbl WHERE epoch_us(event_timestamp) >= {t - w} "
             f"AND epoch_us(event_timestamp) < {t} GROUP BY user_id")
        got = dict(con.execute(q).fetchall())
        for u in (0, 1, 2):
            want = brute(events, u, t, agg)
            have = got.get(u, 0 if agg.function in ("count", "count_distinct") else None)
            assert same(have, want, agg.function), (agg.name, u, have, want)
