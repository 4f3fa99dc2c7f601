"""Discovery over the fraud example (real data files): catalog, describe, search, lineage,
and the apply-time checks against the sources' columns."""

from __future__ import annotations

from pathlib import Path

import pytest

from quiver import FeatureStore
from quiver.errors import DefinitionError, NotFoundError


@pytest.fixture
def fraud(fraud_repo: Path, registry_url: str) -> FeatureStore:
    cfg = fraud_repo / "quiver.yaml"
    cfg.write_text(cfg.read_text().replace("registry: data/registry.db", f"registry: {registry_url}"))
    store = FeatureStore(fraud_repo)
    store.apply()
    yield store
    store.close()


def test_catalog_lists_everything_with_owners_and_versions(fraud: FeatureStore) -> None:
    cat = fraud.catalog()
    assert cat["registry_version"] == 1
    assert [e["name"] for e in cat["entities"]] == ["merchant", "user"]
    views = {v["name"]: v for v in cat["feature_views"]}
    assert set(views) == {"merchant_stats", "user_home", "user_profile", "user_tx"}
    p = views["user_profile"]
    assert (p["owner"], p["version"], p["type"], p["ttl_seconds"], p["freshness_sla_seconds"]) == (
        "risk@example.com", 1, "snapshot", 2 * 86400, 86400)
    assert {"name": "credit_limit", "dtype": "Float64"} in p["features"]
    tx = views["user_tx"]
    assert tx["type"] == "aggregate" and tx["features"][1] == {
        "name": "amount_sum_10m", "dtype": "Float64", "aggregation": "sum(amount) over 10m"}
    assert [o["name"] for o in cat["on_demand_feature_views"]] == ["amount_vs_avg", "tx_distance"]


def test_describe_a_service_lists_what_it_serves_with_versions(fraud: FeatureStore) -> None:
    d = fraud.describe("fraud_model")
    assert d["kind"] == "feature_service" and d["owner"] == "risk@example.com"
    served = {f["ref"]: f for f in d["features"]}
    assert served["user_profile:credit_limit"] == {
        "ref": "user_profile:credit_limit", "view": "user_profile", "feature": "credit_limit", "version": 1,
        "dtype": "Float64"}
    assert served["tx_distance:distance_from_home_km"]["version"] == 1
    assert [h["action"] for h in d["versions"]] == ["add"]


def test_describe_a_view_and_a_feature(fraud: FeatureStore) -> None:
    d = fraud.describe("user_profile:credit_limit")
    assert d["feature"] == {"name": "credit_limit", "dtype": "Float64"}
    assert "service:fraud_model" in d["lineage"]["nodes"]
    with pytest.raises(NotFoundError, match=r"no feature 'credit'.*Did you mean 'credit_limit'"):
        fraud.describe("user_profile:credit")
    with pytest.raises(NotFoundError, match=r"nothing named 'user_profil'.*Did you mean 'user_profile'"):
        fraud.describe("user_profil")


def test_search_names_descriptions_tags_owners(fraud: FeatureStore) -> None:
    def names(text: str) -> set[str]:
        return {r["name"] for r in fraud.search(text)}

    assert names("merchants@example.com") == {"merchant_stats"}  # owner
    assert names("great-circle") == {"tx_distance"}  # description
    assert names("team=merchants") == {"merchant_stats"}  # tag
    assert names("amount_sum_1h") == {"user_tx"}  # feature name
    assert names("CREDIT_LIMIT") == {"user_profile", "fraud_model"}  # case-insensitive; the service serves it
    assert names("merchant_id") == {"merchant"}  # join key
    assert names("no such thing") == set()


def test_lineage_from_file_to_service(fraud: FeatureStore) -> None:
    g = fraud.lineage("fraud_model")
    edges = {tuple(e) for e in g["edges"]}
    assert ("file:data/user_profile.parquet", "source:user_profile") in edges
    assert ("source:user_profile", "view:user_profile") in edges
    assert ("view:user_profile", "service:fraud_model") in edges
    assert ("view:user_home", "view:tx_distance") in edges and ("request:tx_location", "view:tx_distance") in edges
    g = fraud.lineage("transactions")
    assert {tuple(e) for e in g["edges"]} == {
        ("file:data/transactions.parquet", "source:transactions"), ("source:transactions", "view:user_tx")}
    # a feature: only what reads it downstream
    g = fraud.lineage("user_profile:avg_amount_90d")
    assert "view:amount_vs_avg" in g["nodes"]
    assert "view:tx_distance" not in g["nodes"]
    with pytest.raises(NotFoundError, match="Did you mean 'user_profile'"):
        fraud.lineage("user_profil")


BAD_VIEW = '''
from datetime import timedelta
from quiver import Aggregation, FeatureView, FileSource
from features import user
bad = FeatureView(name="bad", entities=[user], source=FileSource(path="data/transactions.parquet"),
                  aggregations=[{agg}])
'''


@pytest.mark.parametrize(
    ("agg", "words"),
    [
        ('Aggregation("amout", "sum", window=timedelta(hours=1))',
         ["feature view 'bad'", "'amout'", "Did you mean 'amount'", "transactions.parquet"]),
        ('Aggregation("tx_id", "sum", window=timedelta(hours=1))', []),  # a number column: fine
        ('Aggregation("event_timestamp", "mean", window=timedelta(hours=1))', ["feature view 'bad'", "not numbers"]),
    ],
)
def test_apply_checks_the_columns_a_source_has(fraud: FeatureStore, agg: str, words: list[str]) -> None:
    (fraud.repo_path / "bad.py").write_text(BAD_VIEW.format(agg=agg))
    if not words:
        assert fraud.plan().pending[0].name == "bad"
        return
    with pytest.raises(DefinitionError) as info:
        fraud.plan()
    for w in words:
        assert w in str(info.value)


def test_a_service_naming_a_missing_feature_fails_at_apply(fraud: FeatureStore) -> None:
    (fraud.repo_path / "svc.py").write_text(
        'from quiver import FeatureService\nsvc = FeatureService("svc", features=["user_tx:amount_sum_2h"])\n')
    with pytest.raises(DefinitionError, match=r"feature service 'svc'.*'user_tx' has no feature 'amount_sum_2h'"):
        fraud.apply()
    assert fraud.registry.version == 1
