"""Training/serving consistency through a real broker.

The tiny fraud workload's transactions, shifted to end just before now, are
produced to Tansu and consumed by the stream worker into the online store
(SQLite and Redis). For many users and evaluation times, every online
aggregate equals what ``get_historical_features`` returns for the same user
and time, and what the brute-force oracle computes: exactly, floats bit for bit
(sum, mean and stddev are exact sums on every path, ``quiver.aggregation.exact``).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from quiver import FeatureStore
from quiver.testing.reference import window_aggregate
from tests.fixtures.kafka import CONSUMER, KafkaBroker, topic_name
from tests.stream.conftest import make_repo


def shifted_transactions(fraud_data: Path) -> pa.Table:
    """The tiny transactions with event times moved so the last one is 2 s before now."""
    tx = pq.read_table(fraud_data / "transactions.parquet")
    ts = pc.cast(tx.column("event_timestamp"), pa.int64()).to_numpy()
    shift = int(datetime.now(UTC).timestamp() * 1e6) - 2_000_000 - int(ts.max())
    new = pa.array(ts + shift, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return tx.set_column(tx.schema.get_field_index("event_timestamp"), "event_timestamp", new)


def produce(broker: KafkaBroker, topic: str, tx: pa.Table, bad: int = 0) -> list[dict[str, Any]]:
    """Produce the transactions as JSON (ISO strings and epoch numbers alternating), keyed by user."""
    rows = tx.select(["tx_id", "user_id", "merchant_id", "amount", "event_timestamp"]).to_pylist()
    values, keys = [], []
    for i, r in enumerate(rows):
        ts = r["event_timestamp"]
        msg = {**r, "event_timestamp": ts.isoformat() if i % 2 else ts.timestamp()}
        values.append(orjson.dumps(msg))
        keys.append(str(r["user_id"]).encode())
        if bad and i % (len(rows) // bad) == 0:
            values.append(b'{"user_id": 1, "amount": "lots"')
            keys.append(b"1")
    broker.produce(topic, values, keys)
    return rows


def online_config(request: pytest.FixtureRequest, kind: str) -> str:
    if kind == "redis":
        url = request.getfixturevalue("redis_clean_url")
        return f"{{type: redis, url: '{url}'}}"
    return "{type: sqlite, path: data/online.db}"


STRICT = True  # every value equal, floats bit for bit (no tolerance for sums any more)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return bool(a == b)


@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_streamed_aggregates_equal_training_data(
    request: pytest.FixtureRequest, kafka_broker: KafkaBroker, fraud_data: Path, tmp_path: Path, online: str
) -> None:
    topic = kafka_broker.create_topic(topic_name("tx"), partitions=3)
    repo = make_repo(tmp_path / "repo", topic=topic, bootstrap=kafka_broker.bootstrap,
                     online=online_config(request, online))
    store = FeatureStore(repo)
    store.apply()
    tx = shifted_transactions(fraud_data)
    events = produce(kafka_broker, topic, tx, bad=5)
    result = store.stream(idle_exit=0.5, max_seconds=120, options={"consumer": CONSUMER, "batch_size": 700})
    src = result["sources"]["transactions"]
    assert src["events"] == len(events)
    assert src["dead_letters"] == 5  # counted, and the worker kept going
    status = store.stream_status()
    assert status["dead_letters"] == 5 and "not JSON" in status["dead_letter_reasons"][0]

    view = store.get_feature_view("user_tx")
    now = datetime.now(UTC)
    counts = np.bincount(tx.column("user_id").to_numpy())
    busy = [int(u) for u in np.argsort(counts)[-8:]]
    rng = np.random.default_rng(3)
    users = busy + [int(u) for u in rng.choice(len(counts), 24, replace=False)] + [10**6]
    offsets = [timedelta(0), timedelta(microseconds=1), timedelta(seconds=1), timedelta(minutes=4),
               timedelta(minutes=9, seconds=59), timedelta(minutes=37), timedelta(hours=5), timedelta(hours=23, minutes=59)]
    feats = [f"user_tx:{f}" for f in view.feature_names]
    aggs = [(a.column, a.function, a.window, a.name) for a in view.aggregations]
    by_user: dict[int, list[dict[str, Any]]] = {}
    for e in events:
        by_user.setdefault(e["user_id"], []).append(e)
    for off in offsets:
        at = now + off
        keys = pa.table({"user_id": pa.array(users, pa.int64())})
        served = store.online.read_aggregates(view, keys, None, at).to_pylist()
        entity_df = pa.table({"user_id": pa.array(users, pa.int64()),
                              "event_timestamp": pa.array([at] * len(users), pa.timestamp("us", tz="UTC"))})
        trained = store.get_historical_features(entity_df, features=feats).to_arrow().to_pylist()
        oracle = [window_aggregate([{"user_id": u, "event_timestamp": at}], by_user.get(u, []), ["user_id"], aggs)[0]
                  for u in users]
        for u, s, t, o in zip(users, served, trained, oracle, strict=True):
            for name in view.feature_names:
                assert same(s[name], t[name]), (online, off, u, name, s[name], t[name])
                assert same(s[name], o[name]), (online, off, u, name, s[name], o[name])
    store.close()
