"""Each fault, injected on otherwise clean data, is flagged exactly, and nothing else."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from quiver.store import FeatureStore
from tests.monitoring.conftest import stats_table


def failing(run: object) -> set[tuple[str, str, str]]:
    return {(r.view, r.feature, r.check) for r in run.failing}  # type: ignore[attr-defined]


@pytest.fixture
def store(mon_repo: Path, mon_now: datetime):
    s = FeatureStore(mon_repo)
    s.apply()
    s.materialize(mon_now - timedelta(days=9), mon_now)
    yield s
    s.close()


def _rewrite_last_day(repo: Path, now: datetime, fn) -> None:
    path = repo / "data" / "profile.parquet"
    t = pq.read_table(path)
    last = pc.greater_equal(t["event_timestamp"], pa.scalar(now - timedelta(days=1), pa.timestamp("us", tz="UTC")))
    pq.write_table(fn(t, last), path)


def test_clean_workload_passes_and_raises_no_alert(store: FeatureStore, mon_now: datetime) -> None:
    run = store.monitor(now=mon_now)
    assert failing(run) == set()
    assert run.alerts == []
    checks = {(r.view, r.feature, r.check) for r in run.results}
    assert ("profile", "", "freshness_online") in checks and ("stats", "", "freshness_offline") in checks
    assert ("profile", "a", "psi") in checks and ("profile", "country", "js") in checks
    assert store.monitor(now=mon_now).alerts == []


def test_view_not_refreshed_past_its_sla(mon_repo: Path, mon_now: datetime) -> None:
    # stats stopped five hours ago (SLA 2h), and materialization stopped with it
    pq.write_table(stats_table(mon_now - timedelta(hours=5), hours=8 * 24 - 5), mon_repo / "data" / "stats.parquet")
    with FeatureStore(mon_repo) as s:
        s.apply()
        s.materialize(mon_now - timedelta(days=9), mon_now - timedelta(hours=5), views=["stats"])
        s.materialize(mon_now - timedelta(days=9), mon_now, views=["profile"])
        run = s.monitor(now=mon_now)
    assert failing(run) == {("stats", "", "freshness_offline"), ("stats", "", "freshness_online")}
    online = next(r for r in run.failing if r.check == "freshness_online")
    assert online.value == pytest.approx(5 * 3600) and online.threshold == 2 * 3600


def test_null_spike_in_one_feature(store: FeatureStore, mon_repo: Path, mon_now: datetime) -> None:
    rng = np.random.default_rng(3)

    def nulls(t: pa.Table, last: pa.Array) -> pa.Array:
        hit = pc.and_(last, pa.array(rng.random(t.num_rows) < 0.6))
        b = pc.if_else(hit, pa.scalar(None, pa.float64()), t["b"])
        return t.set_column(t.schema.get_field_index("b"), "b", b)

    _rewrite_last_day(mon_repo, mon_now, nulls)
    run = store.monitor(now=mon_now)
    assert failing(run) == {("profile", "b", "null_rate")}
    r = run.failing[0]
    assert 0.5 < r.value < 0.7 and r.threshold < 0.2


def test_mean_shift_of_one_std_in_one_feature(store: FeatureStore, mon_repo: Path, mon_now: datetime) -> None:
    def shift(t: pa.Table, last: pa.Array) -> pa.Table:
        a = pc.if_else(last, pc.add(t["a"], 10.0), t["a"])  # a ~ N(100, 10): one standard deviation
        return t.set_column(t.schema.get_field_index("a"), "a", a)

    _rewrite_last_day(mon_repo, mon_now, shift)
    run = store.monitor(now=mon_now)
    assert ("profile", "a", "psi") in failing(run)
    assert {f for _, f, _ in failing(run)} == {"a"}
    assert {c for *_, c in failing(run)} <= {"psi", "ks"}
    psi = next(r for r in run.results if (r.feature, r.check) == ("a", "psi"))
    assert psi.value > psi.threshold == 0.2
    others = [r for r in run.results if r.check in ("psi", "ks", "js") and r.feature != "a"]
    assert others and all(r.status == "ok" for r in others)


def test_column_removed_from_the_source(store: FeatureStore, mon_repo: Path, mon_now: datetime) -> None:
    path = mon_repo / "data" / "profile.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["c"]), path)
    run = store.monitor(now=mon_now)
    assert failing(run) == {("profile", "c", "schema")}
    assert "'c'" in run.failing[0].detail and "missing" in run.failing[0].detail


def test_column_that_changed_type(store: FeatureStore, mon_repo: Path, mon_now: datetime) -> None:
    path = mon_repo / "data" / "profile.parquet"
    t = pq.read_table(path)
    t = t.set_column(t.schema.get_field_index("c"), "c", pc.cast(t["c"], pa.string()))
    pq.write_table(t, path)
    run = store.monitor(now=mon_now)
    assert ("profile", "c", "schema") in failing(run)
    assert "changed type" in next(r.detail for r in run.failing if r.check == "schema")
    assert {f for _, f, _ in failing(run)} == {"c"}


def test_tampered_online_value_is_found_by_the_skew_check(store: FeatureStore, mon_now: datetime) -> None:
    refs = ["profile:a", "profile:country", "stats:risk"]
    rows = [{"user_id": i, "merchant_id": i % 20} for i in range(40)]
    store.get_online_features(features=refs, entity_rows=rows)
    clean = store.monitor_skew()
    assert clean.ok and clean.requests == 40 and {f.ref for f in clean.features} == set(refs)

    view = store.get_feature_view("profile")
    keys = pa.table({"user_id": pa.array([7], pa.int64())})
    cur = store.online.read(view, keys, ["a", "b", "c", "country"])
    later = pa.array([datetime.now(mon_now.tzinfo)], pa.timestamp("us", tz="UTC"))
    tampered = pa.table({"user_id": keys["user_id"], "a": [-1.0], "b": cur["b"], "c": cur["c"],
                         "country": cur["country"], "event_timestamp": cur["event_timestamp"],
                         "created_timestamp": later})
    store.online.write(view, tampered)
    store.get_online_features(features=refs, entity_rows=rows)
    rep = store.monitor_skew()
    assert not rep.ok and rep.requests == 80
    a = rep.feature("profile:a")
    assert a.differ == 1 and a.compared == 80
    assert a.examples[0]["user_id"] == 7 and a.examples[0]["served"] == -1.0
    assert all(f.differ == 0 for f in rep.features if f.ref != "profile:a")
    hist = store.monitor_history("profile:a")["checks"]["skew"]
    assert [h["status"] for h in hist] == ["ok", "failing"]
