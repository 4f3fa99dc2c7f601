"""Monitoring benchmark, on the shared fraud workload (medium by default).

* profiling the 8 snapshot features (user_profile + merchant_stats) over one
  day and over the whole 30 days, with the monitor (``drift.profile``: one scan
  per view given the reference's bins) beside a hand-written DuckDB query
  computing the same statistics over the same files; and building the
  reference profile (percentiles, then histograms: two scans);
* serving p50/p99 of ``get_online_features`` (one user + one merchant, the 8
  features, SQLite online store) with the served-vector log off and on
  (sample rate 1), in alternating blocks;
* the skew check over the 100,000+ requests logged by the run above.

Run by hand, never in CI::

    ../shared/bench/datagen.py --scale medium --out bench-data   # once
    .venv/bin/python bench/monitoring.py [--scale medium] [--calls 100000]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.online import DEFS, FEATURES, data_dir, time_range

ROOT = Path(__file__).resolve().parent.parent


def best(fn: Any, runs: int = 3) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def hand_query(files: list[str], cols: dict[str, str], ref: dict[str, Any], lo: Any, hi: Any) -> str:
    parts = ["count(*)"]
    for c, kind in cols.items():
        if kind == "number":
            x = f'"{c}"::DOUBLE'
            parts += [f'count("{c}")', f"avg({x})", f"stddev_samp({x})", f"min({x})", f"max({x})",
                      f"quantile_cont({x}, [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99])",
                      f"histogram({x}, {ref[c]['edges']}::DOUBLE[])"]
        else:
            parts += [f'count("{c}")', f'histogram("{c}")']
    flist = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    return (f"SELECT {', '.join(parts)} FROM read_parquet({flist}) "
            f"WHERE event_timestamp >= TIMESTAMPTZ '{lo.isoformat()}' AND event_timestamp < TIMESTAMPTZ '{hi.isoformat()}'")


def bench_profiles(store: Any, hi: Any) -> None:
    from quiver.monitoring import drift
    from quiver.monitoring.tables import connection, view_data

    print("profiling (best of 3)                 monitor    hand-written   ratio")
    for days in (1, 30):
        lo = hi - timedelta(days=days)
        tm = th = 0.0
        for name in ("user_profile", "merchant_stats"):
            fv = store.get_feature_view(name)
            data = view_data(store.offline, fv)
            con = connection(store.offline)
            ref = drift.profile(con, data, hi - timedelta(days=30), hi)
            t_m, _ = best(lambda: drift.profile(con, data, lo, hi, ref))
            cols = {n: drift.kind_of(data.types[n]) for n in data.columns}
            q = hand_query(data.files, cols, ref, lo, hi)
            t_h, _ = best(lambda: con.execute(q).fetchone())
            tm, th = tm + t_m, th + t_h
            con.close()
        print(f"  8 features over {days:>2} day(s)          {tm:7.3f}s   {th:9.3f}s   {tm / th:5.2f}x")
    for name in ("user_profile", "merchant_stats"):
        fv = store.get_feature_view(name)
        data = view_data(store.offline, fv)
        con = connection(store.offline)
        t, _ = best(lambda: drift.profile(con, data, hi - timedelta(days=30), hi), 1)
        con.close()
        print(f"  reference profile of {name} (30 days, 2 scans): {t:.3f}s")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e6


def bench_serving(store: Any, calls: int, users: int, merchants: int) -> None:
    from quiver.monitoring.served_log import served_log_for

    logger = served_log_for(store.config)
    store.get_online_features(features=FEATURES, entity_rows=[{"user_id": 1, "merchant_id": 1}])
    reader = store.__dict__["_online_reader"]
    rng = random.Random(1)
    on: list[float] = []
    off: list[float] = []
    block = 5000
    for i in range(0, calls * 2, block):
        samples = on if (i // block) % 2 else off
        reader.served_log = logger if samples is on else None
        for _ in range(block):
            row = [{"user_id": rng.randrange(users), "merchant_id": rng.randrange(merchants)}]
            t0 = time.perf_counter()
            store.get_online_features(features=FEATURES, entity_rows=row)
            samples.append(time.perf_counter() - t0)
    reader.served_log = logger
    logger.flush()
    print(f"serving, 1 entity x 8 features, {len(off)} calls each   p50        p99")
    print(f"  served log off                              {pct(off, .5):7.1f}us {pct(off, .99):8.1f}us")
    print(f"  served log on (rate 1.0)                    {pct(on, .5):7.1f}us {pct(on, .99):8.1f}us"
          f"   p99 {pct(on, .99) / pct(off, .99) - 1:+.1%}, p50 {statistics.median(on) / statistics.median(off) - 1:+.1%}")
    print(f"  rows logged: {logger.written}, dropped: {logger.dropped}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="medium")
    ap.add_argument("--calls", type=int, default=100_000)
    args = ap.parse_args()
    data = data_dir(args.scale)
    lo, hi = time_range(data)
    from quiver.store import FeatureStore

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        (repo / "features.py").write_text(DEFS.replace("{DATA}", str(data)))
        (repo / "quiver.yaml").write_text(
            "project: bench\nregistry: registry.db\noffline: {engine: duckdb, path: offline}\n"
            "online: {type: sqlite, path: online.db}\nmonitoring: {served_log: {sample_rate: 1.0}}\n")
        with FeatureStore(repo) as store:
            store.apply()
            bench_profiles(store, hi)
            t0 = time.perf_counter()
            store.materialize(lo, hi + timedelta(seconds=1))
            print(f"materialized in {time.perf_counter() - t0:.1f}s")
            import pyarrow.parquet as pq

            users = pq.read_metadata(data / "user_profile.parquet").num_rows // 30
            bench_serving(store, args.calls, users, 5000)
            t0 = time.perf_counter()
            rep = store.monitor_skew()
            dt = time.perf_counter() - t0
            print(f"skew check over {rep.requests} logged requests: {dt:.2f}s "
                  f"({'no skew' if rep.ok else 'SKEW'}; {len(rep.features)} features)")


if __name__ == "__main__":
    main()
