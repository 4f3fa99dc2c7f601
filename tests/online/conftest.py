"""Fixtures of the online tests: the fraud repository on each online backend."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

BACKENDS = ["sqlite", "redis"]
START = datetime(2026, 1, 1, tzinfo=UTC)


def set_online(repo: Path, backend: str, redis_url: str | None = None, prefix: str = "fraud") -> None:
    """Point the repository's quiver.yaml at ``backend``."""
    cfg = repo / "quiver.yaml"
    lines = [ln for ln in cfg.read_text().splitlines() if not ln.startswith("online:")]
    if backend == "sqlite":
        lines.append("online: {type: sqlite, path: data/online.db}")
    else:
        lines.append(f"online: {{type: redis, url: '{redis_url}', key_prefix: {prefix}}}")
    cfg.write_text("\n".join(lines) + "\n")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def online_repo(backend: str, fraud_repo: Path, request: pytest.FixtureRequest) -> Path:
    """The fraud example on ``backend`` (a clean Redis database for redis), applied."""
    from quiver import FeatureStore

    url = request.getfixturevalue("redis_clean_url") if backend == "redis" else None
    set_online(fraud_repo, backend, url)
    with FeatureStore(fraud_repo) as store:
        store.apply()
    return fraud_repo


def us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def dump(store: Any, view_name: str, keys: list[Any]) -> list[tuple[Any, ...] | None]:
    """Everything the online store holds for ``keys`` of a view (no TTL)."""
    view = store.get_feature_view(view_name)
    return store.online.lookup([(view, [(k,) for k in keys], view.feature_names)])[0]  # type: ignore[no-any-return]
