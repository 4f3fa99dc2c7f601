"""A small repository for the monitor's tests: two snapshot views whose data
ends just before the wall clock (online reads apply TTLs against it), eight
days of clean, stationary values, so every fault injected is the only thing
that can fail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

FEATURES = '''
from datetime import timedelta
from quiver import Entity, FeatureView, Field, FileSource, types

user = Entity(name="user", join_keys=["user_id"])
merchant = Entity(name="merchant", join_keys=["merchant_id"])

profile = FeatureView(
    name="profile", entities=[user], ttl=timedelta(days=2), freshness_sla=timedelta(days=1),
    source=FileSource(path="data/profile.parquet", timestamp_field="event_timestamp",
                      created_timestamp_column="created_timestamp"),
    schema=[Field("a", types.Float64), Field("b", types.Float64), Field("c", types.Int64),
            Field("country", types.String)],
)
stats = FeatureView(
    name="stats", entities=[merchant], ttl=timedelta(hours=3), freshness_sla=timedelta(hours=2),
    source=FileSource(path="data/stats.parquet", timestamp_field="event_timestamp"),
    schema=[Field("risk", types.Float64, monitoring={"psi": 0.25}), Field("volume", types.Int64)],
)
'''

USERS, MERCHANTS, DAYS = 300, 20, 8
COUNTRIES = np.array(["US", "GB", "DE", "FR", "IN"])


def _ts(values: list[datetime] | np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.timestamp("us", tz="UTC"))


def profile_table(now: datetime, seed: int = 1) -> pa.Table:
    """One snapshot per user per day, the last one an hour before ``now``."""
    rng = np.random.default_rng(seed)
    day = np.repeat(np.arange(DAYS), USERS)
    uid = np.tile(np.arange(USERS, dtype="int64"), DAYS)
    t = [now - timedelta(days=int(DAYS - 1 - d), hours=1) for d in day]
    n = uid.size
    return pa.table({
        "user_id": uid,
        "event_timestamp": _ts(t),
        "created_timestamp": _ts(t),
        "a": rng.normal(100, 10, n),
        "b": rng.normal(5, 1, n),
        "c": rng.poisson(20, n).astype("int64"),
        "country": COUNTRIES[rng.integers(0, len(COUNTRIES), n)],
    })


def stats_table(now: datetime, seed: int = 2, hours: int = DAYS * 24) -> pa.Table:
    """One row per merchant per hour, the last one 30 minutes before ``now``."""
    rng = np.random.default_rng(seed)
    h = np.repeat(np.arange(hours), MERCHANTS)
    mid = np.tile(np.arange(MERCHANTS, dtype="int64"), hours)
    t = [now - timedelta(hours=int(hours - 1 - x), minutes=30) for x in h]
    return pa.table({
        "merchant_id": mid,
        "event_timestamp": _ts(t),
        "risk": rng.beta(2, 20, mid.size),
        "volume": rng.poisson(30, mid.size).astype("int64"),
    })


def write_repo(root: Path, now: datetime, served_rate: float = 1.0, webhooks: list[str] | None = None) -> Path:
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "features.py").write_text(FEATURES)
    hooks = "" if not webhooks else "  webhooks: [" + ", ".join(webhooks) + "]\n"
    (root / "quiver.yaml").write_text(
        "project: montest\nregistry: data/registry.db\noffline: {engine: duckdb, path: data/offline}\n"
        "online: {type: sqlite, path: data/online.db}\n"
        f"monitoring:\n  served_log: {{sample_rate: {served_rate}, flush_seconds: 0.2}}\n{hooks}"
    )
    pq.write_table(profile_table(now), root / "data" / "profile.parquet")
    pq.write_table(stats_table(now), root / "data" / "stats.parquet")
    return root


@pytest.fixture(scope="session")
def mon_now() -> datetime:
    """The wall clock at the start of the session, to the second."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def mon_repo(tmp_path: Path, mon_now: datetime) -> Path:
    return write_repo(tmp_path / "repo", mon_now)
