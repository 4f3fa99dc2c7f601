"""Materialization on both backends: online values equal the point-in-time values
at the end of the range; re-runs, overlaps, out-of-order and killed runs converge;
incremental runs pick up rows that arrive late."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from click.testing import CliRunner

from quiver import FeatureStore
from quiver.retrieval.online import OnlineReader
from tests.online.conftest import START, dump, us

KEYS = {"user_profile": ("user_id", 200), "merchant_stats": ("merchant_id", 20)}
END = START + timedelta(days=5, hours=3, minutes=7)


def reference(repo: Path, view: str, end: datetime) -> list[tuple[Any, ...] | None]:
    """Brute force: the newest row by (event, created) with event time before ``end``, per key."""
    key, n = KEYS[view]
    df = pq.read_table(repo / "data" / f"{view}.parquet").to_pandas()
    df = df[df["event_timestamp"] < pd.Timestamp(end)]
    df = df.sort_values([key, "event_timestamp", "created_timestamp"]).drop_duplicates(key, keep="last")
    with FeatureStore(repo) as store:
        feats = store.get_feature_view(view).feature_names
    by_key = {int(r[key]): r for _, r in df.iterrows()}
    out: list[tuple[Any, ...] | None] = []
    for k in range(n + 3):
        r = by_key.get(k)
        if r is None:
            out.append(None)
            continue
        vals = tuple(None if pd.isna(r[f]) else (r[f].item() if hasattr(r[f], "item") else r[f]) for f in feats)
        out.append((*vals, us(r["event_timestamp"].to_pydatetime())))
    return out


def state(store: FeatureStore) -> dict[str, list[Any]]:
    return {v: dump(store, v, list(range(n + 3))) for v, (_, n) in KEYS.items()}


def test_online_equals_point_in_time_at_end(online_repo: Path) -> None:
    with FeatureStore(online_repo) as store:
        result = store.materialize(START, END)
        assert {v.view: v.rows for v in result.views if not v.skipped}["user_profile"] == 200
        for view in KEYS:
            assert dump(store, view, list(range(KEYS[view][1] + 3))) == reference(online_repo, view, END)
        # the same through get_online_features (TTL at read time) and get_historical_features
        t = END - timedelta(microseconds=1)
        feats = ["user_profile:credit_limit", "user_profile:country", "user_profile:num_orders_90d",
                 "merchant_stats:merchant_risk", "merchant_stats:merchant_tx_count_1h"]
        users, merchants = list(range(0, 203, 7)), [i % 23 for i in range(0, 203, 7)]
        reader = OnlineReader(store.registry, store.online, store.resolve, clock=lambda: us(t))
        online = reader.get(feats, entity_rows={"user_id": users, "merchant_id": merchants}).to_dict()
        entity_df = pd.DataFrame({"user_id": users, "merchant_id": merchants, "event_timestamp": [t] * len(users)})
        hist = store.get_historical_features(entity_df, feats).to_pandas()
        for f in feats:
            name = f.split(":")[1]
            expect = [None if pd.isna(v) else v for v in hist[name].tolist()]
            assert online[name] == expect, name


def test_reruns_overlaps_and_out_of_order_runs_converge(online_repo: Path) -> None:
    d = [START + timedelta(days=i) for i in range(8)]
    with FeatureStore(online_repo) as store:
        store.materialize(START, END)
        clean = state(store)
        for v in KEYS:
            store.online.delete_view(v)
        for a, b in [(d[3], END), (d[0], d[2]), (d[1], d[4]), (START, END), (d[2], d[3]), (START, END)]:
            store.materialize(a, b)
        assert state(store) == clean


def test_killed_run_then_rerun_ends_like_a_clean_run(online_repo: Path) -> None:
    script = textwrap.dedent(f"""
        import os, signal, sys
        import quiver.ingest.materialize as m
        from quiver import FeatureStore
        m.CHUNK = 40
        def progress(view, done, total):
            if done >= 80:
                os.kill(os.getpid(), signal.SIGKILL)
        FeatureStore(sys.argv[1]).materialize({START.isoformat()!r}, {END.isoformat()!r}, progress=progress)
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(online_repo)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    with FeatureStore(online_repo) as store:
        half = state(store)
        assert any(r is not None for rows in half.values() for r in rows)  # it did write something
        assert half != {v: reference(online_repo, v, END) for v in KEYS}  # ... but not everything
        assert store.registry.get_value("watermark", "user_profile") is None  # the view cut short keeps none
        store.materialize(START, END)
        assert state(store) == {v: reference(online_repo, v, END) for v in KEYS}


def test_incremental_picks_up_late_rows(online_repo: Path) -> None:
    end1, end2 = START + timedelta(days=3), START + timedelta(days=4, hours=5)
    with FeatureStore(online_repo) as store:
        store.materialize_incremental(end1)
        assert store.registry.get_value("watermark", "user_profile")["event"] == end1.isoformat()
        before = dump(store, "user_profile", [5, 6])
    # two rows arrive late: user 5 gets a newer value in the past, user 6 an older one
    path = online_repo / "data" / "user_profile.parquet"
    table = pq.read_table(path)
    late = datetime(2026, 3, 1, tzinfo=UTC)
    extra = []
    for uid, shift in ((5, timedelta(seconds=1)), (6, -timedelta(hours=1))):
        row = table.filter(pa.compute.equal(table["user_id"], uid)).to_pylist()
        ev = max(r["event_timestamp"] for r in row if r["event_timestamp"] < end1)
        base = next(r for r in row if r["event_timestamp"] == ev)
        extra.append({**base, "event_timestamp": ev + shift, "created_timestamp": late, "credit_limit": 123456.0})
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist(extra, schema=table.schema)]), path)
    with FeatureStore(online_repo) as store:
        store.materialize_incremental(end1)  # same end: only the late rows
        after = dump(store, "user_profile", [5, 6])
        assert after[0][1] == 123456.0 and after[0][-1] == us(extra[0]["event_timestamp"])
        assert after[1] == before[1]  # older than what is online: ignored
        store.materialize_incremental(end2)
        assert state(store)["user_profile"] == reference(online_repo, "user_profile", end2)
        wm = store.registry.get_value("watermark", "user_profile")
        assert wm["event"] == end2.isoformat() and datetime.fromisoformat(wm["created"]) >= late


def test_cli_materialize(online_repo: Path) -> None:
    from quiver.cli import cli

    runner = CliRunner()
    out = runner.invoke(cli, ["-r", str(online_repo), "materialize", START.isoformat(), END.isoformat(),
                              "--views", "user_profile"])
    assert out.exit_code == 0, out.output
    assert "materialized 200 keys" in out.output
    out = runner.invoke(cli, ["-r", str(online_repo), "materialize-incremental", END.isoformat(), "--json"])
    assert out.exit_code == 0, out.output
    assert '"view": "merchant_stats"' in out.output
    with FeatureStore(online_repo) as store:
        assert state(store)["merchant_stats"] == reference(online_repo, "merchant_stats", END)
