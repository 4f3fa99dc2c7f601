"""A feature repository whose aggregate view reads a Kafka topic (no batch history),
on SQLite or Redis, for the stream tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

FEATURES = '''
from datetime import timedelta
from quiver import Aggregation, Entity, FeatureView, FileSource, KafkaSource, PushSource, types, Field

user = Entity(name="user", join_keys=["user_id"])
transactions = KafkaSource(
    name="transactions", topic={topic!r}, timestamp_field="event_timestamp",
    bootstrap_servers={bootstrap!r},
    batch_source=FileSource(path="data/no_history/*.parquet", timestamp_field="event_timestamp"),
)
user_tx = FeatureView(
    name="user_tx", entities=[user], source=transactions,
    aggregations=[Aggregation("amount", f, window=w) for w in (timedelta(minutes=10), timedelta(hours=1),
                  timedelta(days=1)) for f in ("count", "sum")]
                 + [Aggregation("amount", f, window=timedelta(hours=1)) for f in ("mean", "min", "max", "last")]
                 + [Aggregation("merchant_id", "count_distinct", window=timedelta(days=1))],
)
clicks = PushSource(name="clicks", timestamp_field="ts")
user_clicks = FeatureView(
    name="user_clicks", entities=[user], source=clicks,
    aggregations=[Aggregation("n", "sum", window=timedelta(minutes=30)), Aggregation("n", "count", window=timedelta(hours=2))],
)
'''


def make_repo(path: Path, *, topic: str = "transactions", bootstrap: str = "127.0.0.1:9092",
              online: str = "{type: sqlite, path: data/online.db}", stream: str = "") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "quiver.yaml").write_text(textwrap.dedent(f"""\
        project: streamtest
        registry: data/registry.db
        offline: {{engine: duckdb, path: data/offline}}
        online: {online}
        {stream}
        """))
    (path / "features.py").write_text(FEATURES.format(topic=topic, bootstrap=bootstrap))
    return path


@pytest.fixture
def stream_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")
