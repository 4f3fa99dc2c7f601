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
  the two views: p50/p99/p99.9 over ``--calls`` calls after warm-up, taken in
  turn call by call with the floors (a dict lookup; one raw SQLite
  primary-key SELECT per view, or one ``IN`` query per view for 100
  entities; one raw redis-py MGET);
* with ``--feast``, Feast 0.67 on the same data and backends, in its own venv
  (``bench/.venv-feast``, made on first use).

The machine may be shared: materializations run ``--repeat`` times,
interleaved with their floor, each on fresh folders, and the best wall time
of each is kept (with the process CPU seconds of that run); ratios are always
taken within one run of this script. The redis-server is checked to run
without persistence, and the client to parse with hiredis.

Run by hand, never in CI::

    .venv/bin/python bench/online.py                 # medium scale
    .venv/bin/python bench/online.py --scale small --calls 2000
    .venv/bin/python bench/online.py --feast         # + Feast 0.67
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
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
FEAST_VENV = ROOT / "bench" / ".venv-feast"
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


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed_floor(data: Path, out: Path, sink: str, port: int | None) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    if port is not None:
        import redis

        redis.Redis(port=port).flushdb()
    c0 = cpu_seconds()
    seconds, keys = floor_materialize(data, out, sink, port)
    return {"seconds": seconds, "cpu": cpu_seconds() - c0, "keys": keys}


def bench_materialize(repo: Path, lo: datetime, hi: datetime) -> dict[str, Any]:
    """A full materialization into a fresh repository (nothing compacted yet), then one new hour."""
    from quiver import FeatureStore

    with FeatureStore(repo) as store:
        store.apply()
        c0, t0 = cpu_seconds(), time.perf_counter()
        res = store.materialize(lo, hi - timedelta(hours=1))
        full, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        t0 = time.perf_counter()
        inc = store.materialize_incremental(hi)
        incremental = time.perf_counter() - t0
    return {"seconds": full, "cpu": cpu, "keys": res.rows, "incremental_seconds": incremental,
            "incremental_keys": inc.rows}


# -- reads -------------------------------------------------------------------------


def pct(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)

    def at(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))] * 1e6

    return {"p50": at(0.5), "p99": at(0.99), "p99.9": at(0.999)}


def show(label: str, p: dict[str, float], note: str = "") -> None:
    print(f"  {label:34s} p50 {p['p50']:8.1f} us   p99 {p['p99']:8.1f} us   p99.9 {p['p99.9']:8.1f} us   {note}",
          flush=True)


def interleaved(fns: dict[str, Callable[[int], Any]], calls: int, warmup: int = 1000) -> dict[str, dict[str, float]]:
    """Time each function ``calls`` times, taking turns call by call, so that a
    shared machine's load weighs on quiver and on its floors alike."""
    for i in range(warmup):
        for fn in fns.values():
            fn(i)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    clock = time.perf_counter
    items = [(fn, samples[k]) for k, fn in fns.items()]
    for i in range(calls):
        for fn, out in items:
            t0 = clock()
            fn(i)
            out.append(clock() - t0)
    return {k: pct(v) for k, v in samples.items()}


def bench_reads(repo: Path, backend: str, port: int | None, calls: int, users: int, merchants: int) -> dict[str, Any]:
    """quiver and its floors, 1 and 100 entities, measured call by call in turn."""
    from quiver import FeatureStore

    rnd = random.Random(1)
    store = FeatureStore(repo)
    one = [[{"user_id": rnd.randrange(users), "merchant_id": rnd.randrange(merchants)}] for _ in range(64)]
    hundred = [[{"user_id": rnd.randrange(users), "merchant_id": rnd.randrange(merchants)} for _ in range(100)]
               for _ in range(16)]
    resp = store.get_online_features(FEATURES, entity_rows=one[0])
    assert all(s == "present" for v in resp.statuses.values() for s in v), resp.statuses
    get = store.get_online_features
    n100 = max(calls // 5, 2000)
    d = {i: (1, 2.0, "US", 3.0, 4) for i in range(users)}
    fns1: dict[str, Callable[[int], Any]] = {
        "quiver 1": lambda i: get(FEATURES, entity_rows=one[i % 64]).to_dict(),
        "dict 1": lambda i: d.get(one[i % 64][0]["user_id"]),
    }
    fns100: dict[str, Callable[[int], Any]] = {"quiver 100": lambda i: get(FEATURES, entity_rows=hundred[i % 16]).to_dict()}
    if backend == "sqlite":
        db = sqlite3.connect(repo / "online.db")
        ucols = "account_age_days, credit_limit, country, avg_amount_90d, num_orders_90d, __event_us"
        mcols = "merchant_risk, merchant_tx_count_1h, merchant_avg_amount_1h, __event_us"
        u = f"SELECT {ucols} FROM user_profile WHERE user_id = ?"
        m = f"SELECT {mcols} FROM merchant_stats WHERE merchant_id = ?"
        marks = ",".join("?" * 100)
        u100 = f"SELECT user_id, {ucols} FROM user_profile WHERE user_id IN ({marks})"
        m100 = f"SELECT merchant_id, {mcols} FROM merchant_stats WHERE merchant_id IN ({marks})"

        def raw(i: int) -> Any:
            r = one[i % 64][0]
            return db.execute(u, (r["user_id"],)).fetchone(), db.execute(m, (r["merchant_id"],)).fetchone()

        def raw100(i: int) -> Any:
            b = hundred[i % 16]
            return (db.execute(u100, [r["user_id"] for r in b]).fetchall(),
                    db.execute(m100, [r["merchant_id"] for r in b]).fetchall())

        fns1["floor 1"], fns100["floor 100"] = raw, raw100
        notes = {"floor 1": "(one PK SELECT per view)", "floor 100": "(one IN query per view, rows unordered)"}
    else:
        import redis

        c = redis.Redis(port=port)
        keys = [[f"bench:user_profile:{{{r[0]['user_id']}}}", f"bench:merchant_stats:{{{r[0]['merchant_id']}}}"] for r in one]
        keys100 = [[f"bench:user_profile:{{{r['user_id']}}}" for r in b] + [f"bench:merchant_stats:{{{r['merchant_id']}}}" for r in b]
                   for b in hundred]
        fns1["floor 1"] = lambda i: c.mget(keys[i % 64])
        fns100["floor 100"] = lambda i: c.mget(keys100[i % 16])
        notes = {"floor 1": "(one MGET, values not decoded)", "floor 100": "(one MGET, values not decoded)"}
    out = {**interleaved(fns1, calls), **interleaved(fns100, n100)}
    for k in ("quiver 1", "floor 1", "quiver 100", "floor 100", "dict 1"):
        n = calls if k.endswith(" 1") else n100
        show(f"{backend} {k} entit{'y' if k.endswith(' 1') else 'ies'}", out[k], notes.get(k, f"({n} calls)"))
    store.close()
    return out


def check_redis(port: int) -> None:
    """The harness itself: no persistence on the server, hiredis in the client, TCP_NODELAY set."""
    import redis
    from redis.utils import HIREDIS_AVAILABLE

    c = redis.Redis(port=port)
    cfg = {**c.config_get("save"), **c.config_get("appendonly")}
    conn = c.connection_pool.get_connection()
    try:
        import socket

        nodelay = conn._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) if conn._sock else "?"
        parser = type(conn._parser).__name__
    finally:
        c.connection_pool.release(conn)
    print(f"redis-server {c.info('server')['redis_version']}: save={cfg['save']!r} appendonly={cfg['appendonly']}; "
          f"client parser {parser} (hiredis available: {HIREDIS_AVAILABLE}), TCP_NODELAY={nodelay}")
    c.close()


# -- Feast 0.67 (optional) ----------------------------------------------------------

FEAST_SCRIPT = r'''
import json, random, sys, time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String
data, repo, online, lo, hi, calls, users, merchants = sys.argv[1:9]
Path(repo).mkdir(parents=True, exist_ok=True)
Path(repo, "feature_store.yaml").write_text(
    "project: bench\nregistry: registry.db\nprovider: local\nentity_key_serialization_version: 3\n"
    "offline_store: {type: duckdb}\n" + online + "\n")
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)
def src(n):
    return FileSource(path=f"{data}/{n}.parquet", timestamp_field="event_timestamp",
                      created_timestamp_column="created_timestamp")
up = FeatureView(name="user_profile", entities=[user], ttl=timedelta(days=3650), source=src("user_profile"),
    schema=[Field(name="account_age_days", dtype=Int64), Field(name="credit_limit", dtype=Float64),
            Field(name="country", dtype=String), Field(name="avg_amount_90d", dtype=Float64),
            Field(name="num_orders_90d", dtype=Int64)])
ms = FeatureView(name="merchant_stats", entities=[merchant], ttl=timedelta(days=3650), source=src("merchant_stats"),
    schema=[Field(name="merchant_risk", dtype=Float64), Field(name="merchant_tx_count_1h", dtype=Int64),
            Field(name="merchant_avg_amount_1h", dtype=Float64)])
store = FeatureStore(repo_path=repo)
store.apply([user, merchant, up, ms])
t = time.perf_counter()
store.materialize(datetime.fromisoformat(lo), datetime.fromisoformat(hi))
out = {"materialize": time.perf_counter() - t}
feats = ["user_profile:account_age_days", "user_profile:credit_limit", "user_profile:country",
         "user_profile:avg_amount_90d", "user_profile:num_orders_90d", "merchant_stats:merchant_risk",
         "merchant_stats:merchant_tx_count_1h", "merchant_stats:merchant_avg_amount_1h"]
rnd = random.Random(1)
calls, users, merchants = int(calls), int(users), int(merchants)
for label, size, n in (("1", 1, calls), ("100", 100, max(calls // 20, 200))):
    batches = [[{"user_id": rnd.randrange(users), "merchant_id": rnd.randrange(merchants)} for _ in range(size)]
               for _ in range(16)]
    for i in range(50):
        store.get_online_features(features=feats, entity_rows=batches[i % 16]).to_dict()
    s = []
    for i in range(n):
        t0 = time.perf_counter()
        store.get_online_features(features=feats, entity_rows=batches[i % 16]).to_dict()
        s.append(time.perf_counter() - t0)
    s.sort()
    out[label] = {"p50": s[len(s) // 2] * 1e6, "p99": s[min(len(s) - 1, int(0.99 * len(s)))] * 1e6,
                  "p99.9": s[min(len(s) - 1, int(0.999 * len(s)))] * 1e6, "calls": n}
print(json.dumps(out))
'''


def feast_python() -> Path:
    """The venv holding Feast 0.67 (shared with bench/training.py), with its redis extra."""
    py = FEAST_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True)
    ok = subprocess.run([str(py), "-c", "import feast, redis, duckdb"], capture_output=True).returncode == 0
    if not ok:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "feast[redis,duckdb]==0.67.*"], check=True)
    return py


def bench_feast(data: Path, work: Path, backend: str, port: int | None, lo: datetime, hi: datetime, calls: int,
                users: int, merchants: int) -> dict[str, Any]:
    online = ("online_store: {type: sqlite, path: online.db}" if backend == "sqlite"
              else f"online_store: {{type: redis, connection_string: '127.0.0.1:{port}'}}")
    if port is not None:
        import redis

        redis.Redis(port=port).flushdb()
    args = [str(feast_python()), "-c", FEAST_SCRIPT, str(data), str(work / f"feast-{backend}"), online,
            lo.isoformat(), (hi - timedelta(hours=1)).isoformat(), str(calls), str(users), str(merchants)]
    out = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "FEAST_USAGE": "False"})
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--calls", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=2, help="materializations of each kind; the best is kept")
    ap.add_argument("--backends", default="sqlite,redis")
    ap.add_argument("--feast", action="store_true", help="also run Feast 0.67 (makes bench/.venv-feast)")
    args = ap.parse_args()
    data = data_dir(args.scale).resolve()
    lo, hi = time_range(data)
    import duckdb

    users = duckdb.sql(f"SELECT count(DISTINCT user_id) FROM '{data}/user_profile.parquet'").fetchall()[0][0]
    merchants = duckdb.sql(f"SELECT count(DISTINCT merchant_id) FROM '{data}/merchant_stats.parquet'").fetchall()[0][0]
    work = Path(tempfile.mkdtemp(prefix="quiver-bench-online-"))
    stop: Callable[[], Any] = lambda: None  # noqa: E731
    results: dict[str, dict[str, Any]] = {}
    try:
        port = None
        if "redis" in args.backends:
            port, stop = start_redis(work)
            check_redis(port)
        print(f"workload: {args.scale} ({data}), {users:,} users, {merchants:,} merchants, events {lo} .. {hi}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
        for backend in args.backends.split(","):
            online = "{type: sqlite, path: online.db}" if backend == "sqlite" else f"{{type: redis, url: 'redis://127.0.0.1:{port}/0'}}"
            floors, runs = [], []
            for rep in range(args.repeat):  # interleaved, fresh folders (and a flushed Redis) each time
                floors.append(timed_floor(data, work / f"floor-{backend}", backend, port))
                if port is not None:
                    import redis

                    redis.Redis(port=port).flushdb()
                repo = work / f"repo-{backend}-{rep}"
                runs.append(bench_materialize(make_repo(repo, data, online), lo, hi))
                f, m = floors[-1], runs[-1]
                print(f"materialize {backend} #{rep + 1}: quiver {m['seconds']:.2f}s (cpu {m['cpu']:.2f}s)   "
                      f"floor {f['seconds']:.2f}s (cpu {f['cpu']:.2f}s)   incremental {m['incremental_seconds']:.3f}s "
                      f"({m['incremental_keys']:,} keys)", flush=True)
                if rep < args.repeat - 1:
                    shutil.rmtree(repo, ignore_errors=True)
            fl = min(floors, key=lambda r: r["seconds"])
            m = min(runs, key=lambda r: r["seconds"])
            inc = min(r["incremental_seconds"] for r in runs)
            print(f"materialize {backend}: quiver {m['seconds']:.2f}s ({m['keys'] / m['seconds']:,.0f} keys/s, {m['keys']:,} keys)"
                  f"   floor {fl['seconds']:.2f}s ({fl['keys'] / fl['seconds']:,.0f} keys/s)   ratio {m['seconds'] / fl['seconds']:.2f}x"
                  f" (cpu ratio {m['cpu'] / fl['cpu']:.2f}x)   incremental {inc:.3f}s", flush=True)
            reads = bench_reads(work / f"repo-{backend}-{args.repeat - 1}", backend, port, args.calls, users, merchants)
            results[backend] = {"materialize": m, "floor": fl, "incremental": inc, "reads": reads}
            if args.feast:
                fe = bench_feast(data, work, backend, port, lo, hi, args.calls, users, merchants)
                results[backend]["feast"] = fe
                if "error" in fe:
                    print(f"  feast 0.67 {backend}: failed: {fe['error']}")
                else:
                    print(f"  feast 0.67 {backend}: materialize {fe['materialize']:.2f}s")
                    show(f"{backend} feast 0.67 1 entity", fe["1"], f"({fe['1']['calls']} calls)")
                    show(f"{backend} feast 0.67 100 entities", fe["100"], f"({fe['100']['calls']} calls)")
        summary(results)
    finally:
        stop()
        shutil.rmtree(work, ignore_errors=True)


def summary(results: dict[str, dict[str, Any]]) -> None:
    """The figures against the targets of issue 10, as a Markdown table."""
    print("\n| measurement | backend | quiver | floor | ratio | Feast 0.67 | target | met |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for b, r in results.items():
        fe = r.get("feast", {})
        ok = "error" not in fe and bool(fe)
        m, fl = r["materialize"], r["floor"]
        ratio = m["seconds"] / fl["seconds"]
        feast_m = f"{fe['materialize']:.2f} s" if ok else "-"
        print(f"| materialize (dual write), {m['keys']:,} keys | {b} | {m['seconds']:.2f} s | {fl['seconds']:.2f} s | "
              f"{ratio:.2f}x | {feast_m} | <= 0.7x floor | {'yes' if ratio <= 0.7 else 'no'} |")
        print(f"| incremental, 1 new hour | {b} | {r['incremental']:.3f} s | | | | < 0.5 s | "
              f"{'yes' if r['incremental'] < 0.5 else 'no'} |")
        q1, f1, q100 = r["reads"]["quiver 1"], r["reads"]["floor 1"], r["reads"]["quiver 100"]
        f100 = r["reads"]["floor 100"]
        r1 = q1["p50"] / f1["p50"]
        fe1 = f"{fe['1']['p50']:.0f} us" if ok else "-"
        fe100 = f"{fe['100']['p50']:.0f} us" if ok else "-"
        print(f"| 1 entity p50 | {b} | {q1['p50']:.1f} us | {f1['p50']:.1f} us | {r1:.2f}x | {fe1} | <= 2x floor | "
              f"{'yes' if r1 <= 2 else 'no'} |")
        print(f"| 1 entity p99 / p99.9 | {b} | {q1['p99']:.0f} / {q1['p99.9']:.0f} us | {f1['p99']:.0f} / "
              f"{f1['p99.9']:.0f} us | | | p99 < 1 ms | {'yes' if q1['p99'] < 1000 else 'no'} |")
        print(f"| 100 entities p50 (p99) | {b} | {q100['p50']:.0f} ({q100['p99']:.0f}) us | {f100['p50']:.0f} "
              f"({f100['p99']:.0f}) us | {q100['p50'] / f100['p50']:.2f}x | {fe100} | p50 < 1 ms | "
              f"{'yes' if q100['p50'] < 1000 else 'no'} |")


if __name__ == "__main__":
    main()
