"""store.push: the stream path without Kafka, and the message parser's dead letters."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from quiver import FeatureStore
from quiver.errors import InputError
from quiver.ingest.stream import parse_messages
from quiver.streams.kafka import Message
from quiver.testing.reference import window_aggregate
from quiver.timeutil import TIMESTAMP


def test_push_then_read_is_exact(stream_repo: Path) -> None:
    store = FeatureStore(stream_repo)
    store.apply()
    now = datetime.now(UTC)
    rows = [{"user_id": i % 3, "n": float(i), "ts": (now - timedelta(minutes=3 * i)).isoformat()} for i in range(60)]
    rows += [{"user_id": 1, "n": 5.0, "ts": (now - timedelta(seconds=5)).timestamp()}]  # epoch seconds
    assert store.push("clicks", rows) == 61
    view = store.get_feature_view("user_clicks")
    at = datetime.now(UTC)
    got = store.online.read_aggregates(view, pa.table({"user_id": [0, 1, 2, 9]}), None, at).to_pylist()
    events = [{**r, "event_timestamp": datetime.fromisoformat(r["ts"]) if isinstance(r["ts"], str)
               else datetime.fromtimestamp(r["ts"], UTC)} for r in rows]
    aggs = [(a.column, a.function, a.window, a.name) for a in view.aggregations]
    want = window_aggregate([{"user_id": u, "event_timestamp": at} for u in (0, 1, 2, 9)], events, ["user_id"], aggs)
    assert got == want
    # served through the facade too (t = now, so the newest events count)
    resp = store.get_online_features(["user_clicks:n_count_2h"], entity_rows=[{"user_id": 1}, {"user_id": 9}]).to_dict()
    assert resp["n_count_2h"] == [want[1]["n_count_2h"], 0] == [14, 0]
    # and kept offline for training
    offline = list((stream_repo / "data/offline/events/clicks").glob("date=*/*.parquet"))
    assert offline
    store.close()


def test_push_refuses_bad_rows(stream_repo: Path) -> None:
    store = FeatureStore(stream_repo)
    store.apply()
    with pytest.raises(InputError, match="missing field"):
        store.push("clicks", [{"user_id": 1, "n": 1.0}])
    with pytest.raises(InputError, match="expected a number"):
        store.push("clicks", [{"user_id": 1, "n": "x", "ts": "2026-01-01T00:00:00Z"}])
    with pytest.raises(Exception, match="no feature view reads source"):
        store.push("clickz", [{"user_id": 1}])
    store.close()


def test_parser_sends_bad_messages_to_dead_letters(stream_repo: Path) -> None:
    store = FeatureStore(stream_repo)
    store.apply()
    view = store.get_feature_view("user_tx")
    now = time.time()
    good = {"user_id": 1, "amount": 2.5, "merchant_id": 3, "event_timestamp": now}
    values = [
        orjson.dumps(good),
        orjson.dumps({**good, "event_timestamp": "2026-01-01T10:00:00+02:00"}),
        orjson.dumps({**good, "event_timestamp": int(now * 1000)}),  # epoch milliseconds
        b"{not json",
        orjson.dumps([1, 2]),
        orjson.dumps({"amount": 1.0, "event_timestamp": now}),
        orjson.dumps({**good, "amount": "ten"}),
        orjson.dumps({**good, "event_timestamp": "yesterday"}),
        orjson.dumps({**good, "amount": None}),  # a null value is an event with no amount
    ]
    msgs = [Message("tx", 2, 100 + i, v, None) for i, v in enumerate(values)]
    table, dead, good_idx = parse_messages(msgs, view.source, [view])
    assert good_idx == [0, 1, 2, 8]
    assert [(d.offset, d.partition, d.topic) for d in dead] == [(103, 2, "tx"), (104, 2, "tx"), (105, 2, "tx"),
                                                                 (106, 2, "tx"), (107, 2, "tx")]
    reasons = [d.reason for d in dead]
    assert reasons[0].startswith("not JSON") and "object" in reasons[1] and "user_id" in reasons[2]
    assert "amount" in reasons[3] and "timestamp" in reasons[4]
    ts = table.column("event_timestamp")
    assert ts.type == TIMESTAMP
    assert ts[1].as_py() == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert abs(ts[2].as_py().timestamp() - now) < 0.01
    store.close()


def test_batch_parser_and_message_parser_agree(stream_repo: Path) -> None:
    """A clean batch is read by Arrow's JSON reader in one go; it must mean the same as
    the per-message path that a batch with one bad message falls back to."""
    store = FeatureStore(stream_repo)
    store.apply()
    view = store.get_feature_view("user_tx")
    now = time.time()
    for stamp in (lambda i: now - i * 0.37, lambda i: datetime.fromtimestamp(now - i * 0.37, UTC).isoformat()):
        values = [orjson.dumps({"user_id": i % 5, "amount": i * 1.5, "merchant_id": i % 3, "tx_id": i,
                                "event_timestamp": stamp(i)}) for i in range(50)]
        msgs = [Message("tx", 0, i, v, None) for i, v in enumerate(values)]
        fast, dead, good = parse_messages(msgs, view.source, [view])
        slow, dead2, good2 = parse_messages([*msgs, Message("tx", 0, 50, b"{bad", None)], view.source, [view])
        assert not dead and len(dead2) == 1 and good2 == good == list(range(50))
        cols = ["user_id", "amount", "merchant_id", "tx_id", "event_timestamp"]
        assert fast.select(cols).to_pylist() == slow.select(cols).to_pylist()
    store.close()
