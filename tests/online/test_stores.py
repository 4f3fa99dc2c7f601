"""Conformance of the online stores (SQLite and Redis, on a real redis-server):
writes never go backwards, every type round-trips, keys are batched per call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver import Entity, FeatureView, Field, FileSource, types
from quiver.config import RepoConfig
from quiver.errors import ConfigError, InputError
from quiver.plugins import load

TS = pa.timestamp("us", tz="UTC")
T0 = datetime(2026, 1, 1, tzinfo=UTC)

user = Entity(name="user", join_keys=["user_id"])
shop = Entity(name="shop", join_keys=["shop"], dtypes={"shop": types.String})
SRC = FileSource(path="data/x.parquet", timestamp_field="event_timestamp", created_timestamp_column="created_timestamp")
VIEW = FeatureView(name="v", entities=[user], source=SRC, schema=[Field("x", types.Float64), Field("s", types.String)])
PAIR = FeatureView(name="pair", entities=[user, shop], source=SRC, schema=[Field("n", types.Int64)])
TYPED = FeatureView(
    name="typed", entities=[shop], source=SRC,
    schema=[Field("i32", types.Int32), Field("f32", types.Float32), Field("b", types.Bool), Field("raw", types.Bytes),
            Field("when", types.UnixTimestamp), Field("arr", types.Array(types.Int64)), Field("txt", types.String)],
)


def make_store(backend: str, tmp_path: Path, request: pytest.FixtureRequest, **extra: Any) -> Any:
    if backend == "sqlite":
        online = {"type": "sqlite", "path": "online.db", **extra}
    else:
        online = {"type": "redis", "url": request.getfixturevalue("redis_clean_url"), **extra}
    cfg = RepoConfig(repo_path=tmp_path, project="t", registry="r.db", online=online)
    return load("online", backend)(cfg)


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    s = make_store(backend, tmp_path, request)
    yield s
    s.close()


def rows(view: FeatureView, data: list[dict[str, Any]]) -> pa.Table:
    cols: dict[str, Any] = {}
    for k in view.join_keys:
        cols[k] = pa.array([d[k] for d in data], type=next(e.dtypes[k] for e in view.entities if k in e.join_keys).arrow)
    for f in view.features:
        cols[f.name] = pa.array([d.get(f.name) for d in data], type=f.dtype.arrow)
    cols["event_timestamp"] = pa.array([d["ev"] for d in data], type=TS)
    cols["created_timestamp"] = pa.array([d.get("cr", d["ev"]) for d in data], type=TS)
    return pa.table(cols)


def test_write_then_lookup_and_read(store: Any) -> None:
    store.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 1.5, "s": "a", "ev": T0}, {"user_id": 2, "x": None, "s": "b", "ev": T0}]))
    got = store.lookup([(VIEW, [(2,), (3,), (1,)], ["s", "x"])])[0]
    t0 = int(T0.timestamp() * 1e6)
    assert got == [("b", None, t0), None, ("a", 1.5, t0)]
    table = store.read(VIEW, pa.table({"user_id": [1, 9]}), ["x"])
    assert table.column("x").to_pylist() == [1.5, None]
    assert table.column("event_timestamp").to_pylist() == [T0, None]
    assert table.schema.field("event_timestamp").type == TS


def test_never_goes_backwards(store: Any) -> None:
    t1, t2 = T0, T0 + timedelta(hours=1)
    store.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 2.0, "ev": t2}]))
    store.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 1.0, "ev": t1, "cr": t2 + timedelta(days=1)}]))  # older event
    assert store.lookup([(VIEW, [(1,)], ["x"])])[0][0][0] == 2.0
    # same event time, later created time: a correction wins
    store.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 3.0, "ev": t2, "cr": t2 + timedelta(minutes=30)}]))
    assert store.lookup([(VIEW, [(1,)], ["x"])])[0][0][0] == 3.0
    # and the original, written again, does not undo it
    store.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 2.0, "ev": t2}]))
    assert store.lookup([(VIEW, [(1,)], ["x"])])[0][0][0] == 3.0


def test_types_round_trip(store: Any) -> None:
    when = datetime(2025, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    row = {"shop": "a|b}{c", "i32": -7, "f32": 0.5, "b": True, "raw": b"\x00\xff", "when": when, "arr": [1, 2, 3],
           "txt": 'quote " and \\ and é', "ev": T0}
    store.write(TYPED, rows(TYPED, [row, {"shop": "a", "ev": T0}]))
    feats = TYPED.feature_names
    got = store.lookup([(TYPED, [("a|b}{c",), ("a",), ("a|b",)], feats)])[0]
    assert got[0][:-1] == tuple(row[f] for f in feats)
    assert got[1][:-1] == (None,) * len(feats)
    assert got[2] is None
    table = store.read(TYPED, pa.table({"shop": ["a|b}{c"]}), feats)
    assert table.column("arr").to_pylist() == [[1, 2, 3]]
    assert table.column("when").to_pylist() == [when]


def test_composite_keys_and_many_keys(store: Any) -> None:
    data = [{"user_id": u, "shop": s, "n": u * 10 + len(s), "ev": T0} for u in range(300) for s in ("x", "yy")]
    assert store.write(PAIR, rows(PAIR, data)) == 600
    keys = [(u, s) for u in range(299, -5, -1) for s in ("yy", "zz", "x")]
    got = store.lookup([(PAIR, keys, ["n"]), (VIEW, [(1,)], ["x"])])
    expect = [None if u < 0 or s == "zz" else (u * 10 + len(s),) for u, s in keys]
    assert [None if g is None else g[:-1] for g in got[0]] == expect
    assert got[1] == [None]


def test_view_gains_a_feature(store: Any) -> None:
    store.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 1.0, "s": "a", "ev": T0}]))
    wider = FeatureView(name="v", entities=[user], source=SRC,
                        schema=[Field("s", types.String), Field("y", types.Int64), Field("x", types.Float64)])
    assert store.lookup([(wider, [(1,)], ["x", "y", "s"])])[0][0][:-1] == (1.0, None, "a")
    store.write(wider, rows(wider, [{"user_id": 2, "x": 2.0, "y": 5, "s": "b", "ev": T0}]))
    assert store.lookup([(wider, [(2,), (1,)], ["y", "x"])])[0] == [(5, 2.0, store_ts(T0)), (None, 1.0, store_ts(T0))]


def store_ts(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def test_delete_view(store: Any) -> None:
    store.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 1.0, "ev": T0}]))
    store.write(PAIR, rows(PAIR, [{"user_id": 1, "shop": "a", "n": 1, "ev": T0}]))
    store.delete_view("v")
    assert store.lookup([(VIEW, [(1,)], ["x"]), (PAIR, [(1, "a")], ["n"])]) == [[None], [(1, store_ts(T0))]]


def test_missing_columns_are_an_input_error(store: Any) -> None:
    with pytest.raises(InputError, match="event_timestamp"):
        store.write(VIEW, pa.table({"user_id": [1], "x": [1.0]}))


def test_config_keys_are_checked(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with pytest.raises(ConfigError, match="unknown key online.pth"):
        make_store(backend, tmp_path, request, pth="x")


# -- property: any order of writes ends in the newest row per key ---------------------

write_rows = st.lists(
    st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 2), st.integers(-1000, 1000)),
    min_size=1, max_size=30,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=write_rows, split=st.integers(1, 6))
def test_any_write_order_converges(store: Any, data: list[tuple[int, int, int, int]], split: int) -> None:
    store.delete_view("v")
    batches = [data[i::split] for i in range(split)]
    for b in batches:
        if b:
            store.write(VIEW, rows(VIEW, [
                {"user_id": k, "x": float(v), "ev": T0 + timedelta(hours=e), "cr": T0 + timedelta(hours=c)}
                for k, e, c, v in b
            ]))
    got = store.lookup([(VIEW, [(k,) for k in range(5)], ["x"])])[0]
    for k in range(5):
        mine = [(e, c) for kk, e, c, _ in data if kk == k]
        if not mine:
            assert got[k] is None
            continue
        best = max(mine)
        # ties on (event, created) may keep any of the tied values
        allowed = {float(v) for kk, e, c, v in data if kk == k and (e, c) == best}
        assert got[k][0] in allowed
        assert got[k][1] == store_ts(T0 + timedelta(hours=best[0]))


def test_one_key_in_each_of_several_views_equals_reading_them_apart(store: Any) -> None:
    """One entity's vector is answered in one statement on SQLite: the same rows as view by view."""
    when = datetime(2025, 5, 6, tzinfo=UTC)
    store.write(TYPED, rows(TYPED, [{"shop": "a", "b": False, "when": when, "arr": [1], "ev": T0}]))
    store.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 0.5, "s": "z", "ev": T0}]))
    store.write(PAIR, rows(PAIR, [{"user_id": 1, "shop": "a", "n": 3, "ev": T0}]))
    reads = [(TYPED, [("a",)], ["when", "b", "arr"]), (VIEW, [(2,)], ["x"]), (PAIR, [(1, "a")], ["n"]),
             (VIEW, [(1,)], ["s", "x"])]
    together = store.lookup(reads)
    apart = [store.lookup([r])[0] for r in reads]
    assert together == apart == [[(when, False, [1], store_ts(T0))], [None], [(3, store_ts(T0))],
                                 [("z", 0.5, store_ts(T0))]]


def test_redis_busy_poll_reads_what_a_blocking_read_reads(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """``busy_poll_us`` changes how a read waits for its reply, never what it reads; a bad
    value is a config error that says what to write."""
    for bad in (-1, 1.5, "300", True, 200_000):
        with pytest.raises(ConfigError, match="online.busy_poll_us must be microseconds"):
            make_store("redis", tmp_path, request, busy_poll_us=bad)
    plain = make_store("redis", tmp_path, request)
    polled = make_store("redis", tmp_path, request, busy_poll_us=300)
    plain.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 1.5, "s": "a", "ev": T0}]))
    for _ in range(3):  # the same connection and poller again
        for key in (1, 9):
            want = plain.lookup([(VIEW, [(key,)], ["s", "x"])])
            assert polled.lookup([(VIEW, [(key,)], ["s", "x"])]) == want
    assert polled._reader.polled is polled._reader.conn._sock  # the reads did poll
    polled._reader.conn.disconnect()  # a new socket is registered anew
    assert polled.lookup([(VIEW, [(1,)], ["x"])])[0][0][0] == 1.5
    assert polled._reader.polled is polled._reader.conn._sock
    plain.close()
    polled.close()


def test_redis_near_cache_reads_what_redis_holds(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """``near_cache_keys``: a repeated read is answered from memory, and whatever changes
    the keys (another client's write or delete, a flush, a lost connection, this store's
    own write) is read anew: the near store always reads what a plain one reads."""
    import redis

    from tests.fixtures.redis import settle_near_cache

    for bad in (-1, 1.5, "10", True, 10**9):
        with pytest.raises(ConfigError, match="online.near_cache_keys must be a number of keys"):
            make_store("redis", tmp_path, request, near_cache_keys=bad)
    near = make_store("redis", tmp_path, request, near_cache_keys=1000)
    other = make_store("redis", tmp_path, request)  # another process's store

    def same(keys: list[int] = [1, 2, 9]) -> None:  # noqa: B006
        want = other.lookup([(VIEW, [(k,) for k in keys], ["s", "x"])])
        assert near.lookup([(VIEW, [(k,) for k in keys], ["s", "x"])]) == want

    other.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 1.5, "s": "a", "ev": T0},
                                  {"user_id": 2, "x": 2.5, "s": "b", "ev": T0}]))
    same()
    misses = near._near.misses
    same()
    assert near._near.misses == misses and near._near.hits >= 3  # from memory
    other.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 7.0, "s": "c", "ev": T0 + timedelta(1)},
                                  {"user_id": 9, "x": 9.0, "s": "n", "ev": T0}]))  # a key that had no value
    settle_near_cache(near)
    same()
    assert near.lookup([(VIEW, [(9,)], ["x"])])[0][0][0] == 9.0
    misses = near._near.misses
    near.write(VIEW, rows(VIEW, [{"user_id": 2, "x": 3.5, "s": "own", "ev": T0 + timedelta(1)}]))
    assert [r[0] for r in near.lookup([(VIEW, [(2,), (9,)], ["s"])])[0]] == ["own", "n"]  # its own write, at once:
    assert near._near.misses == misses + 2  # the store's write started its cache over, not waiting for Redis
    other.delete_view("v")
    settle_near_cache(near)
    assert near.lookup([(VIEW, [(1,), (2,), (9,)], ["x"])]) == [[None, None, None]]
    other.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 4.0, "s": "d", "ev": T0}]))
    settle_near_cache(near)
    same()
    redis.Redis.from_url(near.url).flushdb()  # a flush invalidates everything it tracked
    settle_near_cache(near)
    assert near.lookup([(VIEW, [(1,)], ["x"])]) == [[None]]
    other.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 5.0, "s": "e", "ev": T0}]))
    settle_near_cache(near)
    same()
    client = redis.Redis.from_url(near.url)  # the tracked connection killed: tracking is gone with it
    client.client_kill_filter(_type="normal", skipme=True)
    other.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 6.0, "s": "f", "ev": T0 + timedelta(2)}]))
    same()
    small = make_store("redis", tmp_path, request, near_cache_keys=2)  # more keys than it keeps
    for _ in range(3):
        want = other.lookup([(VIEW, [(1,), (2,), (9,), (4,)], ["x"])])
        assert small.lookup([(VIEW, [(1,), (2,), (9,), (4,)], ["x"])]) == want
    for s in (near, other, small):
        s.close()


def test_redis_near_cache_read_is_of_one_instant(tmp_path: Path, request: pytest.FixtureRequest,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalidation still on its way when a read starts reaches the connection before
    the reply of the read's MGET: the key it names is asked again, so a read never
    returns a cached old value beside a new one."""
    from quiver.online.near_cache import NearCache

    near = make_store("redis", tmp_path, request, near_cache_keys=1000)
    other = make_store("redis", tmp_path, request)
    other.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 1.0, "s": "a", "ev": T0}]))
    assert near.lookup([(VIEW, [(1,)], ["x"])])[0][0][0] == 1.0  # held in memory
    other.write(VIEW, rows(VIEW, [{"user_id": 1, "x": 2.0, "s": "b", "ev": T0 + timedelta(1)},
                                  {"user_id": 2, "x": 2.0, "s": "b", "ev": T0 + timedelta(1)}]))
    monkeypatch.setattr(NearCache, "_drain", staticmethod(lambda conn: None))  # as if not yet arrived
    assert [r[0] for r in near.lookup([(VIEW, [(1,), (2,)], ["x"])])[0]] == [2.0, 2.0]
    near.close()
    other.close()
