"""The skew check recomputes on-demand features from the request values logged with
them, and says which ones it could not compare when none were logged."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from quiver.monitoring.served_log import ServedLog, served_dir
from quiver.store import FeatureStore
from tests.monitoring.conftest import FEATURES, write_repo

ON_DEMAND = '''
from quiver import RequestSource, on_demand_feature_view

tx = RequestSource(name="tx", schema=[Field("amount", types.Float64)])


@on_demand_feature_view(sources=[tx, profile[["a"]]], schema=[Field("amount_to_a", types.Float64)], mode="python")
def amount_to_a(row):
    if row["amount"] is None or not row["a"]:
        return {"amount_to_a": None}
    return {"amount_to_a": row["amount"] / row["a"]}


@on_demand_feature_view(sources=[profile[["b", "c"]]], schema=[Field("b_per_c", types.Float64)], mode="python")
def b_per_c(row):
    return {"b_per_c": None if not row["c"] or row["b"] is None else row["b"] / row["c"]}
'''
REFS = ["profile:country", "amount_to_a:amount_to_a", "b_per_c:b_per_c"]


def _repo(tmp_path: Path, now: datetime, rate: float) -> Path:
    root = write_repo(tmp_path / "repo", now, served_rate=rate)
    (root / "features.py").write_text(FEATURES + ON_DEMAND)
    return root


def _requests(n: int) -> list[tuple[list[dict[str, int]], dict[str, list[float]]]]:
    """Entity rows and request values: one row, or three in one request."""
    out = []
    for i in range(n):
        users = [i] if i % 4 else [i, i + 1, i + 2]
        out.append(([{"user_id": u} for u in users], {"amount": [10.0 + u * 0.5 for u in users]}))
    return out


def _served(store: FeatureStore, mon_now: datetime, n: int, *, with_request: bool) -> ServedLog:
    """Apply and materialize, then serve ``n`` requests of ``_requests`` and log every
    response, with the request values the on-demand views read or without them."""
    store.apply()
    store.materialize(mon_now - timedelta(days=9), mon_now)
    log = ServedLog(served_dir(store.config), 1.0, flush_seconds=60, compact_bytes=0)
    for rows, ctx in _requests(n):
        resp = store.get_online_features(features=REFS, entity_rows=rows, request_context=ctx)
        log.log(store.__dict__["_online_reader"].plan(REFS, None, False), resp, None, ctx if with_request else None)
    return log


def test_on_demand_features_are_recomputed_from_logged_request_values(tmp_path: Path, mon_now: datetime) -> None:
    with FeatureStore(_repo(tmp_path, mon_now, rate=0.0)) as store:
        log = _served(store, mon_now, 20, with_request=True)
        log.flush()
        clean = store.monitor_skew()
        assert clean.ok and clean.requests == 30 and not clean.not_compared
        assert {f.ref: (f.compared, f.differ) for f in clean.features} == {r: (30, 0) for r in REFS}

        # a request value logged that is not the one the function saw: the skew names that key
        rows, ctx = [{"user_id": 5}], {"amount": [99.0]}
        resp = store.get_online_features(features=REFS, entity_rows=rows, request_context=ctx)
        log.log(store.__dict__["_online_reader"].plan(REFS, None, False), resp, None, {"amount": [98.0]})
        log.close()
        rep = store.monitor_skew()
        assert not rep.ok
        skewed = rep.feature("amount_to_a:amount_to_a")
        assert (skewed.compared, skewed.differ) == (31, 1) and skewed.examples[0]["user_id"] == 5
        assert all(f.differ == 0 for f in rep.features if f is not skewed)


def test_without_request_values_only_their_on_demand_features_go_unchecked(tmp_path: Path, mon_now: datetime) -> None:
    with FeatureStore(_repo(tmp_path, mon_now, rate=0.0)) as store:
        log = _served(store, mon_now, 8, with_request=False)
        log.close()
        rep = store.monitor_skew()
        assert rep.ok and rep.requests == 12
        assert {f.ref: (f.compared, f.differ) for f in rep.features} == {
            "profile:country": (12, 0), "b_per_c:b_per_c": (12, 0)}
        assert list(rep.not_compared) == ["amount_to_a:amount_to_a"]
        assert "amount" in rep.not_compared["amount_to_a:amount_to_a"]
        assert rep.to_dict()["not_compared"] == rep.not_compared


def test_the_online_read_path_logs_a_clean_workload_without_skew(tmp_path: Path, mon_now: datetime) -> None:
    with FeatureStore(_repo(tmp_path, mon_now, rate=1.0)) as store:
        store.apply()
        store.materialize(mon_now - timedelta(days=9), mon_now)
        for rows, ctx in _requests(8):  # logged by get_online_features itself
            store.get_online_features(features=REFS, entity_rows=rows, request_context=ctx)
        rep = store.monitor_skew()
        assert rep.ok and rep.requests == 12
        assert all(f.differ == 0 and f.compared == 12 for f in rep.features)
        compared = {f.ref for f in rep.features}
        assert compared == set(REFS) and not rep.not_compared  # request values are logged with the vectors
