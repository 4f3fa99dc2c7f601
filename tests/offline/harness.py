"""Build views, source files and training sets straight on a DuckDB engine
(no registry), so property tests can run many small cases quickly."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from quiver import types
from quiver.config import RepoConfig
from quiver.definitions import FUNCTIONS, Aggregation, Entity, FeatureView, Field, FileSource
from quiver.offline.duckdb import DuckDBEngine
from quiver.plan.features import resolve_features
from quiver.plan.retrieval import ROW_ID, build_plan
from quiver.retrieval.historical import prepare_entities
from quiver.retrieval.job import RetrievalJob

BASE = datetime(2026, 1, 1, tzinfo=UTC)
SEC = 1_000_000
TS = pa.timestamp("us", tz="UTC")
USER = Entity(name="user", join_keys=["uid"])
PAIR = Entity(name="pair", join_keys=["k1", "k2"], dtypes={"k1": types.String, "k2": types.String})
WINDOWS = (timedelta(seconds=3), timedelta(seconds=10))
AGGS = [Aggregation("amount", fn, window=w) for fn in FUNCTIONS for w in WINDOWS]


def at(us: int) -> datetime:
    return BASE + timedelta(microseconds=us)


def engine(root: Path) -> DuckDBEngine:
    return DuckDBEngine(RepoConfig(repo_path=root, project="t", registry="registry.db",
                                   offline={"engine": "duckdb", "path": "offline"}))


def make_views(snap_ttl: timedelta | None = timedelta(seconds=5)) -> dict[str, FeatureView]:
    def src(name: str) -> FileSource:
        return FileSource(f"src/{name}", timestamp_field="event_timestamp", created_timestamp_column="created_timestamp",
                          name=name)

    return {
        "snap": FeatureView("snap", [USER], src("snap"), schema=[Field("value", types.Float64), Field("label", types.String)],
                            ttl=snap_ttl),
        "pairs": FeatureView("pairs", [PAIR], src("pairs"), schema=[Field("score", types.Float64)]),
        "agg": FeatureView("agg", [USER], src("events"), aggregations=AGGS),
    }


SCHEMAS = {
    "snap": {"uid": pa.int64(), "value": pa.float64(), "label": pa.string()},
    "pairs": {"k1": pa.string(), "k2": pa.string(), "score": pa.float64()},
    "events": {"uid": pa.int64(), "amount": pa.float64()},
}


def write_rows(root: Path, source: str, rows: Sequence[dict[str, Any]], part: str = "part-0") -> None:
    """Rows with integer-microsecond ``ts``/``created`` -> a Parquet file of the source folder."""
    cols: dict[str, pa.Array] = {c: pa.array([r[c] for r in rows], t) for c, t in SCHEMAS[source].items()}
    cols["event_timestamp"] = pa.array([at(r["ts"]) for r in rows], TS)
    cols["created_timestamp"] = pa.array([at(r["created"]) for r in rows], TS)
    d = root / "src" / source
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols), d / f"{part}.parquet")


def as_reference_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "event_timestamp": at(r["ts"]), "created_timestamp": at(r["created"])} for r in rows]


def training_set(eng: DuckDBEngine, views: dict[str, FeatureView], refs: list[str], entities: pa.Table,
                 *, as_known: bool = False, full_feature_names: bool = False) -> pa.Table:
    def get_view(name: str, version: int | None = None) -> FeatureView:
        return views[name]

    sel = resolve_features(refs, None, get_view, lambda n: None, lambda: list(views))  # type: ignore[arg-type,return-value]
    ent = prepare_entities(entities)
    plan = build_plan(sel, [c for c in ent.table.column_names if c != ROW_ID], get_view,
                      full_feature_names=full_feature_names, as_known=as_known)
    return RetrievalJob(plan, lambda: eng.get_historical_features(plan, ent)).to_arrow()


def compact_all(eng: DuckDBEngine, views: dict[str, FeatureView]) -> None:
    for v in views.values():
        eng.materialize(v, BASE - timedelta(days=1), BASE + timedelta(days=1))
