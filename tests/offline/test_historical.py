"""get_historical_features through the FeatureStore: inputs, rules, errors, datasets."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from quiver import FeatureStore
from quiver.errors import InputError, NotFoundError, QuiverError
from tests.offline.conftest import SEC, write_profile
from tests.offline.harness import BASE, TS, at

FEATS = ["profile:credit", "profile:country", "click_stats:amount_count_1h", "click_stats:amount_sum_1h"]


def labels(rows: list[tuple[int, int]], **extra: list) -> pa.Table:
    return pa.table({
        "user_id": pa.array([r[0] for r in rows], pa.int64()),
        "event_timestamp": pa.array([at(r[1] * SEC) for r in rows], TS),
        **extra,
    })


ROWS = [(1, 150), (2, 60), (3, 4000), (3, 3610), (9, 100), (1, 150), (1, 201), (1, 200)]


def test_rules_and_row_order(store: FeatureStore) -> None:
    out = store.get_historical_features(labels(ROWS, tag=list("abcdefgh")), features=FEATS).to_arrow()
    assert out.column_names == ["user_id", "event_timestamp", "tag", "credit", "country", "amount_count_1h", "amount_sum_1h"]
    assert out.schema.field("event_timestamp").type == TS
    assert out["tag"].to_pylist() == list("abcdefgh")  # order kept, duplicates kept, other columns unchanged
    assert out["credit"].to_pylist() == [111.0, None, None, 300.0, None, 111.0, 111.0, 111.0]
    assert out["country"].to_pylist() == ["US", "GB", None, "FR", None, "US", "US", "US"]
    assert out["amount_count_1h"].to_pylist() == [1, 1, 0, 0, 0, 1, 2, 1]
    assert out["amount_sum_1h"].to_pylist() == [1.0, 5.0, None, None, None, 1.0, 3.0, 1.0]


def test_as_known_ignores_later_corrections(store: FeatureStore) -> None:
    rows = labels([(1, 150), (1, 3650)])
    known = store.get_historical_features(rows, features=["profile:credit"], as_known=True).to_arrow()
    assert known["credit"].to_pylist() == [110.0, 110.0]  # the correction was made at 5000 s
    latest = store.get_historical_features(rows, features=["profile:credit"]).to_arrow()
    assert latest["credit"].to_pylist() == [111.0, 111.0]


def test_entity_inputs_agree(store: FeatureStore, tmp_path: Path) -> None:
    import polars as pl

    table = labels(ROWS)
    want = store.get_historical_features(table, features=FEATS).to_arrow()
    pq.write_table(table, tmp_path / "labels.parquet")
    frames = [
        table.to_pandas(),
        pl.from_arrow(table),
        str(tmp_path / "labels.parquet"),
        tmp_path / "labels.parquet",
        f"SELECT * FROM read_parquet('{tmp_path / 'labels.parquet'}')",
    ]
    for frame in frames:
        got = store.get_historical_features(frame, features=FEATS).to_arrow()
        assert got.equals(want), type(frame)
    job = store.get_historical_features(table.to_pandas(), features=FEATS)
    assert job.to_polars().shape == (len(ROWS), 6)
    assert job.to_parquet(tmp_path / "out.parquet") == len(ROWS)
    assert pq.read_table(tmp_path / "out.parquet").equals(want)


def test_time_zones_and_naive_times(store: FeatureStore) -> None:
    want = store.get_historical_features(labels(ROWS), features=FEATS).to_arrow()
    df = labels(ROWS).to_pandas()
    for ts in (df["event_timestamp"].dt.tz_convert("Asia/Tokyo"), df["event_timestamp"].dt.tz_localize(None)):
        got = store.get_historical_features(df.assign(event_timestamp=ts), features=FEATS).to_arrow()
        assert got.equals(want)


def test_materialize_warm_path_and_new_files(store: FeatureStore, repo: Path) -> None:
    table = labels(ROWS)
    cold = store.get_historical_features(table, features=FEATS).to_arrow()
    for v in ("profile", "click_stats"):
        store.offline.materialize(store.get_feature_view(v), BASE, BASE + timedelta(days=1))
    assert store.get_historical_features(table, features=FEATS).to_arrow().equals(cold)
    write_profile(repo, [(3, 3700, 3700, 333.0, "DE")], part="p1")  # a new file after materialize
    out = store.get_historical_features(labels([(3, 4000)]), features=["profile:credit"]).to_arrow()
    assert out["credit"].to_pylist() == [333.0]


def test_pushed_events_are_read_with_the_batch_files(store: FeatureStore, repo: Path) -> None:
    src = store.get_feature_view("click_stats").source
    store.offline.write_events(src, pa.table({
        "user_id": pa.array([1], pa.int64()), "amount": [10.0], "event_timestamp": pa.array([at(190 * SEC)], TS)}))
    files = list((repo / "data" / "offline" / "events" / "clicks").glob("date=2026-01-01/*.parquet"))
    assert len(files) == 1
    out = store.get_historical_features(labels([(1, 201)]), features=FEATS[2:]).to_arrow()
    assert out.to_pylist()[0] | {} == {"user_id": 1, "event_timestamp": at(201 * SEC),
                                       "amount_count_1h": 3, "amount_sum_1h": 13.0}


def test_materialize_returns_latest_rows(store: FeatureStore, repo: Path) -> None:
    view = store.get_feature_view("profile")
    latest = store.offline.materialize(view, BASE, BASE + timedelta(days=1))
    rows = {r["user_id"]: r for r in latest.to_pylist()}
    assert rows[1]["credit"] == 111.0 and rows[1]["created_timestamp"] == at(5000 * SEC)
    assert latest.column_names == ["user_id", "credit", "country", "event_timestamp", "created_timestamp"]
    assert latest.schema.field("created_timestamp").type == TS
    gen = store.offline.fresh_history(view)
    assert gen is not None
    again = store.offline.materialize(view, BASE, BASE + timedelta(days=1))
    assert again.sort_by("user_id").equals(latest.sort_by("user_id"))
    assert store.offline.fresh_history(view).directory == gen.directory  # idempotent: not rebuilt
    late = store.offline.materialize(view, BASE, BASE + timedelta(days=1), created_after=at(1000 * SEC))
    assert late.to_pylist() == [rows[1]]
    window = store.offline.materialize(view, BASE, at(60 * SEC))
    assert sorted(window["user_id"].to_pylist()) == [1, 2, 3]
    assert {r["user_id"]: r["credit"] for r in window.to_pylist()}[1] == 100.0


def test_on_demand_at_training_time(store: FeatureStore) -> None:
    table = labels([(1, 150), (2, 60), (9, 10)], bonus=pa.array([1.5, 2.0, 3.0]))
    out = store.get_historical_features(table, feature_service="model").to_arrow()
    assert out.column_names == ["user_id", "event_timestamp", "bonus", "country", "boosted"]
    assert out["boosted"].to_pylist() == [112.5, None, None]
    assert "credit" not in out.column_names  # joined for the on-demand view, not returned
    with pytest.raises(InputError, match="bonus"):
        store.get_historical_features(labels([(1, 150)]), feature_service="model")


def test_without_entity_rows(store: FeatureStore) -> None:
    job = store.get_historical_features(features=["profile:credit"], start=BASE, end=at(3600 * SEC))
    out = job.to_arrow()
    assert out.column_names == ["user_id", "event_timestamp", "credit"]
    assert [(r["user_id"], r["event_timestamp"], r["credit"]) for r in out.to_pylist()] == [
        (1, at(0), 100.0), (3, at(10 * SEC), 300.0), (2, at(50 * SEC), None), (1, at(100 * SEC), 111.0)]
    with pytest.raises(InputError, match="start"):
        store.get_historical_features(features=["profile:credit"])


def test_bad_input_errors(store: FeatureStore) -> None:
    with pytest.raises(NotFoundError, match="Did you mean 'profile'"):
        store.get_historical_features(labels(ROWS), features=["profil:credit"])
    with pytest.raises(NotFoundError, match="Did you mean 'credit'"):
        store.get_historical_features(labels(ROWS), features=["profile:credt"])
    with pytest.raises(NotFoundError, match="version"):
        store.get_historical_features(labels(ROWS), features=["profile@7:credit"])
    with pytest.raises(InputError, match="'user_id'"):
        store.get_historical_features(pa.table({"uid": [1], "event_timestamp": pa.array([at(0)], TS)}),
                                      features=["profile:credit"])
    with pytest.raises(InputError, match="event_timestamp"):
        store.get_historical_features(pa.table({"user_id": [1], "ts": pa.array([at(0)], TS)}), features=["profile:credit"])
    with pytest.raises(InputError, match="not a timestamp"):
        store.get_historical_features(pa.table({"user_id": [1], "event_timestamp": [5]}), features=["profile:credit"])
    with pytest.raises(InputError, match="user_id"):
        store.get_historical_features(pa.table({"user_id": ["x"], "event_timestamp": pa.array([at(0)], TS)}),
                                      features=["profile:credit"]).to_arrow()
    with pytest.raises(QuiverError):
        store.get_historical_features("no/such/labels.parquet", features=["profile:credit"])


def test_pinned_version_and_key_widths(store: FeatureStore) -> None:
    t = labels(ROWS)
    narrow = t.set_column(0, "user_id", t["user_id"].cast(pa.int32()))
    a = store.get_historical_features(t, features=["profile@1:credit"]).to_arrow()
    b = store.get_historical_features(narrow, features=["profile:credit"]).to_arrow()
    assert a["credit"].equals(b["credit"])


def test_saved_dataset(store: FeatureStore) -> None:
    job = store.get_historical_features(labels(ROWS), features=FEATS)
    ds = job.persist("train_v1")
    got = store.get_saved_dataset("train_v1")
    assert got.to_arrow().equals(job.to_arrow())
    assert got.versions == {"profile": {"kind": "feature_view", "version": 1,
                                        "version_hash": store.get_feature_view("profile").version_hash},
                            "click_stats": {"kind": "feature_view", "version": 1,
                                            "version_hash": store.get_feature_view("click_stats").version_hash}}
    assert got.entity_fingerprint == ds.entity_fingerprint and len(got.entity_fingerprint) == 64
    assert got.metadata["rows"] == len(ROWS) and got.features == FEATS
    other = store.get_historical_features(labels(ROWS[:-1]), features=FEATS).persist("train_v2")
    assert other.entity_fingerprint != ds.entity_fingerprint
    with pytest.raises(InputError, match="exists"):
        job.persist("train_v1")
    with pytest.raises(NotFoundError, match="train_v1"):
        store.get_saved_dataset("train_v3")


def test_cli_dataset_build(store: FeatureStore, repo: Path) -> None:
    from quiver.cli import cli

    pq.write_table(labels(ROWS), repo / "labels.parquet")
    out = repo / "train.parquet"
    res = CliRunner().invoke(cli, ["--repo", str(repo), "dataset", "build", "--features", ",".join(FEATS),
                                   "--entities", str(repo / "labels.parquet"), "--out", str(out), "--persist", "cli_set"])
    assert res.exit_code == 0, res.output
    assert pq.read_table(out).equals(store.get_historical_features(labels(ROWS), features=FEATS).to_arrow())
    assert store.get_saved_dataset("cli_set").metadata["rows"] == len(ROWS)
    res = CliRunner().invoke(cli, ["--repo", str(repo), "dataset", "build", "--entities", "x.parquet", "--out", "y"])
    assert res.exit_code != 0


def test_pandas_frame_output_is_utc(store: FeatureStore) -> None:
    df = store.get_historical_features(labels(ROWS), features=FEATS).to_pandas()
    assert str(df["event_timestamp"].dt.tz) == "UTC"
    assert isinstance(df, pd.DataFrame) and len(df) == len(ROWS)


def test_full_feature_names_and_name_clashes(store: FeatureStore) -> None:
    out = store.get_historical_features(labels(ROWS[:2]), features=FEATS[:2], full_feature_names=True).to_arrow()
    assert out.column_names[-2:] == ["profile__credit", "profile__country"]
    with pytest.raises(InputError, match="credit"):
        store.get_historical_features(labels(ROWS[:2], credit=[1.0, 2.0]), features=["profile:credit"])
