"""The online read path on both backends: statuses, TTL at read time, key
coercion and input errors, composite keys, services, on-demand views."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from quiver import FeatureStore, FeatureView, Field, FileSource, OnDemandFeatureView, RequestSource, types
from quiver.errors import InputError, NotFoundError
from quiver.retrieval.online import OnlineReader
from tests.online.conftest import START, dump

END = START + timedelta(days=6)
FEATS = ["user_profile:credit_limit", "user_profile:country", "merchant_stats:merchant_risk"]


@pytest.fixture
def store(online_repo: Path) -> FeatureStore:
    s = FeatureStore(online_repo)
    s.materialize(START, END)
    yield s
    s.close()


def reader_at(store: FeatureStore, t_us: int) -> OnlineReader:
    return OnlineReader(store.registry, store.online, store.resolve, clock=lambda: t_us)


def test_dict_shape_statuses_and_event_times(store: FeatureStore) -> None:
    ev = dump(store, "user_profile", [3])[0][-1]
    resp = reader_at(store, ev).get(FEATS, entity_rows=[{"user_id": 3, "merchant_id": 1}, {"user_id": 10**9, "merchant_id": 2}])
    d = resp.to_dict()
    assert list(d) == ["user_id", "merchant_id", "credit_limit", "country", "merchant_risk"]
    assert d["user_id"] == [3, 10**9] and d["country"][1] is None and d["country"][0] is not None
    assert resp.statuses["country"] == ["present", "not_found"]
    assert resp.event_timestamps["user_profile"][1] is None
    assert int(resp.event_timestamps["user_profile"][0].timestamp() * 1e6) == ev
    df = resp.to_pandas()
    assert list(df.columns) == list(d) and len(df) == 2


def test_ttl_is_applied_at_read_time(store: FeatureStore) -> None:
    ev = dump(store, "user_profile", [4])[0][-1]
    ttl = int(timedelta(days=2) / timedelta(microseconds=1))
    inside = reader_at(store, ev + ttl).get(["user_profile:country"], entity_rows=[{"user_id": 4}])
    outside = reader_at(store, ev + ttl + 1).get(["user_profile:country"], entity_rows=[{"user_id": 4}])
    assert inside.statuses["country"] == ["present"] and inside.to_dict()["country"][0] is not None
    assert outside.statuses["country"] == ["outside_ttl"] and outside.to_dict()["country"] == [None]
    assert outside.event_timestamps["user_profile"][0] is not None
    # the real clock is long past the data: everything is outside its ttl
    assert store.get_online_features(FEATS, entity_rows=[{"user_id": 4, "merchant_id": 1}]).statuses["country"] == ["outside_ttl"]


def test_keys_are_coerced_by_their_declared_type(store: FeatureStore) -> None:
    r = reader_at(store, dump(store, "user_profile", [7])[0][-1])
    want = r.get(["user_profile:country"], entity_rows=[{"user_id": 7}]).to_dict()["country"]
    for key in ("7", " 7", 7.0):
        got = r.get(["user_profile:country"], entity_rows=[{"user_id": key}]).to_dict()
        assert got == {"user_id": [7], "country": want}
    assert r.get(["user_profile:country"], entity_rows={"user_id": ["7", 7]}).to_dict()["country"] == want * 2


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([{"user_id": "seven"}], "join key 'user_id'.*'seven'.*Int64"),
        ([{"user_id": 7.5}], "join key 'user_id'"),
        ([{"user_id": True}], "join key 'user_id'"),
        ([{"user_id": None}], "'user_id' is null"),
        ([{"user": 7}], "entity row 0 has no join key 'user_id'"),
        ({"user_id": [1, 2], "merchant_id": [1]}, "different lengths"),
        ("user_id=7", "entity_rows must be"),
    ],
)
def test_bad_entity_rows_are_input_errors(store: FeatureStore, rows: object, match: str) -> None:
    feats = ["user_profile:country"] + (["merchant_stats:merchant_risk"] if isinstance(rows, dict) else [])
    with pytest.raises(InputError, match=match):
        store.get_online_features(feats, entity_rows=rows)  # type: ignore[arg-type]


def test_unknown_feature_is_not_found(store: FeatureStore) -> None:
    with pytest.raises(NotFoundError, match="credit_limt"):
        store.get_online_features(["user_profile:credit_limt"], entity_rows=[{"user_id": 1}])


def test_service_and_full_feature_names(store: FeatureStore) -> None:
    svc = store.get_feature_service("fraud_model")
    ctx = {"amount": 10.0, "lat": 48.8, "lon": 2.3}
    resp = store.get_online_features(feature_service="fraud_model", entity_rows=[{"user_id": 1, "merchant_id": 1}],
                                     request_context=ctx, full_feature_names=True)
    d = resp.to_dict()
    assert list(d)[:2] == ["user_id", "merchant_id"]
    assert "user_profile__credit_limit" in d and "merchant_stats__merchant_risk" in d
    assert set(resp.statuses) == set(d) - {"user_id", "merchant_id"}
    assert len(d) == 2 + len(svc.features)


def test_composite_keys_and_on_demand_view(store: FeatureStore) -> None:
    user, merchant = store.get_entity("user"), store.get_entity("merchant")
    pair = FeatureView(
        name="pair_amount", entities=[user, merchant],
        source=FileSource(path="data/transactions.parquet", timestamp_field="event_timestamp",
                          created_timestamp_column="created_timestamp"),
        schema=[Field("amount", types.Float64), Field("tx_id", types.Int64)],
    )
    req = RequestSource(name="req", schema=[Field("amount_now", types.Float64)])

    def ratio(row: dict) -> dict:  # type: ignore[type-arg]
        limit = row["credit_limit"]
        return {"amount_ratio": None if limit is None else row["amount_now"] / limit}

    odfv = OnDemandFeatureView("amount_ratio", [store.get_feature_view("user_profile")[["credit_limit"]], req],
                               [Field("amount_ratio", types.Float64)], ratio)
    store.apply([pair, odfv])
    store.materialize(START, END, ["pair_amount"])
    tx = store.online.lookup([(pair, [(u, m) for u in range(30) for m in range(20)], ["tx_id"])])[0]
    (u, m), row = next(((u, m), r) for (u, m), r in zip([(u, m) for u in range(30) for m in range(20)], tx) if r)
    ev = row[-1]
    r = reader_at(store, ev)
    resp = r.get(["pair_amount:tx_id", "amount_ratio:amount_ratio"],
                 entity_rows=[{"user_id": u, "merchant_id": m}, {"user_id": u, "merchant_id": 10**6}],
                 request_context={"amount_now": 50.0})
    d = resp.to_dict()
    assert d["tx_id"] == [row[0], None] and resp.statuses["tx_id"] == ["present", "not_found"]
    limit = r.get(["user_profile:credit_limit"], entity_rows=[{"user_id": u}]).to_dict()["credit_limit"][0]
    assert d["amount_ratio"] == [None if limit is None else 50.0 / limit] * 2
    with pytest.raises(InputError, match="amount_now"):
        r.get(["amount_ratio:amount_ratio"], entity_rows=[{"user_id": u}])
