"""The DuckDB engine's own contract: column naming, stream events, write safety."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver import types
from quiver.definitions import Aggregation, FeatureView, Field, FileSource, KafkaSource
from quiver.errors import InputError
from tests.offline.harness import BASE, SEC, TS, USER, at, engine, training_set


def test_field_mapping_and_source_timestamp_names(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    pq.write_table(pa.table({
        "uid": pa.array([1, 1], pa.int64()), "cl": [10.0, 20.0],
        "ts": pa.array([at(0), at(5 * SEC)], pa.timestamp("us")),  # naive: UTC
    }), tmp_path / "src" / "p.parquet")
    view = FeatureView("p", [USER], FileSource("src/p.parquet", timestamp_field="ts", field_mapping={"cl": "credit"}),
                       schema=[Field("credit", types.Float64)])
    eng = engine(tmp_path)
    ents = pa.table({"uid": pa.array([1, 1], pa.int64()), "event_timestamp": pa.array([at(SEC), at(6 * SEC)], TS)})
    cold = training_set(eng, {"p": view}, ["p:credit"], ents)
    assert cold["credit"].to_pylist() == [10.0, 20.0]
    latest = eng.materialize(view, BASE, BASE + timedelta(days=1))
    assert latest.column_names == ["uid", "credit", "event_timestamp", "created_timestamp"]
    assert latest.to_pylist()[0]["created_timestamp"] == at(5 * SEC)  # no created column: the event time
    assert training_set(eng, {"p": view}, ["p:credit"], ents).equals(cold)
    eng.close()


def test_stream_events_use_the_stream_sources_names(tmp_path: Path) -> None:
    """A Kafka source and its batch source may name the event time differently."""
    (tmp_path / "src").mkdir()
    pq.write_table(pa.table({"uid": pa.array([1], pa.int64()), "amount": [1.0],
                             "batch_ts": pa.array([at(0)], TS)}), tmp_path / "src" / "tx.parquet")
    src = KafkaSource("tx", "tx", timestamp_field="ts", batch_source=FileSource("src/tx.parquet", timestamp_field="batch_ts"))
    view = FeatureView("tx_stats", [USER], src, aggregations=[Aggregation("amount", "sum", window=timedelta(minutes=1))])
    eng = engine(tmp_path)
    eng.write_events(src, pa.table({"uid": pa.array([1, 1], pa.int64()), "amount": [2.0, 4.0],
                                    "ts": pa.array([at(10 * SEC), BASE + timedelta(days=1, seconds=1)], TS)}))
    days = sorted(p.name for p in (tmp_path / "offline" / "events" / "tx").iterdir())
    assert days == ["date=2026-01-01", "date=2026-01-02"]
    assert not list((tmp_path / "offline" / "events").rglob(".*"))  # no temporary file left behind
    ents = pa.table({"uid": pa.array([1, 1], pa.int64()),
                     "event_timestamp": pa.array([at(20 * SEC), BASE + timedelta(days=1, seconds=2)], TS)})
    out = training_set(eng, {"tx_stats": view}, ["tx_stats:amount_sum_1m"], ents)
    assert out["amount_sum_1m"].to_pylist() == [3.0, 4.0]
    with pytest.raises(InputError, match="'ts'"):
        eng.write_events(src, pa.table({"uid": [1], "amount": [1.0]}))
    eng.close()


def test_materialize_aggregate_view_gives_values_at_end(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    pq.write_table(pa.table({"uid": pa.array([1, 1, 2], pa.int64()), "amount": [1.0, 2.0, 5.0],
                             "event_timestamp": pa.array([at(0), at(30 * SEC), at(50 * SEC)], TS)}),
                   tmp_path / "src" / "tx.parquet")
    view = FeatureView("s", [USER], FileSource("src/tx.parquet"),
                       aggregations=[Aggregation("amount", "sum", window=timedelta(seconds=40)),
                                     Aggregation("amount", "count", window=timedelta(seconds=40))])
    eng = engine(tmp_path)
    out = {r["uid"]: r for r in eng.materialize(view, BASE, at(60 * SEC)).to_pylist()}
    assert (out[1]["amount_sum_40s"], out[1]["amount_count_40s"]) == (2.0, 1)  # [20 s, 60 s)
    assert (out[2]["amount_sum_40s"], out[2]["amount_count_40s"]) == (5.0, 1)
    eng.close()
