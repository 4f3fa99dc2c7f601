"""Monitoring benchmark, on the shared fraud workload (medium by default).

* profiling the 8 snapshot features (user_profile + merchant_stats) over one
  day and over the whole 30 days, with the monitor (``drift.profile``: one scan
  per view given the reference's bins) beside a hand-written DuckDB query
  computing the same statistics over the same files; and building the
  reference profile (statistics, then the numeric columns fetched once for 99
  exact percentiles and the histogram on them: two scans);
* serving p50/p99 of ``get_online_features`` (one user + one merchant, the 8
  features, SQLite online store) with the served-vector log off and on, at
  sample rates 1.0 and 0.1 (and a do-nothing logger as the control of the
  comparison's own noise), in interleaved blocks (``--rounds`` of each
  state); p99 is the median of the blocks' p99s, since single p99s are noisy
  on a shared machine. The log spills every 1,000 records (so spills happen
  inside the timed blocks) and is flushed after each on block;
* the skew check over the 100,000 requests logged at rate 1.0 (compacting
  the spool files left, then one ``get_historical_features`` call).

Run by hand, never in CI::

    ../shared/bench/datagen.py --scale medium --out bench-data   # once
    .venv/bin/python -m bench.monitoring [--scale medium] [--calls 100000] [--parts profiles,serving,skew]
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


def hand_query(files: list[str], cols: dict[str, str | None], ref: dict[str, Any], lo: Any, hi: Any) -> str:
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
        print(f"  reference profile of {name} (30 days, 2 scans, 99 exact percentiles): {t:.3f}s")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e6


def serve_block(store: Any, rng: random.Random, n: int, users: int, merchants: int) -> list[float]:
    out = []
    for _ in range(n):
        row = [{"user_id": rng.randrange(users), "merchant_id": rng.randrange(merchants)}]
        t0 = time.perf_counter()
        store.get_online_features(features=FEATURES, entity_rows=row)
        out.append(time.perf_counter() - t0)
    return out


class NullLog:
    """The control: a logger that does nothing, to show the noise of the comparison itself."""

    written = dropped = 0

    def log(self, plan: Any, response: Any, now_us: int | None = None) -> None:
        pass

    def flush(self) -> int:
        return 0

    def close(self) -> None:
        pass


def bench_serving(store: Any, calls: int, users: int, merchants: int, rates: list[float], rounds: int,
                  scratch: Path) -> None:
    """Per sample rate, ``rounds`` rounds of one block with the log off and one
    with it on (order alternating), ``calls / rounds`` calls each. After an on
    block the log is flushed before the next block starts, so the writer's work
    stays inside the on blocks. Reported: medians over blocks of each block's
    p50 and p99 (p99 is noisy on a shared machine), and the median of the
    on/off p99 ratios of the rounds."""
    from quiver.monitoring.served_log import ServedLog, served_dir

    store.get_online_features(features=FEATURES, entity_rows=[{"user_id": 1, "merchant_id": 1}])
    reader = store.__dict__["_online_reader"]
    reader.served_log = None
    rng = random.Random(1)
    serve_block(store, rng, 5000, users, merchants)  # warm-up
    block = max(1000, calls // rounds)
    print(f"serving, 1 entity x 8 features, {rounds} x {block} calls per state     p50      p99 (median of blocks)")
    for rate in rates:
        # rate 1.0 logs into the repo (the skew check reads it); other rates into a scratch folder
        root = served_dir(store.config) if rate == 1.0 else scratch / f"served-{rate}"
        logger: Any = ServedLog(root, rate) if rate > 0 else NullLog()  # the defaults: a spill per 5,000
        on: list[list[float]] = []
        off: list[list[float]] = []
        for r in range(rounds):
            for state in ((False, True) if r % 2 == 0 else (True, False)):
                reader.served_log = logger if state else None
                (on if state else off).append(serve_block(store, rng, block, users, merchants))
                reader.served_log = None
                if state:
                    logger.flush()
        logger.close()
        p50_off = statistics.median(pct(b, .5) for b in off)
        p50_on = statistics.median(pct(b, .5) for b in on)
        p99_off = statistics.median(pct(b, .99) for b in off)
        p99_on = statistics.median(pct(b, .99) for b in on)
        # each on block against the off block of its round: load on the machine drifts between rounds
        d99 = statistics.median(pct(a, .99) / pct(b, .99) - 1 for a, b in zip(on, off, strict=True))
        d50 = statistics.median(pct(a, .5) - pct(b, .5) for a, b in zip(on, off, strict=True))
        print(f"  {'served log off':48s}  {p50_off:7.1f}us {p99_off:8.1f}us")
        label = f"served log on (rate {rate:g})" if rate > 0 else "control: a logger doing nothing"
        print(f"  {label:48s}  {p50_on:7.1f}us {p99_on:8.1f}us"
              f"   p99 {p99_on / p99_off - 1:+.1%} (paired by round {d99:+.1%}), p50 {d50:+.2f}us paired")
        print(f"    block p99s off: {' '.join(f'{pct(b, .99):.0f}' for b in off)}")
        print(f"    block p99s on:  {' '.join(f'{pct(b, .99):.0f}' for b in on)}")
        print(f"    rows logged: {logger.written}, dropped: {logger.dropped}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="medium")
    ap.add_argument("--calls", type=int, default=100_000, help="calls per state (log on / off) at each rate")
    ap.add_argument("--rounds", type=int, default=20, help="on/off blocks per rate")
    ap.add_argument("--rates", default="0,1.0,0.1", help="sample rates to serve with (0: the do-nothing control)")
    ap.add_argument("--parts", default="profiles,serving,skew")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    data = data_dir(args.scale)
    lo, hi = time_range(data)
    from quiver.store import FeatureStore

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        (repo / "features.py").write_text(DEFS.replace("{DATA}", str(data)))
        (repo / "quiver.yaml").write_text(
            "project: bench\nregistry: registry.db\noffline: {engine: duckdb, path: offline}\n"
            "online: {type: sqlite, path: online.db}\n")
        with FeatureStore(repo) as store:
            store.apply()
            if "profiles" in parts:
                bench_profiles(store, hi)
            if parts & {"serving", "skew"}:
                t0 = time.perf_counter()
                store.materialize(lo, hi + timedelta(seconds=1))
                print(f"materialized in {time.perf_counter() - t0:.1f}s")
                import pyarrow.parquet as pq

                users = pq.read_metadata(data / "user_profile.parquet").num_rows // 30
                rates = [float(r) for r in args.rates.split(",")]
                if "skew" in parts and 1.0 not in rates:
                    rates.append(1.0)
                bench_serving(store, args.calls, users, 5000, rates, args.rounds, Path(tmp))
            if "skew" in parts:
                t0 = time.perf_counter()
                rep = store.monitor_skew()
                dt = time.perf_counter() - t0
                print(f"skew check over {rep.requests} logged requests: {dt:.2f}s "
                      f"({'no skew' if rep.ok else 'SKEW'}; {len(rep.features)} features)")


if __name__ == "__main__":
    main()
