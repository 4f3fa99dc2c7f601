"""Optimistic concurrency, concurrent applies from several processes, and the read cache."""

from __future__ import annotations

import multiprocessing as mp
import os
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from quiver.errors import ConcurrentApplyError
from tests.registry.conftest import Repo



def _apply_repo(repo_dir: str, user: str) -> None:
    from quiver import FeatureStore

    os.environ["QUIVER_USER"] = user
    with FeatureStore(repo_dir) as store:
        store.apply()


def apply_elsewhere(repo: Repo, user: str = "carol") -> None:
    """`store.apply()` of ``repo`` in another process (forked: no import cost), as another user."""
    p = mp.get_context("fork").Process(target=_apply_repo, args=(str(repo.path), user))
    p.start()
    p.join(timeout=120)
    assert p.exitcode == 0


def test_a_stale_plan_fails_cleanly(repo: Repo) -> None:
    store = repo.write().store()
    store.apply()
    repo.write(ttl_days=5)
    plan = store.plan()
    apply_elsewhere(repo.sibling("other").write(ttl_days=7))
    with pytest.raises(ConcurrentApplyError) as info:
        store.apply(plan=plan)
    msg = str(info.value)
    assert "changed since this plan was made" in msg and "registry version 1" in msg
    assert "version 2 by carol" in msg and "Nothing was written" in msg and "quiver plan" in msg
    store.registry.refresh()
    assert store.get_feature_view("user_profile").ttl == timedelta(days=7)
    assert store.registry.version == 2
    # planning again sees the other apply and goes through
    plan = store.plan()
    assert next(c for c in plan.pending if c.name == "user_profile").diff == {"ttl": [7 * 86400.0, 5 * 86400.0]}
    store.apply(plan=plan)
    assert store.get_feature_view("user_profile").ttl == timedelta(days=5)
    assert store.registry.stored("feature_view", "user_profile").version == 3


def _apply_worker(repo_dir: str, worker: int, rounds: int, barrier: Any, results: Any) -> None:
    from quiver import Entity, FeatureStore, FeatureView, Field, FileSource, types

    store = FeatureStore(repo_dir)
    user = Entity(name="user", join_keys=["user_id"])
    src = FileSource(path="data/x.parquet")
    applied = conflicts = 0
    barrier.wait(timeout=60)
    for r in range(rounds):
        own = FeatureView(name=f"w{worker}_r{r}", entities=[user], source=src, schema=[Field("x", types.Int64)])
        # every apply also makes a new version of one shared view
        shared = FeatureView(name="shared", entities=[user], source=src, schema=[Field("x", types.Int64)],
                             ttl=timedelta(hours=1 + worker * rounds + r), description=f"by {worker}")
        for _ in range(200):
            try:
                store.apply([own, shared])
                applied += 1
                break
            except ConcurrentApplyError:
                conflicts += 1
        else:
            raise RuntimeError("no apply went through in 200 attempts")
    store.close()
    results.put((worker, applied, conflicts))


def test_processes_applying_at_once_never_corrupt_the_registry(repo: Repo) -> None:
    workers, rounds = 4, 3
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_apply_worker, args=(str(repo.path), w, rounds, barrier, results))
             for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers
    done = sorted(results.get(timeout=5) for _ in range(workers))
    assert [d[1] for d in done] == [rounds] * workers
    total = workers * rounds

    store = repo.store()
    assert store.registry.version == total  # one counter step per successful apply
    history = store.registry.history()
    assert sorted({h["registry_version"] for h in history}) == list(range(1, total + 1))
    with store.registry.store.engine.connect() as c:
        rows = c.execute(sa.text("SELECT kind, name, version, is_latest FROM quiver_objects")).all()
    shared = sorted((r.version, bool(r.is_latest)) for r in rows if r.name == "shared")
    assert [v for v, _ in shared] == list(range(1, total + 1))  # contiguous, none lost or doubled
    assert [latest for _, latest in shared] == [False] * (total - 1) + [True]
    assert sorted(r.name for r in rows if r.name.startswith("w")) == sorted(
        f"w{w}_r{r}" for w in range(workers) for r in range(rounds))
    assert [(r.kind, r.version) for r in rows if r.name == "user"] == [("entity", 1)]
    # everything stored reads back as definitions
    assert len(store.list_feature_views()) == total + 1
    for version in range(1, total + 1):  # each stored version is one writer's whole definition
        v = store.get_feature_view("shared", version)
        assert v.description == f"by {(v.ttl // timedelta(hours=1) - 1) // rounds}"  # type: ignore[operator]


def test_the_cache_follows_another_process_with_ttl_zero(repo: Repo) -> None:
    repo.configure(cache_ttl_seconds=0)
    store = repo.write().store()
    store.apply()
    assert store.get_feature_view("user_profile").ttl == timedelta(days=2)
    apply_elsewhere(repo.sibling("other").write(ttl_days=9))
    assert store.get_feature_view("user_profile").ttl == timedelta(days=9)
    assert store.resolve(["user_profile:credit_limit"]).views[0].view.ttl == timedelta(days=9)
    # a metadata-only change elsewhere is seen too (not masked by this process's own objects)
    store.apply()  # back to ttl 2: this process now holds its own definitions in memory
    apply_elsewhere(repo.sibling("other").write(owner="elsewhere@example.com"))
    assert store.get_feature_view("user_profile").owner == "elsewhere@example.com"


def test_the_default_cache_reads_once_and_refreshes(repo: Repo) -> None:
    repo.configure(cache_ttl_seconds=3600)  # long enough that only refresh() looks again
    store = repo.write().store()
    store.apply()
    store.get_feature_view("user_profile")
    queries: list[str] = []
    sa.event.listen(store.registry.store.engine, "before_cursor_execute", 
                    lambda *a: a[2].startswith("BEGIN") or queries.append(a[2]))
    for _ in range(1000):
        store.get_feature_view("user_profile")
        store.resolve(["user_profile:credit_limit", "user_tx:amount_sum_10m"])
    store.resolve(["user_profile@1:credit_limit"])
    n = len(queries)
    for _ in range(100):
        store.resolve(["user_profile@1:credit_limit"])  # pinned versions are cached too
    assert len(queries) == n, queries
    assert n == 1, queries  # the pinned version, read once
    apply_elsewhere(repo.sibling("other").write(ttl_days=9))
    assert store.get_feature_view("user_profile").ttl == timedelta(days=2)  # within the cache time
    store.registry.refresh()
    assert store.get_feature_view("user_profile").ttl == timedelta(days=9)
    assert store.get_feature_view("user_profile", 1).ttl == timedelta(days=2)


def test_reads_keep_the_cache_while_the_registry_is_unreachable(postgres_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import psycopg

    from quiver.errors import TransientError

    url = postgres_server.create_database()
    repo = Repo(tmp_path / "repo", url)
    repo.configure(cache_ttl_seconds=0)
    store = repo.write().store()
    store.apply()
    assert store.get_feature_view("user_profile").ttl == timedelta(days=2)
    db = url.rsplit("/", 1)[1]
    admin = f"host=127.0.0.1 port={postgres_server.port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as c:  # the registry database goes away for new connections
        c.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS false')
        c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,))
    try:
        store.registry.store.engine.dispose()
        assert store.get_feature_view("user_profile").ttl == timedelta(days=2)  # served from the cache
        with pytest.raises(TransientError, match="not reachable|could not be read|failed"):
            repo.store().get_feature_view("user_profile")  # a fresh process has no cache to fall back on
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'ALTER DATABASE "{db}" ALLOW_CONNECTIONS true')
    apply_elsewhere(repo.sibling("other").write(ttl_days=4))
    assert store.get_feature_view("user_profile").ttl == timedelta(days=4)  # and it catches up
