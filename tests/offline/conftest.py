"""A small repository of its own for training-set tests: a snapshot view over a
folder source, an aggregate view over a push source, an on-demand view with a
request field, and a service."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver import FeatureStore
from tests.offline.harness import TS, at

SEC = 1_000_000
FEATURES = textwrap.dedent('''
    from datetime import timedelta
    from quiver import (Aggregation, Entity, FeatureService, FeatureView, Field, FileSource, PushSource,
                        RequestSource, on_demand_feature_view, types)

    user = Entity(name="user", join_keys=["user_id"])
    profile = FeatureView(
        name="profile", entities=[user], ttl=timedelta(hours=1),
        source=FileSource(path="data/profile", created_timestamp_column="created_timestamp", name="profile_src"),
        schema=[Field("credit", types.Float64), Field("country", types.String)],
    )
    clicks = PushSource(name="clicks", batch_source=FileSource(path="data/clicks.parquet", name="clicks_batch"),
                        schema=[Field("user_id", types.Int64), Field("amount", types.Float64)])
    click_stats = FeatureView(
        name="click_stats", entities=[user], source=clicks,
        aggregations=[Aggregation("amount", "count", window=timedelta(hours=1)),
                      Aggregation("amount", "sum", window=timedelta(hours=1))],
    )
    req = RequestSource(name="req", schema=[Field("bonus", types.Float64)])

    @on_demand_feature_view(sources=[req, profile[["credit"]]], schema=[Field("boosted", types.Float64)])
    def boosted(row):
        if row["credit"] is None or row["bonus"] is None:
            return {"boosted": None}
        return {"boosted": row["credit"] + row["bonus"]}

    model = FeatureService(name="model", features=[profile[["country"]], boosted])
''')


def write_profile(repo: Path, rows: list[tuple[int, int, int, float | None, str | None]], part: str = "p0") -> None:
    """rows: (user_id, event second, created second, credit, country)."""
    d = repo / "data" / "profile"
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "user_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([at(r[1] * SEC) for r in rows], TS),
        "created_timestamp": pa.array([at(r[2] * SEC) for r in rows], TS),
        "credit": pa.array([r[3] for r in rows], pa.float64()),
        "country": pa.array([r[4] for r in rows], pa.string()),
    }), d / f"{part}.parquet")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / "quiver.yaml").write_text(
        "project: t\nregistry: data/registry.db\noffline: {engine: duckdb, path: data/offline}\n"
        "online: {type: sqlite, path: data/online.db}\n"
    )
    (tmp_path / "features.py").write_text(FEATURES)
    write_profile(tmp_path, [
        (1, 0, 0, 100.0, "US"),
        (1, 100, 100, 110.0, "US"),
        (1, 100, 5000, 111.0, "US"),   # a correction of the row above, made much later
        (2, 50, 50, None, "GB"),       # a null in the chosen row
        (3, 10, 10, 300.0, "FR"),
    ])
    pq.write_table(pa.table({
        "user_id": pa.array([1, 1, 2], pa.int64()),
        "amount": [1.0, 2.0, 5.0],
        "event_timestamp": pa.array([at(10 * SEC), at(200 * SEC), at(20 * SEC)], TS),
    }), tmp_path / "data" / "clicks.parquet")
    return tmp_path


@pytest.fixture
def store(repo: Path) -> FeatureStore:
    s = FeatureStore(repo)
    s.apply()
    yield s
    s.close()
