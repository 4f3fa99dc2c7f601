"""Backfill: online state rebuilt from offline events (resumable, no double count after
a crash), the offline history of an aggregate view, and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from quiver import FeatureStore
from quiver.cli import cli
from quiver.testing.reference import window_aggregate


def _push_offline(store: FeatureStore) -> list[dict]:
    now = datetime.now(UTC)
    rows = [{"user_id": i % 4, "n": float(i % 7), "ts": now - timedelta(minutes=2 * i + 1)} for i in range(90)]
    store.push("clicks", rows, to="offline")
    return [{**r, "event_timestamp": r["ts"]} for r in rows]


def _check(store: FeatureStore, events: list[dict]) -> None:
    view = store.get_feature_view("user_clicks")
    at = datetime.now(UTC)
    users = [0, 1, 2, 3]
    got = store.online.read_aggregates(view, pa.table({"user_id": users}), None, at).to_pylist()
    aggs = [(a.column, a.function, a.window, a.name) for a in view.aggregations]
    assert got == window_aggregate([{"user_id": u, "event_timestamp": at} for u in users], events, ["user_id"], aggs)


def test_online_rebuild_is_resumable_without_double_counting(stream_repo: Path) -> None:
    store = FeatureStore(stream_repo)
    store.apply()
    events = _push_offline(store)
    view = store.get_feature_view("user_clicks")
    assert store.online.read_aggregates(view, pa.table({"user_id": [0]}), None, datetime.now(UTC)).to_pylist()[0][
        "n_count_2h"] == 0  # offline only, so far
    start, end = datetime.now(UTC) - timedelta(hours=4), datetime.now(UTC) + timedelta(minutes=1)

    def crash(i: int, n: int) -> None:
        if i == 5:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        store.backfill("user_clicks", start, end, online=True, chunk="30m", progress=crash)
    progress = store.registry.get_value("backfill", "user_clicks:online")
    assert progress["done"] == [0, 1, 2, 3, 4] and not progress["finished"]
    # a chunk applied but not yet marked done is skipped by its recorded number
    progress["done"] = [0, 1, 2, 3]
    store.registry.set_value("backfill", "user_clicks:online", progress)
    result = store.backfill("user_clicks", start, end, online=True, chunk="30m")
    assert result["chunks_skipped"] == 4 and result["chunks"] == 9
    assert store.registry.get_value("backfill", "user_clicks:online")["finished"]
    _check(store, events)
    store.close()


def test_offline_history_and_cli(stream_repo: Path) -> None:
    store = FeatureStore(stream_repo)
    store.apply()
    events = _push_offline(store)
    store.close()
    start = (datetime.now(UTC) - timedelta(hours=4)).isoformat()
    end = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    runner = CliRunner()
    out = runner.invoke(cli, ["-r", str(stream_repo), "backfill", "user_clicks", "--start", start, "--end", end,
                              "--chunk", "1h", "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["rows"] == len(events)
    files = sorted((stream_repo / "data/offline/backfill/user_clicks").glob("*.parquet"))
    history = pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()
    assert len(history) == len(events)
    aggs = [("n", "sum", timedelta(minutes=30), "n_sum_30m"), ("n", "count", timedelta(hours=2), "n_count_2h")]
    want = window_aggregate(history, events, ["user_id"], aggs)
    assert [{k: h[k] for k in ("n_sum_30m", "n_count_2h")} for h in history] == want
    out = runner.invoke(cli, ["-r", str(stream_repo), "backfill", "user_clicks", "--start", start, "--end", end,
                              "--online"])
    assert out.exit_code == 0 and "chunk" in out.output, out.output
    out = runner.invoke(cli, ["-r", str(stream_repo), "stream", "--status", "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["dead_letters"] == 0
    store = FeatureStore(stream_repo)
    _check(store, events)
    store.close()
