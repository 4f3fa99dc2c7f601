"""Registry tests run on SQLite and on a real PostgreSQL server.

``repo`` is a feature repository in ``tmp_path`` whose registry is the
parametrized backend; ``repo.write(...)`` writes its definitions and
``repo.store()`` opens a ``FeatureStore`` on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from quiver import FeatureStore

# The definitions most tests start from; each {field} is what a test changes.
DEFS = '''
from datetime import timedelta
from quiver import Aggregation, Entity, FeatureService, FeatureView, Field, FileSource, OnDemandFeatureView, \\
    RequestSource, types

user = Entity(name="user", join_keys={join_keys})
profile_source = FileSource(path="{profile_path}", timestamp_field="event_timestamp")
user_profile = FeatureView(
    name="user_profile", entities=[user], source=profile_source, ttl=timedelta(days={ttl_days}),
    schema=[Field("credit_limit", types.{credit_dtype}), Field("country", types.String){extra_fields}],
    owner="{owner}", description="{description}", tags={tags}, freshness_sla=timedelta(days=1))
user_tx = FeatureView(
    name="user_tx", entities=[user], source=FileSource(path="data/tx.parquet"),
    aggregations=[Aggregation("amount", "sum", window=timedelta(minutes=10)){extra_aggs}],
    owner="risk@example.com")
tx = RequestSource(name="tx", schema=[Field("amount", types.Float64)])

def ratio(row):
    return {{"ratio": row["amount"] / {ratio_divisor}}}

amount_ratio = OnDemandFeatureView("amount_ratio", sources=[tx, user_profile[["credit_limit"]]],
                                   schema=[Field("ratio", types.Float64)], udf=ratio)
{service}
'''

SERVICE = 'fraud_model = FeatureService("fraud_model", features={features}, owner="risk@example.com")'

DEFAULTS: dict[str, Any] = {
    "join_keys": '["user_id"]',
    "profile_path": "data/profile.parquet",
    "ttl_days": 2,
    "credit_dtype": "Float64",
    "extra_fields": "",
    "owner": "risk@example.com",
    "description": "Daily profile",
    "tags": '{"team": "risk"}',
    "extra_aggs": "",
    "ratio_divisor": "row['credit_limit']",
    "service": SERVICE.format(features='[user_profile, user_tx[["amount_sum_10m"]]]'),
}


def defs(**changes: Any) -> str:
    return DEFS.format(**{**DEFAULTS, **changes})


class Repo:
    """A feature repository folder whose quiver.yaml points at one registry."""

    def __init__(self, path: Path, registry_url: str) -> None:
        self.path = path
        self.registry_url = registry_url
        path.mkdir(parents=True, exist_ok=True)
        self.configure()
        self._stores: list[FeatureStore] = []

    def configure(self, cache_ttl_seconds: float | None = None) -> None:
        reg = self.registry_url if cache_ttl_seconds is None else \
            f"{{path: '{self.registry_url}', cache_ttl_seconds: {cache_ttl_seconds}}}"
        (self.path / "quiver.yaml").write_text(f"project: test\nregistry: {reg}\n")

    def write(self, text: str | None = None, **changes: Any) -> Repo:
        (self.path / "features.py").write_text(text if text is not None else defs(**changes))
        return self

    def store(self) -> FeatureStore:
        s = FeatureStore(self.path)
        self._stores.append(s)
        return s

    def sibling(self, name: str) -> Repo:
        """Another repository folder that shares this registry."""
        return Repo(self.path.parent / name, self.registry_url)

    def close(self) -> None:
        for s in self._stores:
            s.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("postgres_db_url"))


@pytest.fixture
def repo(tmp_path: Path, registry_url: str) -> Iterator[Repo]:
    r = Repo(tmp_path / "repo", registry_url)
    yield r
    r.close()
