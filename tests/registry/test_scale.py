"""Two hundred views in one apply: correct, one transaction, progress reported."""

from __future__ import annotations

from tests.registry.conftest import Repo

N = 200

MANY = '''
from datetime import timedelta
from quiver import Entity, FeatureService, FeatureView, Field, FileSource, types

user = Entity(name="user", join_keys=["user_id"])
views = {{}}
for i in range({n}):
    views[f"v{{i:03d}}"] = FeatureView(
        name=f"v{{i:03d}}", entities=[user], source=FileSource(path=f"data/v{{i}}.parquet"),
        schema=[Field(f"f{{j}}", types.Float64) for j in range(5)], ttl=timedelta(days={ttl}),
        owner="team@example.com", tags={{"group": str(i % 10)}})
globals().update(views)
svc = FeatureService("svc", features=list(views.values())[:50])
'''


def test_apply_of_200_views(repo: Repo) -> None:
    repo.write(MANY.format(n=N, ttl=1))
    store = repo.store()
    seen: list[tuple[int, int]] = []
    plan = store.apply(progress=lambda i, n: seen.append((i, n)))
    assert plan.summary() == f"{N + 2} add"
    assert seen == [(n, N + 2) for n in (50, 100, 150, 200, 202)]  # progress per batch of writes
    assert store.registry.version == 1
    views = store.list_feature_views()
    assert len(views) == N and views[123].feature_names == [f"f{j}" for j in range(5)]
    assert len(store.get_feature_service("svc").features) == 250
    assert len(store.search("group=7")) == N // 10
    assert store.plan().is_empty
    # a change to all of them is 200 new versions in one apply
    repo.write(MANY.format(n=N, ttl=2))
    plan = store.apply()
    assert plan.summary() == f"{N} new_version"
    assert store.registry.version == 2
    assert {v.ttl.days for v in store.list_feature_views()} == {2}  # type: ignore[union-attr]
    assert store.get_feature_view("v199", 1).ttl.days == 1  # type: ignore[union-attr]
