"""Monitoring benchmark, on the shared fraud workload (medium by default).

* profiling the 8 snapshot features (user_profile + merchant_stats) over one
  day and over the whole 30 days, with the monitor (``drift.profile``: one scan
  per view given the reference's bins) beside a hand-written DuckDB query
  computing the same statistics over the same files; and building the
  reference profile (statistics, then the numeric columns fetched once for 99
  exact percentiles and the histogram on them: two scans);
* serving p50/p99 (one user + one merchant, the 8 features, SQLite online
  store) with the served-vector log off, at sample rates 0.1 and 1.0 (its
  defaults otherwise), at rate 1.0 compacting in a child process every MiB
  (the worst case of that child competing for the cores), and with a
  do-nothing logger as the control of the comparison's own noise; over HTTP
  (``quiver serve``'s app on uvicorn, wrk with one connection, random keys)
  and in process (``get_online_features`` in a loop). Every run is a fresh
  process with only the setting changed; the settings are interleaved,
  ``--rounds`` rounds in alternating order, and each setting's median p99
  over the rounds is reported with its spread (min-max), its change against
  the log off (also paired by round), and the CPU time per request (the
  server's with its reaped children, or the loop's; the writer thread
  included), which a busy machine disturbs far less than latency;
* with ``--parts callgrind``, instructions per in-process call under
  valgrind's callgrind, which the machine's load does not move;
* the skew check over ``--skew-requests`` logged requests (compacting the
  spool files, then one ``get_historical_features`` call).

Run by hand, never in CI::

    ../shared/bench/datagen.py --scale medium --out bench-data   # once
    .venv/bin/python -m bench.monitoring [--scale medium] [--parts profiles,http,inproc,skew] [--rounds 5]
    .venv/bin/python -m bench.monitoring --parts callgrind --settings off,1.0   # instructions per call
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.online import DEFS, FEATURES, data_dir, time_range
from bench.serving import free_port, stop, wait_port

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


# "control": a logger that does nothing; a number: the sample rate; "1.0c": rate 1.0 compacting in a
# child process every 1 MiB of spool (the worst case of the child competing for the cores; default 64 MiB)
SETTINGS = ("off", "control", "0.1", "1.0", "1.0c")
MERCHANTS = 5000


def users_of(data: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(data / "user_profile.parquet").num_rows // 30)


class NullLog:
    """The control: a logger that does nothing, to show the noise of the comparison itself."""

    written = dropped = 0

    def log(self, plan: Any, response: Any, now_us: int | None = None, request: Any = None) -> None:
        pass

    def flush(self) -> int:
        return 0

    def close(self) -> None:
        pass


def open_store(repo: Path, setting: str) -> Any:
    """The repository with only the served-vector log set as ``setting`` says, its reader warm."""
    from quiver.config import load_config
    from quiver.store import FeatureStore

    config = load_config(repo)
    rate = float(setting.rstrip("c")) if setting not in ("off", "control") else 0.0
    log = {"sample_rate": rate, **({"compact_bytes": 1 << 20} if setting.endswith("c") else {})}
    monitoring = {**config.monitoring, "served_log": log}
    store = FeatureStore(repo, config=dataclasses.replace(config, monitoring=monitoring))
    store.get_online_features(features=FEATURES, entity_rows=[{"user_id": 1, "merchant_id": 1}])
    if setting == "control":
        store.__dict__["_online_reader"].served_log = NullLog()
    return store


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] * 1e6


# -- one run, in its own process ----------------------------------------------------------


def run_inproc(repo: Path, setting: str, calls: int, seed: int) -> dict[str, Any]:
    """``calls`` timed ``get_online_features`` calls after 2,000 untimed ones."""
    store = open_store(repo, setting)
    users = int((repo / "users").read_text())
    rng = random.Random(seed)
    rows = [[{"user_id": rng.randrange(users), "merchant_id": rng.randrange(MERCHANTS)}] for _ in range(calls + 2000)]
    get = store.get_online_features
    for row in rows[:2000]:
        get(features=FEATURES, entity_rows=row)
    lat = []
    clock = time.perf_counter
    cpu0 = time.process_time()
    for row in rows[2000:]:
        t0 = clock()
        get(features=FEATURES, entity_rows=row)
        lat.append(clock() - t0)
    cpu = time.process_time() - cpu0
    logger = store.__dict__["_online_reader"].served_log
    if logger is not None:
        logger.flush()
    logged = logger.written if logger is not None else 0
    return {"p50": pct(lat, .5), "p99": pct(lat, .99), "cpu_us": cpu / calls * 1e6, "logged": logged}


def serve_http(repo: Path, setting: str, port: int) -> None:
    """The feature server over ``repo``, with the log set as ``setting`` says, until stopped;
    built as ``quiver serve`` builds it (warmed up, then the loaded objects frozen out of the GC)."""
    import gc

    from quiver.cli.serve import run_server
    from quiver.serving.app import create_app, warm_up

    store = open_store(repo, setting)
    app = create_app(store)
    warm_up(store)
    gc.collect()
    gc.freeze()
    run_server(lambda: app, "uvicorn", "127.0.0.1", port)


# -- the driver ----------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and the children it waited for, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
math.randomseed(%(seed)d)
local head = '{"features": %(features)s, "entities": {"user_id": ['
request = function()
  return wrk.format(nil, nil, nil, head .. math.random(0, %(users)d - 1) .. '], "merchant_id": ['
                    .. math.random(0, %(merchants)d - 1) .. ']}}')
end
done = function(summary, latency, requests)
  io.write(string.format("QUIVER %%d %%d %%d %%d\\n", latency:percentile(50), latency:percentile(99),
                         summary.requests, summary.errors.status + summary.errors.connect + summary.errors.read
                         + summary.errors.write + summary.errors.timeout))
end
"""


def wrk(port: int, seconds: float, folder: Path, users: int, seed: int) -> dict[str, float]:
    script = folder / "features.lua"
    script.write_text(WRK_SCRIPT % {"seed": seed, "features": json.dumps(FEATURES), "users": users,
                                    "merchants": MERCHANTS})
    out = subprocess.run(["wrk", "-t1", "-c1", f"-d{int(seconds)}s", "-s", str(script),
                          f"http://127.0.0.1:{port}/v1/features"], capture_output=True, text=True, check=True).stdout
    p50, p99, n, errors = (int(x) for x in out.rpartition("QUIVER ")[2].split()[:4])
    return {"p50": float(p50), "p99": float(p99), "requests": float(n), "errors": float(errors)}


def run_http(repo: Path, setting: str, seconds: float, folder: Path, seed: int) -> dict[str, Any]:
    """A fresh server process, 2 s of warm-up load, then ``seconds`` of measured load."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.monitoring", "--serve", str(repo), setting, str(port)],
                            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        wait_port(port, proc, timeout=60)
        users = int((repo / "users").read_text())
        wrk(port, 2, folder, users, seed + 1000)
        cpu0 = cpu_seconds(proc.pid)
        r = wrk(port, seconds, folder, users, seed)
        r["cpu_us"] = (cpu_seconds(proc.pid) - cpu0) / max(r["requests"], 1) * 1e6
        return r
    finally:
        stop(proc, timeout=30)  # a last spool write and its compaction may take a while


def compare(kind: str, settings: list[str], rounds: int, served: Path, run: Any) -> None:
    """``rounds`` rounds of one run per setting, the order reversed every other round."""
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    for r in range(rounds):
        for s in (settings if r % 2 == 0 else settings[::-1]):
            shutil.rmtree(served, ignore_errors=True)  # each run starts with an empty log
            results[s].append(run(s, r))
    print(f"{kind}: {rounds} rounds, one fresh process per run; medians over rounds [min-max]")
    first = results[settings[0]]
    base = statistics.median(x["p99"] for x in first)
    for s, rs in results.items():
        p50s, p99s, cpus = ([x[k] for x in rs] for k in ("p50", "p99", "cpu_us"))
        label = {"off": "served log off", "control": "control: a logger doing nothing"}.get(
            s, f"log at rate {s[:-1]}, compact per MiB" if s.endswith("c") else f"log at rate {s}")
        p99 = statistics.median(p99s)
        paired = statistics.median(x["p99"] / y["p99"] - 1 for x, y in zip(rs, first, strict=True))
        print(f"  {label:32s} p50 {statistics.median(p50s):7.1f}us  p99 {p99:7.1f}us [{min(p99s):.0f}-{max(p99s):.0f}]"
              f" {p99 / base - 1:+6.1%} (paired by round {paired:+6.1%})"
              f"   cpu/request {statistics.median(cpus):6.1f}us [{min(cpus):.1f}-{max(cpus):.1f}]"
              + (f"   logged {sum(x['logged'] for x in rs)}" if "logged" in rs[0] else
                 f"   {statistics.median(x['requests'] for x in rs) / 1:.0f} requests/run"))
        print(f"    p99 per round: {' '.join(f'{x:.0f}' for x in p99s)}")
    load = os.getloadavg()
    print(f"  load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def instructions(repo: Path, settings: list[str], folder: Path) -> None:
    """Instructions per in-process call under callgrind: runs of 300 and 5,300 calls, the
    difference over 5,000 (start-up cancels out). The machine's load does not move it."""
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed (apt-get install -y valgrind)")
        return
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # NumPy's idle BLAS threads would spin under valgrind
    per: dict[str, float] = {}
    for s in settings:
        counts = []
        for calls in (300, 5300):
            shutil.rmtree(repo / "offline" / "served", ignore_errors=True)
            cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder / 'callgrind.out'}",
                   sys.executable, "-m", "bench.monitoring", "--inproc", str(repo), s, str(calls), "0"]
            err = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stderr
            counts.append(int(err.rpartition("Collected : ")[2].split()[0]))
        per[s] = (counts[1] - counts[0]) / 5000
        change = "" if s == settings[0] else f"  {per[s] / per[settings[0]] - 1:+6.1%}"
        print(f"instructions per in-process call (callgrind), {s:8s} {per[s] / 1000:7.1f}k{change}", flush=True)


def prepare(repo: Path, data: Path) -> tuple[Any, Any]:
    """The benchmark repository (applied, materialized into SQLite once: kept with ``--repo``)."""
    from quiver.store import FeatureStore

    lo, hi = time_range(data)
    if (repo / "users").exists():
        return lo, hi
    repo.mkdir(parents=True, exist_ok=True)
    (repo / "features.py").write_text(DEFS.replace("{DATA}", str(data)))
    (repo / "quiver.yaml").write_text(
        "project: bench\nregistry: registry.db\noffline: {engine: duckdb, path: offline}\n"
        "online: {type: sqlite, path: online.db}\n")
    with FeatureStore(repo) as store:
        store.apply()
        t0 = time.perf_counter()
        store.materialize(lo, hi + timedelta(seconds=1))
        print(f"materialized in {time.perf_counter() - t0:.1f}s")
    (repo / "users").write_text(str(users_of(data)))
    return lo, hi


def bench_skew(repo: Path, requests: int) -> None:
    """Log ``requests`` responses at rate 1.0 into a fresh log, then time the skew check."""
    from quiver.monitoring.served_log import ServedLog, served_dir
    from quiver.store import FeatureStore

    with FeatureStore(repo) as store:
        root = served_dir(store.config)
        shutil.rmtree(root, ignore_errors=True)
        logger = ServedLog(root, 1.0, compact_bytes=0)
        store.get_online_features(features=FEATURES, entity_rows=[{"user_id": 1, "merchant_id": 1}])
        store.__dict__["_online_reader"].served_log = logger
        rng = random.Random(7)
        users = int((repo / "users").read_text())
        for _ in range(requests):
            store.get_online_features(features=FEATURES, entity_rows=[
                {"user_id": rng.randrange(users), "merchant_id": rng.randrange(MERCHANTS)}])
        logger.close()
        t0 = time.perf_counter()
        rep = store.monitor_skew()
        dt = time.perf_counter() - t0
        print(f"skew check over {rep.requests} logged requests: {dt:.2f}s "
              f"({'no skew' if rep.ok else 'SKEW'}; {len(rep.features)} features)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="medium")
    ap.add_argument("--parts", default="profiles,http,inproc,skew")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="off, control, and sample rates")
    ap.add_argument("--rounds", type=int, default=5, help="runs per setting, interleaved")
    ap.add_argument("--seconds", type=float, default=10, help="measured load per HTTP run")
    ap.add_argument("--calls", type=int, default=50_000, help="timed calls per in-process run")
    ap.add_argument("--skew-requests", type=int, default=100_000)
    ap.add_argument("--repo", type=Path, help="keep the materialized repository here (reused when present)")
    ap.add_argument("--serve", nargs=3, metavar=("REPO", "SETTING", "PORT"), help=argparse.SUPPRESS)
    ap.add_argument("--inproc", nargs=4, metavar=("REPO", "SETTING", "CALLS", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_http(Path(args.serve[0]), args.serve[1], int(args.serve[2]))
        return
    if args.inproc:
        repo, setting, calls, seed = args.inproc
        print(json.dumps(run_inproc(Path(repo), setting, int(calls), int(seed))))
        return
    parts = set(args.parts.split(","))
    settings = args.settings.split(",")
    data = data_dir(args.scale)
    with tempfile.TemporaryDirectory() as tmp:
        repo = args.repo.resolve() if args.repo else Path(tmp) / "repo"
        lo, hi = prepare(repo, data)
        served = repo / "offline" / "served"
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if "profiles" in parts:
            from quiver.store import FeatureStore

            with FeatureStore(repo) as store:
                bench_profiles(store, hi)
        if "http" in parts:
            compare("serving over HTTP, 1 entity x 8 features, uvicorn, wrk -c1", settings, args.rounds, served,
                    lambda s, r: run_http(repo, s, args.seconds, Path(tmp), r))
        if "inproc" in parts:
            def inproc(s: str, r: int) -> dict[str, Any]:
                cmd = [sys.executable, "-m", "bench.monitoring", "--inproc", str(repo), s, str(args.calls), str(r)]
                out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
                return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

            compare(f"serving in process, get_online_features x {args.calls}", settings, args.rounds, served, inproc)
        if "callgrind" in parts:
            instructions(repo, [x for x in settings if x != "control"], Path(tmp))
        if "skew" in parts:
            bench_skew(repo, args.skew_requests)


if __name__ == "__main__":
    main()
