"""Online benchmark: materialization and in-process online reads, beside the floors.

On the shared fraud workload (``../shared/bench/datagen.py``, generated into
``bench-data/``), for SQLite and for Redis (a redis-server started here on a
free loopback port):

* materialization of user_profile + merchant_stats over the full range (the
  dual write: compacted offline history + latest values online), beside a
  hand-written floor doing the same work (DuckDB dedupe+sort of the history into
  Parquet, DuckDB latest-per-key, a plain Python loop into the store);
* an incremental run picking up one new hour;
* ``store.get_online_features`` for 1 and 100 entities x the 8 features of
  the two views: p50/p99/p99.9 over ``--calls`` calls after warm-up, beside the
  floors (a dict lookup; one raw SQLite primary-key SELECT per view; one raw
  redis-py MGET).

Run by hand, never in CI::

    .venv/bin/python bench/online.py                 # medium scale
    .venv/bin/python bench/online.py --scale small --calls 2000
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATAGEN = ROOT.parent / "shared" / "bench" / "datagen.py"
FEATURES = [
    "user_profile:account_age_days", "user_profile:credit_limit", "user_profile:country",
    "user_profile:avg_amount_90d", "user_profile:num_orders_90d",
    "merchant_stats:merchant_risk", "merchant_stats:merchant_tx_count_1h", "merchant_stats:merchant_avg_amount_1h",
]
DEFS = '''
from quiver import Entity, FeatureView, Field, FileSource, types
user = Entity(name="user", join_keys=["user_id"])
merchant = Entity(name="merchant", join_keys=["merchant_id"])
def src(name):
    return FileSource(path=f"{DATA}/{name}.parquet", timestamp_field="event_timestamp",
                      created_timestamp_column="created_timestamp")
user_profile = FeatureView(name="user_profile", entities=[user], source=src("user_profile"), schema=[
    Field("account_age_days", types.Int64), Field("credit_limit", types.Float64), Field("country", types.String),
    Field("avg_amount_90d", types.Float64), Field("num_orders_90d", types.Int64)])
merchant_stats = FeatureView(name="merchant_stats", entities=[merchant], source=src("merchant_stats"), schema=[
    Field("merchant_risk", types.Float64), Field("merchant_tx_count_1h", types.Int64),
    Field("merchant_avg_amount_1h", types.Float64)])
'''


def data_dir(scale: str) -> Path:
    out = ROOT / "bench-data"
    d = out / scale
    if not (d / "merchant_stats.parquet").exists():
        print(f"generating the {scale} workload into {d} ...", flush=True)
        subprocess.run([sys.executable, str(DATAGEN), "--scale", scale, "--out", str(out)], check=True)
    return d


def start_redis(folder: Path) -> tuple[int, Callable[[], None]]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(folder), "--daemonize", "yes", "--pidfile", str(folder / "r.pid"),
                    "--logfile", str(folder / "r.log")], check=True)
    import redis

    c = redis.Redis(port=port)
    for _ in range(500):
        try:
            c.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.01)
    return port, lambda: subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True)


def make_repo(folder: Path, data: Path, online: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "quiver.yaml").write_text(
        f"project: bench\nregistry: registry.db\noffline: {{engine: duckdb, path: offline}}\nonline: {online}\n"
    )
    (folder / "features.py").write_text(DEFS.replace("{DATA}", str(data)))
    return folder


def time_range(data: Path) -> tuple[datetime, datetime]:
    import duckdb

    lo, hi = duckdb.sql(f"SELECT min(event_timestamp), max(event_timestamp) FROM '{data}/merchant_stats.parquet'").fetchall()[0]
    lo = lo.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return lo, hi.astimezone(UTC) + timedelta(microseconds=1)


# -- materialization ---------------------------------------------------------------


def floor_materialize(data: Path, out: Path, sink: str, port: int | None) -> tuple[float, int]:
    """The hand-written dual write: history into Parquet, latest per key in a Python loop into the store."""
    import duckdb
    import orjson

    t0 = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    db = sqlite3.connect(out / "floor.db", isolation_level=None) if sink == "sqlite" else None
    if db is not None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    for view, key in (("user_profile", "user_id"), ("merchant_stats", "merchant_id")):
        con.execute(
            f"COPY (SELECT * FROM '{data}/{view}.parquet' QUALIFY row_number() OVER (PARTITION BY {key}, event_timestamp "
            f"ORDER BY created_timestamp DESC) = 1 ORDER BY {key}, event_timestamp) TO '{out}/{view}.parquet' (FORMAT parquet)"
        )
        latest = con.sql(
            f"SELECT * FROM '{out}/{view}.parquet' QUALIFY row_number() OVER (PARTITION BY {key} "
            f"ORDER BY event_timestamp DESC, created_timestamp DESC) = 1"
        ).to_arrow_table()
        rows = latest.to_pylist()
        n += len(rows)
        if db is not None:
            cols = latest.column_names
            db.execute(f"CREATE TABLE IF NOT EXISTS {view} ({', '.join(cols)}, PRIMARY KEY ({key})) WITHOUT ROWID")
            db.execute("BEGIN")
            db.executemany(f"INSERT OR REPLACE INTO {view} VALUES ({', '.join('?' * len(cols))})",
                           [tuple(r.values()) for r in rows])
            db.execute("COMMIT")
        else:
            import redis

            c = redis.Redis(port=port)
            pipe = c.pipeline(transaction=False)
            for i, r in enumerate(rows):
                pipe.set(f"floor:{view}:{r[key]}", orjson.dumps(r, default=str))
                if i % 5000 == 4999:
                    pipe.execute()
            pipe.execute()
    return time.perf_counter() - t0, n


def bench_materialize(repo: Path, lo: datetime, hi: datetime) -> dict[str, Any]:
    from quiver import FeatureStore

    with FeatureStore(repo) as store:
        store.apply()
        t0 = time.perf_counter()
        res = store.materialize(lo, hi - timedelta(hours=1))
        full = time.perf_counter() - t0
        t0 = time.perf_counter()
        inc = store.materialize_incremental(hi)
        incremental = time.perf_counter() - t0
    return {"seconds": full, "keys": res.rows, "incremental_seconds": incremental, "incremental_keys": inc.rows}


# -- reads -------------------------------------------------------------------------


def pct(samples: list[float]) -> str:
    s = sorted(samples)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] * 1e6

    return f"p50 {at(0.5):8.1f} us   p99 {at(0.99):8.1f} us   p99.9 {at(0.999):8.1f} us"


def timed(fn: Callable[[], Any], calls: int, warmup: int = 1000) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    clock = time.perf_counter
    for _ in range(calls):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def bench_reads(repo: Path, backend: str, port: int | None, calls: int, users: int, merchants: int) -> None:
    from quiver import FeatureStore

    rnd = random.Random(1)
    store = FeatureStore(repo)
    one = [[{"user_id": rnd.randrange(users), "merchant_id": rnd.randrange(merchants)}] for _ in range(64)]
    hundred = [[{"user_id": rnd.randrange(users), "merchant_id": rnd.randrange(merchants)} for _ in range(100)]
               for _ in range(16)]
    resp = store.get_online_features(FEATURES, entity_rows=one[0])
    assert all(s == "present" for v in resp.statuses.values() for s in v), resp.statuses
    for label, batches in (("1 entity", one), ("100 entities", hundred)):
        it = iter(range(10**9))
        n = calls if label == "1 entity" else max(calls // 5, 2000)
        q = timed(lambda: store.get_online_features(FEATURES, entity_rows=batches[next(it) % len(batches)]).to_dict(), n)
        print(f"  {backend:6s} quiver  {label:12s} {pct(q)}   ({n} calls)")
    store.close()
    # floors
    if backend == "sqlite":
        db = sqlite3.connect(repo / "online.db")
        u = "SELECT account_age_days, credit_limit, country, avg_amount_90d, num_orders_90d, __event_us FROM user_profile WHERE user_id = ?"
        m = "SELECT merchant_risk, merchant_tx_count_1h, merchant_avg_amount_1h, __event_us FROM merchant_stats WHERE merchant_id = ?"
        it = iter(range(10**9))

        def raw() -> Any:
            r = one[next(it) % 64][0]
            return db.execute(u, (r["user_id"],)).fetchone(), db.execute(m, (r["merchant_id"],)).fetchone()

        print(f"  {backend:6s} floor   1 entity     {pct(timed(raw, calls))}   (one PK SELECT per view)")
    else:
        import redis

        c = redis.Redis(port=port)
        keys = [[f"bench:user_profile:{{{r[0]['user_id']}}}", f"bench:merchant_stats:{{{r[0]['merchant_id']}}}"] for r in one]
        it = iter(range(10**9))
        print(f"  {backend:6s} floor   1 entity     {pct(timed(lambda: c.mget(keys[next(it) % 64]), calls))}   (one MGET)")
        keys100 = [[f"bench:user_profile:{{{r['user_id']}}}" for r in b] + [f"bench:merchant_stats:{{{r['merchant_id']}}}" for r in b]
                   for b in hundred]
        it = iter(range(10**9))
        print(f"  {backend:6s} floor   100 entities {pct(timed(lambda: c.mget(keys100[next(it) % 16]), calls // 5))}   (one MGET)")
    d = {i: (1, 2.0, "US", 3.0, 4) for i in range(users)}
    it = iter(range(10**9))
    print(f"  {'dict':6s} floor   1 entity     {pct(timed(lambda: d.get(one[next(it) % 64][0]['user_id']), calls))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--backends", default="sqlite,redis")
    args = ap.parse_args()
    data = data_dir(args.scale)
    lo, hi = time_range(data)
    import duckdb

    users = duckdb.sql(f"SELECT count(DISTINCT user_id) FROM '{data}/user_profile.parquet'").fetchall()[0][0]
    merchants = duckdb.sql(f"SELECT count(DISTINCT merchant_id) FROM '{data}/merchant_stats.parquet'").fetchall()[0][0]
    work = Path(tempfile.mkdtemp(prefix="quiver-bench-online-"))
    stop: Callable[[], Any] = lambda: None  # noqa: E731
    try:
        port = None
        if "redis" in args.backends:
            port, stop = start_redis(work)
        print(f"workload: {args.scale} ({data}), {users:,} users, {merchants:,} merchants, events {lo} .. {hi}")
        for backend in args.backends.split(","):
            online = "{type: sqlite, path: online.db}" if backend == "sqlite" else f"{{type: redis, url: 'redis://127.0.0.1:{port}/0'}}"
            repo = make_repo(work / f"repo-{backend}", data, online)
            fl, fn = floor_materialize(data, work / f"floor-{backend}", backend, port)
            m = bench_materialize(repo, lo, hi)
            print(f"materialize {backend}: quiver {m['seconds']:.2f}s ({m['keys'] / m['seconds']:,.0f} keys/s, {m['keys']:,} keys)"
                  f"   floor {fl:.2f}s ({fn / fl:,.0f} keys/s)   ratio {m['seconds'] / fl:.2f}x")
            print(f"incremental {backend}: one new hour, {m['incremental_keys']:,} keys in {m['incremental_seconds']:.3f}s")
            bench_reads(repo, backend, port, args.calls, users, merchants)
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
