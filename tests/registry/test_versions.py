"""What the registry stores, versions, history and pinned reads (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from quiver.errors import DefinitionError, NotFoundError
from tests.registry.conftest import SERVICE, Repo


def test_every_object_is_stored_with_its_metadata(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUIVER_USER", "alice")
    before = datetime.now(UTC)
    store = repo.write().store()
    plan = store.apply()
    assert {(c.kind, c.name, c.action) for c in plan.changes} == {
        ("entity", "user", "add"), ("feature_view", "user_profile", "add"), ("feature_view", "user_tx", "add"),
        ("on_demand_feature_view", "amount_ratio", "add"), ("feature_service", "fraud_model", "add")}
    obj = store.registry.stored("feature_view", "user_profile")
    assert obj.version == 1 and obj.applied_by == "alice"
    assert before - timedelta(seconds=1) <= obj.created_at <= obj.updated_at <= datetime.now(UTC)
    assert obj.spec["schema"] == [{"name": "credit_limit", "dtype": "Float64"}, {"name": "country", "dtype": "String"}]
    assert obj.spec["source"]["path"] == "data/profile.parquet" and obj.spec["ttl"] == 2 * 86400
    # the metadata columns are real columns, for people querying the database
    engine = store.registry.store.engine
    with engine.connect() as c:
        row = c.execute(sa.text(
            "SELECT owner, description, tags, freshness_sla, applied_by, created_at, updated_at FROM quiver_objects "
            "WHERE kind = 'feature_view' AND name = 'user_profile'")).one()
    assert row.owner == "risk@example.com" and row.description == "Daily profile"
    assert row.tags == '{"team": "risk"}' and row.freshness_sla == 86400 and row.applied_by == "alice"
    assert row.created_at is not None and row.updated_at is not None
    # and the definitions come back whole
    v = store.get_feature_view("user_profile")
    assert v.owner == "risk@example.com" and v.tags == {"team": "risk"} and v.freshness_sla == timedelta(days=1)
    assert store.get_entity("user").join_keys == ("user_id",)
    assert store.get_feature_service("fraud_model").features == (
        "user_profile:credit_limit", "user_profile:country", "user_tx:amount_sum_10m")
    assert [v.name for v in store.list_feature_views()] == ["user_profile", "user_tx"]
    assert [v.name for v in store.list_on_demand_feature_views()] == ["amount_ratio"]


def test_changes_that_compute_differently_make_new_versions(repo: Repo) -> None:
    store = repo.write().store()
    store.apply()
    steps = [  # (change, view whose version moves)
        ({"ttl_days": 3}, "user_profile"),                                              # ttl
        ({"ttl_days": 3, "extra_fields": ', Field("age", types.Int64)'}, "user_profile"),  # schema
        ({"ttl_days": 3, "extra_fields": ', Field("age", types.Int64)', "profile_path": "data/p2.parquet"},
         "user_profile"),                                                                # source
    ]
    for i, (change, name) in enumerate(steps, start=2):
        repo.write(**change)
        plan = store.apply()
        ch = next(c for c in plan.changes if c.name == name)
        assert (ch.action, ch.old_version, ch.new_version) == ("new_version", i - 1, i)
        assert store.get_feature_view(name).version_hash == store.registry.stored("feature_view", name).version_hash
    final = {"ttl_days": 3, "extra_fields": ', Field("age", types.Int64)', "profile_path": "data/p2.parquet"}
    # aggregations and transformations version too
    repo.write(**final, extra_aggs=', Aggregation("amount", "count", window=timedelta(hours=1))')
    assert _action(store.apply(), "user_tx") == ("new_version", 2)
    repo.write(**final, extra_aggs=', Aggregation("amount", "count", window=timedelta(hours=1))',
               ratio_divisor="(row['credit_limit'] + 1)")
    assert _action(store.apply(), "amount_ratio") == ("new_version", 2)
    assert store.registry.stored("feature_view", "user_profile").version == 4

    # older versions stay readable and resolvable
    v1 = store.get_feature_view("user_profile", 1)
    assert v1.ttl == timedelta(days=2) and v1.feature_names == ["credit_limit", "country"]
    assert store.get_feature_view("user_profile", 3).source.path == "data/profile.parquet"  # type: ignore[attr-defined]
    sel = store.resolve(["user_profile@1:credit_limit", "user_profile:age"])
    assert [(v.name, v.version, v.features) for v in sel.views] == [
        ("user_profile", 1, ["credit_limit"]), ("user_profile", None, ["age"])]
    assert sel.views[0].view.ttl == timedelta(days=2)
    with pytest.raises(NotFoundError, match="age"):
        store.resolve(["user_profile@1:age"])  # version 1 had no age
    with pytest.raises(NotFoundError, match=r"no version 9; it has versions \[1, 2, 3, 4\]"):
        store.get_feature_view("user_profile", 9)


def test_metadata_changes_update_in_place_and_are_recorded(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    store = repo.write().store()
    store.apply()
    created = store.registry.stored("feature_view", "user_profile").created_at
    monkeypatch.setenv("QUIVER_USER", "bob")
    repo.write(owner="fraud@example.com", description="Nightly profile", tags='{"team": "fraud", "tier": "1"}')
    plan = store.apply()
    ch = next(c for c in plan.pending if c.name == "user_profile")
    assert ch.action == "update_metadata" and ch.new_version == 1
    assert ch.diff == {"owner": ["risk@example.com", "fraud@example.com"],
                       "description": ["Daily profile", "Nightly profile"],
                       "tags.team": ["risk", "fraud"], "tags.tier": [None, "1"]}
    assert [c.name for c in plan.pending] == ["user_profile"]  # nothing else moved
    obj = store.registry.stored("feature_view", "user_profile")
    assert obj.version == 1 and obj.spec["owner"] == "fraud@example.com" and obj.applied_by == "bob"
    assert obj.created_at == created and obj.updated_at > created
    hist = store.registry.history("user_profile", "feature_view")
    assert [(h["version"], h["action"], h["applied_by"]) for h in hist] == [
        (1, "add", hist[0]["applied_by"]), (1, "update_metadata", "bob")]
    assert hist[1]["diff"]["owner"] == ["risk@example.com", "fraud@example.com"]
    assert store.get_feature_view("user_profile").owner == "fraud@example.com"
    assert store.get_feature_view("user_profile", 1).owner == "fraud@example.com"


def test_remove_keeps_old_versions_readable_and_readd_continues(repo: Repo) -> None:
    store = repo.write().store()
    store.apply()
    text = (repo.path / "features.py").read_text()
    start, end = text.index("user_tx = FeatureView("), text.index("tx = RequestSource")
    repo.write(text[:start] + text[end:]
               .replace(SERVICE.format(features='[user_profile, user_tx[["amount_sum_10m"]]]'),
                        SERVICE.format(features="[user_profile]")))
    plan = store.apply()
    assert ("feature_view", "user_tx", "remove") in {(c.kind, c.name, c.action) for c in plan.pending}
    with pytest.raises(NotFoundError, match="user_tx"):
        store.get_feature_view("user_tx")
    assert store.get_feature_view("user_tx", 1).feature_names == ["amount_sum_10m"]
    assert store.resolve(["user_tx@1:amount_sum_10m"]).views[0].view.name == "user_tx"  # pinned reads still work
    repo.write()
    assert _action(store.plan(), "user_tx") == ("add", 2)
    plan = store.apply()
    assert _action(plan, "user_tx") == ("add", 2)
    assert [h["action"] for h in store.registry.history("user_tx", "feature_view")] == ["add", "remove", "add"]


def test_apply_is_one_transaction(repo: Repo) -> None:
    store = repo.write().store()
    version = store.registry.version

    def fail_midway(i: int, n: int) -> None:
        raise RuntimeError("interrupted")  # after the first writes, before the commit

    with pytest.raises(RuntimeError, match="interrupted"):
        store.apply(progress=fail_midway)
    store.registry.refresh()
    assert store.registry.version == version
    assert store.registry.store.list(all_versions=True) == [] and store.registry.history() == []
    seen: list[tuple[int, int]] = []
    store.apply(progress=lambda i, n: seen.append((i, n)))
    assert seen == [(5, 5)]
    assert store.registry.version == version + 1


def test_apply_of_objects_and_cross_checks(repo: Repo) -> None:
    from quiver import Entity, FeatureService, FeatureView, Field, FileSource, types

    store = repo.write().store()
    store.apply()
    user = Entity(name="user", join_keys=["user_id"])
    extra = FeatureView(name="extra", entities=[user], source=FileSource(path="data/x.parquet"),
                        schema=[Field("x", types.Int64)])
    plan = store.apply([extra, FeatureService("svc", features=["extra:x", "user_profile@1:credit_limit"])])
    assert {c.name for c in plan.pending} == {"extra", "svc"}  # nothing else removed
    assert store.get_feature_view("user_tx").name == "user_tx"
    with pytest.raises(DefinitionError, match=r"feature service 'bad'.*'user_profile' has no feature 'credit_limt'.*"
                                              r"Did you mean 'credit_limit'"):
        store.apply([FeatureService("bad", features=["user_profile:credit_limt"])])
    with pytest.raises(DefinitionError, match=r"feature service 'bad': unknown feature view 'user_profil'"):
        store.apply([FeatureService("bad", features=["user_profil:credit_limit"])])
    with pytest.raises(DefinitionError, match=r"feature service 'bad'.*no version 7"):
        store.apply([FeatureService("bad", features=["user_profile@7:credit_limit"])])


def _action(plan, name):  # type: ignore[no-untyped-def]
    ch = next(c for c in plan.pending if c.name == name)
    return ch.action, ch.new_version
