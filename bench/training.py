"""Training-set benchmark: quiver's point-in-time join beside hand-written DuckDB floors.

On the shared fraud workload (``../shared/bench/datagen.py``, generated into
``bench-data/<scale>/`` when missing): the labels joined to user_profile (ttl
2 days) and merchant_stats (ttl 2 hours), all 8 features; then count and sum
of amount over 10 minutes, 1 hour and 1 day per user. Each measurement runs
in a fresh process, ``--repeat`` times interleaved (the machine is shared:
the best call time is reported), with the call's wall time, the whole
process's wall time and its peak memory (max RSS):

* ``quiver cold``: a fresh repository, first ``get_historical_features(...).to_arrow()``;
* ``quiver warm``: after ``materialize`` over the whole range (compacted history);
* ``floor raw``: one DuckDB query over the raw files (QUALIFY dedupe by created
  time, ASOF LEFT JOINs, output in label order);
* ``floor compacted``: the same ASOF query over files already deduplicated and
  sorted by key and time;
* ``quiver windows`` / ``floor range join``: the 6 window aggregates alone;
* ``quiver 8 + windows``: all 14 features;
* ``feast duckdb`` (``--feast``): Feast 0.67 with ``feast[duckdb]`` in its own
  venv (``bench/.venv-feast``, made on first use), the call alone.

Run by hand, never in CI::

    .venv/bin/python -m bench.training --scale medium --repeat 3
    .venv/bin/python -m bench.training --scale medium --repeat 3 --feast
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATAGEN = ROOT.parent / "shared" / "bench" / "datagen.py"
FEAST_VENV = ROOT / "bench" / ".venv-feast"

SNAPSHOT = ["user_profile:account_age_days", "user_profile:credit_limit", "user_profile:country",
            "user_profile:avg_amount_90d", "user_profile:num_orders_90d", "merchant_stats:merchant_risk",
            "merchant_stats:merchant_tx_count_1h", "merchant_stats:merchant_avg_amount_1h"]
WINDOWS = [f"user_tx:amount_{f}_{w}" for w in ("10m", "1h", "1d") for f in ("count", "sum")]

FEATURES_PY = '''
from datetime import timedelta
from quiver import Aggregation, Entity, FeatureView, Field, FileSource, types

user = Entity(name="user", join_keys=["user_id"])
merchant = Entity(name="merchant", join_keys=["merchant_id"])
user_profile = FeatureView(
    name="user_profile", entities=[user], ttl=timedelta(days=2),
    source=FileSource(path="{data}/user_profile.parquet", created_timestamp_column="created_timestamp"),
    schema=[Field("account_age_days", types.Int64), Field("credit_limit", types.Float64),
            Field("country", types.String), Field("avg_amount_90d", types.Float64),
            Field("num_orders_90d", types.Int64)])
merchant_stats = FeatureView(
    name="merchant_stats", entities=[merchant], ttl=timedelta(hours=2),
    source=FileSource(path="{data}/merchant_stats.parquet", created_timestamp_column="created_timestamp"),
    schema=[Field("merchant_risk", types.Float64), Field("merchant_tx_count_1h", types.Int64),
            Field("merchant_avg_amount_1h", types.Float64)])
user_tx = FeatureView(
    name="user_tx", entities=[user],
    source=FileSource(path="{data}/transactions.parquet", created_timestamp_column="created_timestamp"),
    aggregations=[Aggregation("amount", f, window=w) for w in (timedelta(minutes=10), timedelta(hours=1),
                  timedelta(days=1)) for f in ("count", "sum")])
'''

UP = "account_age_days, credit_limit, country, avg_amount_90d, num_orders_90d"
MS = "merchant_risk, merchant_tx_count_1h, merchant_avg_amount_1h"


def floor_sql(data: Path, compacted: Path | None) -> str:
    """The hand-written ASOF query; over raw files it deduplicates with QUALIFY first."""
    def hist(name: str, key: str, cols: str) -> str:
        if compacted is not None:
            return f"SELECT {key}, event_timestamp, {cols} FROM read_parquet('{compacted}/{name}.parquet')"
        return (f"SELECT {key}, event_timestamp, {cols} FROM read_parquet('{data}/{name}.parquet') QUALIFY "
                f"row_number() OVER (PARTITION BY {key}, event_timestamp ORDER BY created_timestamp DESC) = 1")

    up_sel = ", ".join(f"CASE WHEN up.event_timestamp >= l.event_timestamp - INTERVAL 2 DAY THEN up.{c} END AS {c}"
                       for c in UP.split(", "))
    ms_sel = ", ".join(f"CASE WHEN ms.event_timestamp >= l.event_timestamp - INTERVAL 2 HOUR THEN ms.{c} END AS {c}"
                       for c in MS.split(", "))
    return f"""
        WITH l AS (SELECT * FROM read_parquet('{data}/labels.parquet', file_row_number=true)),
        up AS ({hist('user_profile', 'user_id', UP)}),
        ms AS ({hist('merchant_stats', 'merchant_id', MS)})
        SELECT l.* EXCLUDE (file_row_number), {up_sel}, {ms_sel}
        FROM l
        ASOF LEFT JOIN up ON l.user_id = up.user_id AND l.event_timestamp >= up.event_timestamp
        ASOF LEFT JOIN ms ON l.merchant_id = ms.merchant_id AND l.event_timestamp >= ms.event_timestamp
        ORDER BY l.file_row_number"""


def range_join_sql(data: Path) -> str:
    """Count and sum of amount over [t - w, t) for 10m, 1h, 1d, by a range join on the longest window."""
    aggs = []
    for name, interval in (("10m", "10 MINUTE"), ("1h", "1 HOUR"), ("1d", "1 DAY")):
        cond = "true" if name == "1d" else f"x.event_timestamp >= l.event_timestamp - INTERVAL {interval}"
        aggs.append(f"count(x.amount) FILTER (WHERE {cond}) AS amount_count_{name}")
        aggs.append(f"sum(x.amount) FILTER (WHERE {cond}) AS amount_sum_{name}")
    return f"""
        WITH l AS (SELECT * FROM read_parquet('{data}/labels.parquet', file_row_number=true)),
        x AS (SELECT user_id, amount, event_timestamp FROM read_parquet('{data}/transactions.parquet')),
        w AS (SELECT l.file_row_number, {', '.join(aggs)} FROM l JOIN x ON l.user_id = x.user_id
              AND x.event_timestamp >= l.event_timestamp - INTERVAL 1 DAY AND x.event_timestamp < l.event_timestamp
              GROUP BY l.file_row_number)
        SELECT l.* EXCLUDE (file_row_number), w.* EXCLUDE (file_row_number)
        FROM l LEFT JOIN w USING (file_row_number) ORDER BY l.file_row_number"""


# -- child processes: one measurement each -------------------------------------------


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, data: Path, work: Path) -> dict[str, Any]:
    if mode.startswith("floor"):
        import duckdb

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        if mode == "floor-compact-prepare":
            for name, key in (("user_profile", "user_id"), ("merchant_stats", "merchant_id")):
                con.execute(f"COPY (SELECT * FROM read_parquet('{data}/{name}.parquet') QUALIFY row_number() OVER "
                            f"(PARTITION BY {key}, event_timestamp ORDER BY created_timestamp DESC) = 1 "
                            f"ORDER BY {key}, event_timestamp) TO '{work}/{name}.parquet' (FORMAT parquet)")
            return {}
        sql = {"floor-raw": lambda: floor_sql(data, None), "floor-compacted": lambda: floor_sql(data, work),
               "floor-range": lambda: range_join_sql(data)}[mode]()
        t = time.perf_counter()
        rows = con.sql(sql).to_arrow_table().num_rows
        return {"seconds": time.perf_counter() - t, "rows": rows, "peak_mb": _peak_mb()}
    from quiver import FeatureStore

    store = FeatureStore(work)
    store.resolve(SNAPSHOT)  # open the registry and load the definitions before the clock starts,
    store.offline.cursor().close()  # as the floors import and connect DuckDB before theirs
    if mode == "quiver-materialize":
        from datetime import UTC, datetime

        start, end = datetime(2025, 12, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)
        t = time.perf_counter()
        for v in ("user_profile", "merchant_stats", "user_tx"):
            store.offline.materialize(store.get_feature_view(v), start, end)
        return {"seconds": time.perf_counter() - t, "peak_mb": _peak_mb()}
    features = {"quiver-cold": SNAPSHOT, "quiver-warm": SNAPSHOT, "quiver-windows": WINDOWS,
                "quiver-windows-warm": WINDOWS, "quiver-all": SNAPSHOT + WINDOWS}[mode]
    t = time.perf_counter()
    rows = store.get_historical_features(str(data / "labels.parquet"), features=features).to_arrow().num_rows
    return {"seconds": time.perf_counter() - t, "rows": rows, "peak_mb": _peak_mb()}


def run_child(mode: str, data: Path, work: Path, python: str = sys.executable) -> dict[str, Any]:
    t = time.perf_counter()
    out = subprocess.run([python, "-m", "bench.training", "--child", mode, "--data", str(data), "--work", str(work)],
                         cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.perf_counter() - t
    return res


# -- Feast (optional) ---------------------------------------------------------------

FEAST_SCRIPT = '''
import json, resource, sys, time
import pandas as pd
from datetime import timedelta
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String
data, repo = sys.argv[1], sys.argv[2]
user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)
up = FeatureView(name="user_profile", entities=[user], ttl=timedelta(days=2),
    source=FileSource(path=f"{data}/user_profile.parquet", timestamp_field="event_timestamp",
                      created_timestamp_column="created_timestamp"),
    schema=[Field(name="account_age_days", dtype=Int64), Field(name="credit_limit", dtype=Float64),
            Field(name="country", dtype=String), Field(name="avg_amount_90d", dtype=Float64),
            Field(name="num_orders_90d", dtype=Int64)])
ms = FeatureView(name="merchant_stats", entities=[merchant], ttl=timedelta(hours=2),
    source=FileSource(path=f"{data}/merchant_stats.parquet", timestamp_field="event_timestamp",
                      created_timestamp_column="created_timestamp"),
    schema=[Field(name="merchant_risk", dtype=Float64), Field(name="merchant_tx_count_1h", dtype=Int64),
            Field(name="merchant_avg_amount_1h", dtype=Float64)])
store = FeatureStore(repo_path=repo)
store.apply([user, merchant, up, ms])
labels = pd.read_parquet(f"{data}/labels.parquet")
t = time.perf_counter()
df = store.get_historical_features(entity_df=labels, features=%s).to_df()
print(json.dumps({"seconds": time.perf_counter() - t, "rows": len(df),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
''' % json.dumps(SNAPSHOT)


def feast(data: Path, offline: str) -> dict[str, Any]:
    py = FEAST_VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(FEAST_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "feast[duckdb]==0.67.*"], check=True)
    repo = Path(tempfile.mkdtemp(prefix="feast-bench-"))
    store_cfg = "offline_store:\n  type: duckdb\n" if offline == "duckdb" else ""
    (repo / "feature_store.yaml").write_text(textwrap.dedent(f"""\
        project: bench
        registry: {repo}/registry.db
        provider: local
        online_store:
          type: sqlite
          path: {repo}/online.db
        entity_key_serialization_version: 3
        """) + store_cfg)
    script = repo / "run.py"
    script.write_text(FEAST_SCRIPT)
    t = time.perf_counter()
    out = subprocess.run([str(py), str(script), str(data), str(repo)], capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["process_seconds"] = time.perf_counter() - t
    shutil.rmtree(repo, ignore_errors=True)
    return res


# -- the run ------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="medium", choices=["small", "medium", "large"])
    ap.add_argument("--data-dir", default=str(ROOT / "bench-data"))
    ap.add_argument("--feast", action="store_true", help="also run Feast 0.67 (makes bench/.venv-feast)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best call time is kept")
    ap.add_argument("--child")
    ap.add_argument("--data")
    ap.add_argument("--work")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, Path(a.data), Path(a.work))))
        return
    data = Path(a.data_dir) / a.scale
    if not (data / "labels.parquet").exists():
        subprocess.run([sys.executable, str(DATAGEN), "--scale", a.scale, "--out", a.data_dir], check=True)
    data = data.resolve()
    work = Path(tempfile.mkdtemp(prefix="quiver-bench-"))
    repo, floors = work / "repo", work / "floors"
    repo.mkdir()
    floors.mkdir()
    (repo / "quiver.yaml").write_text("project: bench\nregistry: registry.db\noffline: {engine: duckdb, path: offline}\n")
    (repo / "features.py").write_text(FEATURES_PY.format(data=data))
    from quiver import FeatureStore

    FeatureStore(repo).apply()
    results: dict[str, list[dict[str, Any]]] = {}
    plan = [("floor raw (ASOF+QUALIFY)", "floor-raw", floors), ("quiver cold", "quiver-cold", repo),
            ("floor range join (windows)", "floor-range", floors), ("quiver windows (cold)", "quiver-windows", repo)]
    warm = [("floor compacted (ASOF)", "floor-compacted", floors), ("quiver warm", "quiver-warm", repo),
            ("quiver windows (warm)", "quiver-windows-warm", repo), ("quiver 8 + 6 windows (warm)", "quiver-all", repo)]
    print(f"training-set benchmark, scale {a.scale}, data {data}, best of {a.repeat} (interleaved)", flush=True)
    for rep in range(a.repeat):  # the cold measurements first: nothing is compacted yet
        for label, mode, where in plan:
            results.setdefault(label, []).append(run_child(mode, data, where))
    run_child("floor-compact-prepare", data, floors)
    results["quiver materialize (3 views)"] = [run_child("quiver-materialize", data, repo)]
    for rep in range(a.repeat):
        for label, mode, where in warm:
            results.setdefault(label, []).append(run_child(mode, data, where))
    if a.feast:
        for offline in ("duckdb",) + (("file",) if a.scale == "small" else ()):
            runs = [feast(data, offline) for _ in range(a.repeat)]
            results[f"feast 0.67 {offline}"] = [r for r in runs if "error" not in r] or runs[:1]
    best: dict[str, dict[str, Any]] = {}
    print(f"| {'measurement':<30} | call s (best) | process s | peak MB |")
    print(f"|{'-' * 32}|--------------:|----------:|--------:|")
    for label, runs in results.items():
        if "error" in runs[0]:
            print(f"| {label:<30} | failed: {runs[0]['error']} |")
            continue
        b = best[label] = min(runs, key=lambda r: r["seconds"])
        peak = max(r["peak_mb"] for r in runs)
        print(f"| {label:<30} | {b['seconds']:13.2f} | {b['process_seconds']:9.2f} | {peak:7.0f} |")
    print("ratios (best call times): "
          f"cold / raw floor {best['quiver cold']['seconds'] / best['floor raw (ASOF+QUALIFY)']['seconds']:.2f}x, "
          f"warm / compacted floor {best['quiver warm']['seconds'] / best['floor compacted (ASOF)']['seconds']:.2f}x, "
          f"windows / range-join floor "
          f"{best['quiver windows (cold)']['seconds'] / best['floor range join (windows)']['seconds']:.2f}x")
    if "feast 0.67 duckdb" in best:
        print(f"feast duckdb / quiver warm {best['feast 0.67 duckdb']['seconds'] / best['quiver warm']['seconds']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
