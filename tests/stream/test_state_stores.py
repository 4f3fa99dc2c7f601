"""The aggregation state in the real online stores (SQLite, Redis) against the oracle:
every function, numeric and text columns, batches out of order, reads at several times."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from quiver import Aggregation, Entity, FeatureView, PushSource, types
from quiver.aggregation.state import StateLayout
from quiver.config import RepoConfig
from quiver.errors import InputError
from quiver.testing.reference import window_aggregate

USER = Entity(name="user", join_keys=["user_id"])
WINDOWS = [timedelta(seconds=45), timedelta(minutes=10), timedelta(hours=2), timedelta(days=1)]
NUMERIC = [Aggregation("amount", f, window=w) for f in ("count", "sum", "mean", "min", "max", "stddev", "last",
                                                         "count_distinct") for w in WINDOWS]
TEXT = [Aggregation("country", "count_distinct", window=w) for w in WINDOWS] + [
    Aggregation("country", "last", window=w, dtype=types.String) for w in WINDOWS] + [
    Aggregation("country", "max", window=timedelta(hours=2), dtype=types.String),
    Aggregation("amount", "sum", window=timedelta(hours=2))]
# only functions that add (count, sum, mean, stddev): the packed-tile read path of the stores
ADDITIVE = [Aggregation("amount", f, window=w) for f in ("count", "sum", "mean", "stddev") for w in WINDOWS]


def open_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest):
    """``kind``: sqlite, redis, or redis-near (Redis with a near cache in the reader)."""
    if kind.startswith("redis"):
        from quiver.online.redis import RedisOnlineStore

        url = request.getfixturevalue("redis_clean_url")
        near = {"near_cache_keys": 10_000} if kind == "redis-near" else {}
        return RedisOnlineStore(RepoConfig(repo_path=tmp_path, project="p", registry="r.db",
                                           online={"type": "redis", "url": url, **near}))
    from quiver.online.sqlite import SQLiteOnlineStore

    return SQLiteOnlineStore(RepoConfig(repo_path=tmp_path, project="p", registry="r.db",
                                        online={"type": "sqlite", "path": "online.db"}))


def events(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        amount = None if rng.random() < 0.05 else round(float(rng.normal(0, 40)), 2)  # cents: inexact binary
        out.append({"user_id": int(rng.integers(0, 4)), "amount": amount,
                    "country": str(rng.choice(["DE", "FR", "US", "JP"])),
                    "event_timestamp": now - timedelta(microseconds=int(rng.integers(0, 26 * 3600 * 10**6)))})
    # a few on exact tile edges
    for e, edge in zip(out[:30], range(30)):
        e["event_timestamp"] = datetime.fromtimestamp((int(now.timestamp()) // 60 - edge * 7) * 60, UTC)
    return out


def event_table(rows: list[dict], text: str = "country") -> pa.Table:
    """Events (dicts of ``events``) as the table a stream batch is: user, amount, a text column."""
    return pa.table({"user_id": pa.array([r["user_id"] for r in rows], pa.int64()),
                     "amount": pa.array([r["amount"] for r in rows], pa.float64()),
                     text: pa.array([r[text] for r in rows]),
                     "event_timestamp": pa.array([r["event_timestamp"] for r in rows], pa.timestamp("us", tz="UTC"))})


@pytest.mark.parametrize("kind", ["sqlite", "redis", "redis-near"])
@pytest.mark.parametrize("aggs", [NUMERIC, TEXT, ADDITIVE], ids=["numeric", "text", "additive"])
def test_store_state_equals_oracle(kind: str, aggs: list[Aggregation], tmp_path: Path,
                                   request: pytest.FixtureRequest) -> None:
    store = open_store(kind, tmp_path, request)
    view = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=aggs)
    lay = StateLayout(view)
    evs = events(1500, 5)
    order = np.random.default_rng(1).permutation(len(evs))
    for k, part in enumerate(np.array_split(order, 6)):  # batches out of time order: late events
        rows = [evs[i] for i in part]
        table = event_table(rows)
        store.write_aggregates([lay.write(table, now_us=int(time.time() * 1e6))], {"t/0": k})
    assert store.read_offsets("t/") == {"t/0": 5}
    users = [0, 1, 2, 3, 77, 1]
    refs = [(a.column, a.function, a.window, a.name) for a in aggs]
    now = datetime.now(UTC)
    for at in (now, now + timedelta(seconds=20), now + timedelta(minutes=9, seconds=59), now + timedelta(hours=3)):
        got = store.read_aggregates(view, pa.table({"user_id": users}), None, at).to_pylist()
        want = window_aggregate([{"user_id": u, "event_timestamp": at} for u in users], evs, ["user_id"], refs)
        for g, w in zip(got, want, strict=True):
            for name in w:  # exactly, sums and deviations included (exact sums)
                assert g[name] == w[name], (kind, at - now, name, g[name], w[name])
        for u, w in zip(users, want):  # one key per read: the path a single request takes
            one = store.read_aggregates(view, pa.table({"user_id": [u]}), None, at).to_pylist()[0]
            assert one.keys() == w.keys()
            for name in w:
                assert one[name] == w[name], (kind, u, name)
    store.delete_aggregates("v")
    empty = store.read_aggregates(view, pa.table({"user_id": [0]}), None, now).to_pylist()[0]
    assert all(v in (0, None) for v in empty.values())
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("aggs", [[a for a in NUMERIC if a.function != "count_distinct"], ADDITIVE],
                         ids=["numeric", "additive"])
def test_non_finite_values_are_skipped_and_huge_ones_refused(kind: str, aggs: list[Aggregation], tmp_path: Path,
                                                              request: pytest.FixtureRequest) -> None:
    """sum, mean and stddev skip NaN and +-inf (tiles and raw edges alike); a value too large
    for an exact sum makes the read fail with an InputError naming the feature, not a wrong number."""
    store = open_store(kind, tmp_path, request)
    view = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=aggs)
    lay = StateLayout(view)
    now = datetime.now(UTC)
    rows = [(0, v, now - timedelta(minutes=m)) for v, m in ((1.5, 90), (float("nan"), 80), (float("inf"), 3),
                                                            (-float("inf"), 95), (2.25, 1), (0.1, 2))]
    rows += [(1, 1.0, now - timedelta(minutes=5)), (1, 4e22, now - timedelta(minutes=70))]
    table = pa.table({"user_id": [r[0] for r in rows], "amount": [r[1] for r in rows],
                      "event_timestamp": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC"))})
    store.write_aggregates([lay.write(table)], {"t/0": 1})
    got = store.read_aggregates(view, pa.table({"user_id": [0]}), None, now).to_pylist()[0]
    evs = [{"user_id": u, "amount": v, "event_timestamp": t} for u, v, t in rows if u == 0]
    refs = [(a.column, a.function, a.window, a.name) for a in aggs if a.function in ("sum", "mean", "stddev")]
    want = window_aggregate([{"user_id": 0, "event_timestamp": now}], evs, ["user_id"], refs)[0]
    assert want["amount_sum_1d"] == pytest.approx(3.85)  # the finite values only
    assert {k: got[k] for k in want} == want
    with pytest.raises(InputError, match="amount_sum_2h"):
        store.read_aggregates(view, pa.table({"user_id": [1]}), None, now)
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_huge_value_outside_a_window_leaves_it_alone(kind: str, tmp_path: Path,
                                                       request: pytest.FixtureRequest) -> None:
    """A value too large for an exact sum fails only the windows that hold it: one in the
    raw edge bucket a window reads but starts after, and one in a tile of a group it reads
    but does not sum, leave that window's values exact (a 0 x NaN must not spread)."""
    store = open_store(kind, tmp_path, request)
    view = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=ADDITIVE)
    lay = StateLayout(view)
    minute = int(time.time()) // 60 * 60 - 120
    at = datetime.fromtimestamp(minute + 30, UTC)  # half a minute into a minute, in the past
    w = timedelta(minutes=10)
    rows = [(at - w - timedelta(seconds=10), 4e22),  # same raw bucket as the window's start, before it
            (at - timedelta(minutes=30), 4e22),  # a whole minute tile, outside the window
            (at - w + timedelta(seconds=5), 1.25), (at - timedelta(minutes=3), 2.5), (at - timedelta(seconds=1), 0.5)]
    # user 1: in the raw edge [minute, at), 1e12 (whose square is out of range for stddev)
    # and 4e22 (out of range for sum) just after the edge's end
    edge = [(at - timedelta(seconds=5), 1e12), (at - timedelta(seconds=3), 2.0), (at + timedelta(seconds=1), 4e22)]
    table = pa.table({"user_id": [0] * len(rows) + [1] * len(edge), "amount": [v for _, v in rows + edge],
                      "event_timestamp": pa.array([t for t, _ in rows + edge], pa.timestamp("us", tz="UTC"))})
    store.write_aggregates([lay.write(table)], {"t/0": 1})
    one = [a.name for a in ADDITIVE if a.window == w and a.function != "stddev"]
    got = store.read_aggregates(view, pa.table({"user_id": [1]}), one, at).to_pylist()[0]
    assert got["amount_count_10m"] == 2 and got["amount_sum_10m"] == 1e12 + 2.0
    with pytest.raises(InputError, match="amount_stddev_10m"):
        store.read_aggregates(view, pa.table({"user_id": [1]}), ["amount_stddev_10m"], at)
    names = [a.name for a in ADDITIVE if a.window == w]
    got = store.read_aggregates(view, pa.table({"user_id": [0]}), names, at).to_pylist()[0]
    assert got["amount_count_10m"] == 3 and got["amount_sum_10m"] == 4.25 and got["amount_mean_10m"] == 4.25 / 3
    with pytest.raises(InputError, match="amount_sum_1d"):
        store.read_aggregates(view, pa.table({"user_id": [0]}), ["amount_sum_1d"], at)
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("aggs", [ADDITIVE, [a for a in NUMERIC if a.function in ("count", "sum", "min", "max")]],
                         ids=["additive", "numeric"])
def test_count_counts_nan_at_the_window_edges_as_offline(kind: str, aggs: list[Aggregation], tmp_path: Path,
                                                        request: pytest.FixtureRequest) -> None:
    """A NaN is a value, a null is not: ``count`` counts NaN (as the tiles, DuckDB and the
    oracle do) also among the raw events of a partial minute, where values are kept as
    float64 and a null has its own NaN pattern."""
    store = open_store(kind, tmp_path, request)
    view = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=aggs)
    lay = StateLayout(view)
    minute = int(time.time()) // 60 * 60 - 120
    at = datetime.fromtimestamp(minute + 30, UTC)  # the raw edge [minute, at) holds the first three
    rows = [(at - timedelta(seconds=1), float("nan")), (at - timedelta(seconds=2), None),
            (at - timedelta(seconds=3), 2.5), (at - timedelta(minutes=5), float("nan")),
            (at - timedelta(minutes=5, seconds=1), None), (at - timedelta(minutes=20), 1.0)]
    table = pa.table({"user_id": [0] * len(rows), "amount": pa.array([v for _, v in rows], pa.float64()),
                      "event_timestamp": pa.array([t for t, _ in rows], pa.timestamp("us", tz="UTC"))})
    store.write_aggregates([lay.write(table)], {"t/0": 1})
    got = store.read_aggregates(view, pa.table({"user_id": [0]}), None, at).to_pylist()[0]
    evs = [{"user_id": 0, "amount": v, "event_timestamp": t} for t, v in rows]
    refs = [(a.column, a.function, a.window, a.name) for a in aggs if a.function in ("count", "sum")]
    want = window_aggregate([{"user_id": 0, "event_timestamp": at}], evs, ["user_id"], refs)[0]
    assert want["amount_count_10m"] == 3 and want["amount_count_45s"] == 2  # the NaN values, not the nulls
    assert {k: got[k] for k in want} == want
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_reads_at_many_instants_of_the_same_minutes(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Reads keep what they work out per tile alignment (the Redis read program): reads at
    instants 3.7 s apart, on bucket boundaries and one microsecond off them, with
    windows of whole minutes and not (45 s, 90 s), through one view, each equal to the oracle."""
    store = open_store(kind, tmp_path, request)
    windows = [timedelta(seconds=45), timedelta(seconds=90), timedelta(minutes=10)]
    aggs = [Aggregation("amount", f, window=w) for f in ("count", "sum") for w in windows]
    view = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=aggs)
    lay = StateLayout(view)
    # a minute boundary just ahead: the state keeps what reads at now or later need (older
    # tiles expire once the longest window has passed them), and these reads are all later
    base = (int(time.time()) // 60 + 2) * 60
    rng = np.random.default_rng(3)
    stamps = base * 10**6 - rng.integers(-200 * 10**6, 700 * 10**6, 800)
    stamps[:40] = (base - 60 * rng.integers(-3, 11, 40)) * 10**6  # on minute boundaries
    stamps[40:80] = (base - 15 - 60 * rng.integers(-3, 11, 40)) * 10**6  # on the boundaries of 45 s windows
    evs = [{"user_id": 0, "amount": round(float(a), 2), "event_timestamp": datetime.fromtimestamp(s / 1e6, UTC)}
           for s, a in zip(stamps.tolist(), rng.normal(10, 5, len(stamps)))]
    table = pa.table({"user_id": [0] * len(evs), "amount": [e["amount"] for e in evs],
                      "event_timestamp": pa.array([e["event_timestamp"] for e in evs], pa.timestamp("us", tz="UTC"))})
    store.write_aggregates([lay.write(table)], {"t/0": 1})
    refs = [(a.column, a.function, a.window, a.name) for a in aggs]
    offsets = [s * 3_700_000 for s in range(40)] + [60_000_000, 60_000_001, 59_999_999, 15_000_000, 15_000_001,
                                                    105_000_000, 104_999_999, 120_000_000]
    for off in offsets:
        at = datetime.fromtimestamp(base, UTC) + timedelta(microseconds=off)
        got = store.read_aggregates(view, pa.table({"user_id": [0]}), None, at).to_pylist()[0]
        want = window_aggregate([{"user_id": 0, "event_timestamp": at}], evs, ["user_id"], refs)[0]
        assert got == want, (kind, off)
    store.close()


def test_sqlite_state_of_an_earlier_layout_is_refused_until_rebuilt(tmp_path: Path,
                                                                    request: pytest.FixtureRequest) -> None:
    """Additive stats kept as cell rows (before packed groups) would read as zero: the
    store names the view and the rebuild command instead, and reads again once rebuilt."""
    import sqlite3

    con = sqlite3.connect(tmp_path / "online.db")
    con.execute("CREATE TABLE __agg_cells (view TEXT NOT NULL, entity TEXT NOT NULL, level INTEGER NOT NULL,"
                " tile INTEGER NOT NULL, stat INTEGER NOT NULL, member NOT NULL, op TEXT, ts INTEGER, val,"
                " expires INTEGER, PRIMARY KEY (view, entity, level, tile, stat, member)) WITHOUT ROWID")
    con.execute("INSERT INTO __agg_cells VALUES ('v', '1', 0, 29000000, 0, '', '+', NULL, 3.0, 9e18)")
    con.commit()
    con.close()
    store = open_store("sqlite", tmp_path, request)
    view = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=ADDITIVE)
    keys = pa.table({"user_id": [1]})
    with pytest.raises(InputError, match=r"view 'v'.*quiver backfill v --online"):
        store.read_aggregates(view, keys, None, datetime.now(UTC))
    store.delete_aggregates("v")
    assert store.read_aggregates(view, keys, ["amount_count_10m"], datetime.now(UTC)).to_pylist() == [
        {"amount_count_10m": 0}]
    store.close()


def test_sqlite_groups_are_stored_up_to_their_last_tile(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """A packed group is kept only as long as its last tile written, and merges of
    shorter and longer strings (a late event in an earlier tile) still add slot by slot."""
    store = open_store("sqlite", tmp_path, request)
    view = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=ADDITIVE)
    lay = StateLayout(view)
    group_start = (int(time.time()) // 600 - 2) * 600  # a 10-minute group of minute tiles, 20-30 minutes ago
    evs = []

    def write(*offsets: int) -> list[int]:
        new = [{"user_id": 1, "amount": 2.5 + len(evs) + i,
                "event_timestamp": datetime.fromtimestamp(group_start + s, UTC)} for i, s in enumerate(offsets)]
        evs.extend(new)
        table = pa.table({"user_id": [1] * len(new), "amount": [e["amount"] for e in new],
                          "event_timestamp": pa.array([e["event_timestamp"] for e in new], pa.timestamp("us", tz="UTC"))})
        store.write_aggregates([lay.write(table)])
        con = store._con()
        return [n for n, in con.execute("SELECT length(data) FROM __agg_packed WHERE key LIKE 'p0:%' ORDER BY key")]

    (one,) = write(10)  # tile 0
    assert write(301, 302) == [6 * one]  # tile 5: the string grows to six tiles
    assert write(15) == [6 * one]  # late, tile 0 again: added into the longer string
    at = datetime.fromtimestamp(group_start + 599, UTC)
    refs = [(a.column, a.function, a.window, a.name) for a in ADDITIVE]
    got = store.read_aggregates(view, pa.table({"user_id": [1]}), None, at).to_pylist()
    assert got == window_aggregate([{"user_id": 1, "event_timestamp": at}], evs, ["user_id"], refs)
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_write_left_in_flight_answers_when_asked(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """``write_aggregates(wait=False)`` (the stream worker's overlap): the function it returns
    gives the answer of a synchronous write (True; False for offsets already held), the
    state is readable once it answered, and a failed write raises, never silently."""
    store = open_store(kind, tmp_path, request)
    view = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=ADDITIVE)
    lay = StateLayout(view)
    at = datetime.now(UTC)
    table = pa.table({"user_id": [1, 1], "amount": [2.0, 3.5],
                      "event_timestamp": pa.array([at - timedelta(seconds=30)] * 2, pa.timestamp("us", tz="UTC"))})
    first = store.write_aggregates([lay.write(table)], {"t/0": 2}, wait=False)
    assert first() is True
    assert store.read_aggregates(view, pa.table({"user_id": [1]}), ["amount_sum_10m"], at).to_pylist() == [
        {"amount_sum_10m": 5.5}]
    assert store.write_aggregates([lay.write(table)], {"t/0": 2}, wait=False)() is False  # held: not added twice
    with pytest.raises(AttributeError):  # raised by the call (Redis) or by its answer (SQLite's writer thread)
        store.write_aggregates([None], {"t/0": 3}, wait=False)()
    assert store.read_offsets("t/") == {"t/0": 2}  # the failed batch left nothing behind
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_state_of_other_aggregations_is_refused_not_misread(kind: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    """Stats are stored by position: a view that gains a function (here stddev, which adds
    packed slots) or a longer window would read the old state's bytes as its own. Reads
    and writes under the new definition name the view and the rebuild instead, the old
    state stays readable as it was, and once rebuilt the new definition reads and writes."""
    store = open_store(kind, tmp_path, request)
    windows = [timedelta(minutes=10), timedelta(hours=1)]
    old_aggs = [Aggregation("amount", f, window=w) for f in ("count", "sum") for w in windows]
    old = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=old_aggs)
    at = datetime.now(UTC)
    table = pa.table({"user_id": [1, 1, 1], "amount": [1.0, 2.0, 4.0],
                      "event_timestamp": pa.array([at - timedelta(minutes=m) for m in (3, 5, 30)],
                                                  pa.timestamp("us", tz="UTC"))})
    store.write_aggregates([StateLayout(old).write(table)])
    keys = pa.table({"user_id": [1]})
    want_old = [{"amount_count_10m": 2, "amount_count_1h": 3, "amount_sum_10m": 3.0, "amount_sum_1h": 7.0}]
    assert store.read_aggregates(old, keys, None, at).to_pylist() == want_old
    changed = [old_aggs + [Aggregation("amount", "stddev", window=w) for w in windows],
               old_aggs + [Aggregation("amount", "count", window=timedelta(days=2))]]
    for aggs in changed:
        new = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=aggs)
        with pytest.raises(InputError, match=r"view 'v'.*quiver backfill v --online"):
            store.read_aggregates(new, keys, None, at)
        with pytest.raises(InputError, match=r"view 'v'.*quiver backfill v --online"):
            store.write_aggregates([StateLayout(new).write(table)], {"t/0": 1})
    assert store.read_offsets("t/") == {}  # the refused batch recorded nothing
    assert store.read_aggregates(old, keys, None, at).to_pylist() == want_old
    store.delete_aggregates("v")  # what quiver backfill v --online starts with
    new = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=changed[0])
    store.write_aggregates([StateLayout(new).write(table)])
    refs = [(a.column, a.function, a.window, a.name) for a in changed[0]]
    evs = [{"user_id": 1, "amount": a, "event_timestamp": t} for a, t in
           zip(table.column("amount").to_pylist(), table.column("event_timestamp").to_pylist())]
    assert store.read_aggregates(new, keys, None, at).to_pylist() == window_aggregate(
        [{"user_id": 1, "event_timestamp": at}], evs, ["user_id"], refs)
    other = open_store(kind, tmp_path, request)  # another process, still on the old definition
    with pytest.raises(InputError, match=r"view 'v'"):
        other.read_aggregates(old, keys, None, at)
    other.close()
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("fast", [False, True], ids=["cells", "numpy"])  # min/max alone: the numpy fold
def test_nan_orders_above_numbers_and_text_compares_as_text(kind: str, fast: bool, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    """min, max and last over values with NaNs order a NaN above every number, as DuckDB
    does (max is NaN once the window holds one, min only when it holds nothing else),
    whether the NaN is in a tile written before or after the numbers beside it, in a raw
    window edge, or alone. Text values compare as text even when they look like numbers
    ("10" < "100" < "9"), also when a tile is merged across batches."""
    store = open_store(kind, tmp_path, request)
    windows = [timedelta(seconds=45), timedelta(minutes=10), timedelta(hours=2)]
    aggs = [Aggregation("amount", f, window=w) for f in ("min", "max", "last") for w in windows] + [
        Aggregation("code", f, window=w, dtype=types.String) for f in ("min", "max") for w in windows]
    if fast:
        aggs = [a for a in aggs if a.column == "amount" and a.function != "last"]
    view = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=aggs)
    lay = StateLayout(view)
    minute = datetime.fromtimestamp(int(time.time()) // 60 * 60, UTC)
    nan = float("nan")
    # (user, batch, minutes before the current minute's start, seconds into it, amount, code)
    plan = [(0, 0, 3, 5, 7.0, "9"), (0, 1, 3, 20, -2.5, "10"), (0, 2, 3, 40, 1e9, "100"),
            (1, 0, 3, 5, 7.0, "100"), (1, 1, 3, 20, nan, "9"), (1, 2, 3, 40, -2.5, "10"),  # NaN after a number
            (2, 0, 3, 5, nan, "10"), (2, 1, 3, 20, 7.0, "9"), (2, 2, 4, 10, None, "100"),  # NaN before numbers
            (3, 0, 3, 5, nan, "9"), (3, 1, 5, 5, nan, "10"), (3, 2, 90, 5, nan, "100"),  # only NaNs
            (4, 0, 3, 5, 7.0, "9"), (4, 1, 0, 0, nan, "10"), (4, 2, 90, 5, 1.5, "100"),  # NaN at the edge
            (5, 0, 3, 5, float("inf"), "9"), (5, 1, 3, 6, None, "10")]  # a lone infinity is a value
    evs = [{"user_id": u, "batch": b, "amount": a, "code": c,
            "event_timestamp": minute - timedelta(minutes=m) + timedelta(seconds=sec)} for u, b, m, sec, a, c in plan]
    for b in range(3):
        rows = [e for e in evs if e["batch"] == b]
        table = event_table(rows, text="code")
        store.write_aggregates([lay.write(table)], {"t/0": b})
    refs = [(a.column, a.function, a.window, a.name) for a in aggs]
    users = [0, 1, 2, 3, 4, 5, 9]

    def same(a: object, b: object) -> bool:
        return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)

    assert lay.fast(lay.plan(None, minute)) == fast
    for at in (minute + timedelta(seconds=30), minute + timedelta(minutes=2, seconds=50)):
        got = store.read_aggregates(view, pa.table({"user_id": users}), None, at).to_pylist()
        want = window_aggregate([{"user_id": u, "event_timestamp": at} for u in users], evs, ["user_id"], refs)
        assert want[1]["amount_max_10m"] != want[1]["amount_max_10m"] and want[5]["amount_min_10m"] == float("inf")
        assert fast or want[0]["code_min_10m"] == "10"
        for u, g, w in zip(users, got, want, strict=True):
            for name in w:
                assert same(g[name], w[name]), (kind, at - minute, u, name, g[name], w[name])
    store.close()


@pytest.mark.parametrize("aggs", [NUMERIC, ADDITIVE], ids=["numeric", "additive"])
def test_near_cache_reads_follow_another_writer(aggs: list[Aggregation], tmp_path: Path,
                                                request: pytest.FixtureRequest) -> None:
    """A model server's store with a near cache, a stream worker's store writing: after
    each batch (out of time order) and its invalidations, every read equals the oracle
    over the events written so far, and a packed read repeated without a write is
    answered from memory."""
    from tests.fixtures.redis import settle_near_cache

    writer = open_store("redis", tmp_path, request)
    reader = open_store("redis-near", tmp_path, request)
    view = FeatureView(name="v", entities=[USER], source=PushSource("s"), aggregations=aggs)
    lay = StateLayout(view)
    evs = events(900, 11)
    refs = [(a.column, a.function, a.window, a.name) for a in aggs]
    order = np.random.default_rng(2).permutation(len(evs))
    seen: list[dict] = []
    now = datetime.now(UTC)
    for k, part in enumerate(np.array_split(order, 5)):
        rows = [evs[i] for i in part]
        seen += rows
        table = event_table(rows)
        writer.write_aggregates([lay.write(table, now_us=int(time.time() * 1e6))], {"t/0": k})
        settle_near_cache(reader)
        for at in (now, now + timedelta(minutes=9, seconds=59)):
            for u in (0, 1, 2, 3, 77):
                want = window_aggregate([{"user_id": u, "event_timestamp": at}], seen, ["user_id"], refs)[0]
                for _ in range(2):  # the second read: from memory
                    got = reader.read_aggregates(view, pa.table({"user_id": [u]}), None, at).to_pylist()[0]
                    assert got == want, (k, u, at - now)
    if aggs is ADDITIVE:  # the packed read (min, max, last and distinct counts read cells of Redis hashes)
        assert reader._near.hits > reader._near.misses > 0
    writer.delete_aggregates("v")
    settle_near_cache(reader)
    empty = reader.read_aggregates(view, pa.table({"user_id": [0]}), None, now).to_pylist()[0]
    assert all(v in (0, None) for v in empty.values())
    writer.close()
    reader.close()
