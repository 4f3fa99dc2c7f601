"""``make demo``: the fraud example end to end on the embedded defaults.

SQLite registry, DuckDB offline store, SQLite online store; nothing to start.
Run it with ``python -m quiver.examples.demo [FOLDER]`` (default ``demo-repo``).
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from quiver.store import FeatureStore
from quiver.timeutil import format_window

console = Console(width=None if sys.stdout.isatty() else 160)


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


def create(folder: Path) -> FeatureStore:
    step("1. A feature repository for the fraud example")
    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    store = FeatureStore.init(folder, example="fraud", scale="small")
    console.print(f"quiver init --example fraud -> {folder}/ ({time.perf_counter() - t0:.1f}s): "
                  + ", ".join(sorted(p.name for p in (folder / "data").glob("*.parquet"))))
    return store


def apply(store: FeatureStore) -> None:
    step("2. quiver apply: register the definitions")
    plan = store.apply()
    for ch in plan.pending:
        console.print(f"  + {ch.kind} {ch.name} v{ch.new_version}")
    console.print(f"applied: {plan.summary()}")


def catalog(store: FeatureStore) -> None:
    step("3. The registry's catalog")
    cat = store.catalog()
    t = Table("kind", "name", "v", "owner", "SLA", "features / keys")
    for group in ("entities", "feature_views", "on_demand_feature_views", "feature_services"):
        for r in cat[group]:
            feats = r.get("features") or r.get("join_keys") or []
            names = [f["name"] if isinstance(f, dict) else f for f in feats]
            sla = r.get("freshness_sla_seconds")
            t.add_row(r["kind"], r["name"], str(r["version"]), r["owner"] or "-",
                      format_window(timedelta(seconds=sla)) if sla else "-", ", ".join(names))
    console.print(t)


TRAINING_FEATURES = [
    "user_profile:credit_limit", "user_profile:country", "user_profile:avg_amount_90d",
    "merchant_stats:merchant_risk", "user_tx:amount_count_1h", "user_tx:amount_sum_1d",
]


def training_set(store: FeatureStore) -> None:
    step("4. A point-in-time correct training set")
    import pyarrow.parquet as pq

    labels = pq.read_table(store.repo_path / "data" / "labels.parquet")
    t0 = time.perf_counter()
    table = store.get_historical_features(labels, features=TRAINING_FEATURES).to_arrow()
    took = time.perf_counter() - t0
    console.print(f"{table.num_rows:,} label rows x {len(TRAINING_FEATURES)} features "
                  f"(snapshots with ttl, 1h/1d windows) in {took:.2f}s (cold: read from the source files)")
    console.print(table.slice(0, 5).to_pandas().to_string(index=False))


def materialize(store: FeatureStore) -> None:
    step("5. quiver materialize: offline history + online latest values, one pass")
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    result = store.materialize(now - timedelta(days=30), now)
    for v in result.views:
        console.print(f"  {v.view:<16} {v.skipped or f'{v.rows:>7,} keys online in {v.seconds:.2f}s'}")
    console.print(f"materialized in {time.perf_counter() - t0:.2f}s")
    import pyarrow.parquet as pq

    labels = pq.read_table(store.repo_path / "data" / "labels.parquet")
    t0 = time.perf_counter()
    store.get_historical_features(labels, features=TRAINING_FEATURES).to_arrow()
    console.print(f"the same training set again, now from the compacted history: {time.perf_counter() - t0:.2f}s")


def online(store: FeatureStore) -> None:
    step("6. Online feature vectors for a few users (in process)")
    resp = store.get_online_features(
        features=["user_profile:credit_limit", "user_profile:country", "merchant_stats:merchant_risk"],
        entity_rows=[{"user_id": u, "merchant_id": m} for u, m in ((1, 3), (2, 7), (3, 11), (10**9, 1))],
    )
    console.print(resp.to_pandas().to_string(index=False))
    console.print(f"statuses: {resp.statuses}")


STREAM_FEATURES = ["user_tx:amount_count_10m", "user_tx:amount_sum_10m", "user_tx:amount_count_1d"]


def streaming(store: FeatureStore) -> None:
    step("7. Streaming features: window aggregates kept fresh online by pushed events")
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    store.backfill("user_tx", now - timedelta(days=2), now, online=True)
    console.print(f"quiver backfill user_tx --online: state rebuilt from the offline events in {time.perf_counter() - t0:.2f}s")
    before = store.get_online_features(features=STREAM_FEATURES, entity_rows=[{"user_id": 1}]).to_dict()
    # events that happen now, after the first read: a later read counts them, and so does training at that time
    now = datetime.now(UTC)
    rows = [{"tx_id": 10_000_000 + i, "user_id": 1, "merchant_id": 3, "amount": a,
             "event_timestamp": now + timedelta(microseconds=i), "created_timestamp": now}
            for i, a in enumerate((12.5, 80.0, 7.25))]
    store.push("transactions", rows)
    after = store.get_online_features(features=STREAM_FEATURES, entity_rows=[{"user_id": 1}]).to_dict()
    for f in STREAM_FEATURES:
        name = f.split(":")[1]
        console.print(f"  user 1 {name:<18} before push {before[name][0]!s:>8}   after 3 pushed events {after[name][0]!s:>8}")


@contextmanager
def feature_server(store: FeatureStore) -> Iterator[str]:
    """``quiver serve`` in a child process on a free loopback port, stopped on exit."""
    import socket
    import subprocess

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-c", "from quiver.cli import main; main()", "-r", str(store.repo_path),
           "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # up to 30 s
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"quiver serve exited with code {proc.returncode}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def serving(store: FeatureStore, url: str) -> None:
    step(f"8. The feature server: quiver serve on {url}")
    import httpx

    body = {"feature_service": "fraud_model", "entities": {"user_id": [1, 2], "merchant_id": [3, 7]},
            "request_context": {"amount": [250.0, 12.0], "lat": [48.85, 40.71], "lon": [2.35, -74.0]}}
    t0 = time.perf_counter()
    resp = httpx.post(f"{url}/v1/features", json=body, timeout=30)
    took = (time.perf_counter() - t0) * 1000
    resp.raise_for_status()
    console.print(f"POST /v1/features (fraud_model, 2 users, with on-demand features): {took:.1f} ms")
    out = resp.json()
    t = Table("user_id", *out["feature_names"])
    for uid, r in zip(out["entities"]["user_id"], out["results"], strict=True):
        t.add_row(str(uid), *(f"{v:.4g}" if isinstance(v, float) else str(v) for v in r["values"]))
    console.print(t)
    console.print(f"windows evaluated at {out['evaluated_at']}; statuses all present: "
                  f"{all(s == 'present' for r in out['results'] for s in r['statuses'])}")


def fraud_model(store: FeatureStore, url: str) -> None:
    step("9. The fraud model end to end: train, score through the server, check skew, break things, catch them")
    from quiver.examples import fraud_model as example

    example.run(store, console, server_url=url)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "demo-repo")
    store = create(folder)
    with store:
        apply(store)
        catalog(store)
        training_set(store)
        materialize(store)
        online(store)
        streaming(store)
        with feature_server(store) as url:
            serving(store, url)
            fraud_model(store, url)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
