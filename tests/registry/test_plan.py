"""Plan: what apply would add, change (field by field) and remove, with breaking changes marked."""

from __future__ import annotations

import json

from quiver.plan.diff import diff_specs
from tests.registry.conftest import SERVICE, Repo


def test_plan_on_an_empty_registry_adds_everything_and_writes_nothing(repo: Repo) -> None:
    store = repo.write().store()
    plan = store.plan()
    assert [(c.kind, c.name, c.action) for c in plan.pending] == [
        ("entity", "user", "add"), ("feature_view", "user_profile", "add"), ("feature_view", "user_tx", "add"),
        ("on_demand_feature_view", "amount_ratio", "add"), ("feature_service", "fraud_model", "add")]
    assert plan.summary() == "5 add" and not plan.breaking
    assert store.registry.version == 0 and store.list_feature_views() == []
    json.dumps(plan.to_dict())  # printable as JSON
    store.apply(plan=plan)
    assert store.plan().is_empty and store.plan().summary() == "no changes"


def test_field_level_diff_and_breaking_dtype(repo: Repo) -> None:
    store = repo.write().store()
    store.apply()
    repo.write(credit_dtype="Int64", ttl_days=3, extra_fields=', Field("age", types.Int64)')
    plan = store.plan()
    ch = next(c for c in plan.pending if c.name == "user_profile")
    assert ch.action == "new_version" and (ch.old_version, ch.new_version) == (1, 2)
    assert ch.diff == {"schema[credit_limit].dtype": ["Float64", "Int64"], "schema[age]": [None, {"name": "age",
                       "dtype": "Int64"}], "ttl": [172800.0, 259200.0]}
    assert ch.breaking == ["feature 'credit_limit' changed dtype from Float64 to Int64"]
    assert [c.name for c in plan.breaking] == ["user_profile"]


def test_removing_a_feature_a_service_uses_is_breaking(repo: Repo) -> None:
    store = repo.write().store()
    store.apply()
    # the service lists the view object, so it follows the view; the model loses `country`
    text = (repo.path / "features.py").read_text().replace(', Field("country", types.String)', "")
    repo.write(text)
    plan = store.plan()
    view = next(c for c in plan.pending if c.name == "user_profile")
    assert view.breaking == ["feature 'country' removed while feature services ['fraud_model'] use it"]
    svc = next(c for c in plan.pending if c.name == "fraud_model")
    assert svc.action == "new_version"
    # removing a feature nobody serves is not breaking
    only_credit = SERVICE.format(features='[user_profile[["credit_limit"]]]')
    repo.write(extra_fields=', Field("age", types.Int64)', service=only_credit)
    store.apply()
    repo.write(service=only_credit)
    assert next(c for c in store.plan().pending if c.name == "user_profile").breaking == []


def test_removing_a_served_view_is_breaking(repo: Repo) -> None:
    store = repo.write().store()
    store.apply()
    text = (repo.path / "features.py").read_text()
    start, end = text.index("user_tx = FeatureView("), text.index("tx = RequestSource")
    repo.write(text[:start] + text[end:].replace(
        SERVICE.format(features='[user_profile, user_tx[["amount_sum_10m"]]]'), SERVICE.format(features="[user_profile]")))
    plan = store.plan()
    removed = next(c for c in plan.pending if c.name == "user_tx")
    assert removed.action == "remove" and removed.breaking == ["removed while feature services ['fraud_model'] use it"]


def test_changing_join_keys_is_breaking(repo: Repo) -> None:
    store = repo.write().store()
    store.apply()
    repo.write(join_keys='["user_id", "account_id"]')
    plan = store.plan()
    by_name = {c.name: c for c in plan.pending}
    assert by_name["user"].breaking == ["join keys changed from ['user_id'] to ['user_id', 'account_id']"]
    assert by_name["user"].diff["join_keys"] == [["user_id"], ["user_id", "account_id"]]
    assert "join keys changed from ['user_id'] to ['user_id', 'account_id']" in by_name["user_profile"].breaking
    assert by_name["user_tx"].action == "new_version"


def test_metadata_only_change_is_not_a_version(repo: Repo) -> None:
    store = repo.write().store()
    store.apply()
    repo.write(description="Something else")
    plan = store.plan()
    assert [(c.name, c.action, c.new_version, c.diff) for c in plan.pending] == [
        ("user_profile", "update_metadata", 1, {"description": ["Daily profile", "Something else"]})]


def test_diff_specs_names_the_path() -> None:
    old = {"a": 1, "schema": [{"name": "x", "dtype": "Int64"}], "tags": {"t": "1"}, "l": [1, 2]}
    new = {"a": 1, "schema": [{"name": "x", "dtype": "String"}], "tags": {}, "l": [1, 3]}
    assert diff_specs(old, new) == {"schema[x].dtype": ["Int64", "String"], "tags.t": ["1", None], "l": [[1, 2], [1, 3]]}
    assert diff_specs(old, old) == {}


def test_changing_what_an_aggregate_views_state_holds_names_the_rebuild(repo: Repo) -> None:
    """A function added to an aggregate view (or a longer longest window) changes its online
    state's layout: the plan says so with the backfill that rebuilds it; renaming or
    describing an aggregation does not."""
    store = repo.write().store()
    store.apply()
    repo.write(extra_aggs=', Aggregation("amount", "count", window=timedelta(hours=1))')
    ch = next(c for c in store.plan().pending if c.name == "user_tx")
    assert ch.action == "new_version"
    assert ch.breaking == ["its online aggregation state was kept for other aggregations; reads and stream writes "
                           "refuse it until it is rebuilt: quiver backfill user_tx --online"]
    store.apply()
    repo.write(extra_aggs=', Aggregation("amount", "count", window=timedelta(hours=1), name="n_1h")')
    ch = next(c for c in store.plan().pending if c.name == "user_tx")
    assert ch.action == "new_version" and ch.breaking == []
