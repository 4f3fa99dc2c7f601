"""Saved datasets: a training set kept with what it was built from.

``job.persist(name)`` writes the rows through the offline engine (Parquet
under ``{offline}/datasets/`` for DuckDB) and records, in the registry under
``saved_dataset/<name>``, the features asked for, the exact version and
version hash of every view used (on-demand inputs included), a fingerprint of
the entity rows, and when and by whom it was made. Six months later,
``store.get_saved_dataset(name)`` returns the same rows with that record, so
the set can be audited, or rebuilt with ``view@version:feature`` references
and checked against the fingerprint.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from quiver.definitions._base import check_name
from quiver.errors import InputError, NotFoundError, closest
from quiver.plan.retrieval import ROW_ID

if TYPE_CHECKING:
    import pandas as pd

    from quiver.protocols import OfflineEngine
    from quiver.registry import Registry
    from quiver.retrieval.job import RetrievalJob

__all__ = ["NAMESPACE", "SavedDataset", "entity_fingerprint", "get_saved_dataset", "persist_job"]

NAMESPACE = "saved_dataset"


def entity_fingerprint(table: pa.Table) -> str:
    """SHA-256 of the entity rows (columns, types and values, in order)."""
    table = table.drop_columns([ROW_ID]) if ROW_ID in table.column_names else table
    h = hashlib.sha256()
    h.update(str(table.schema).encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table.combine_chunks())
    h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


@dataclass(frozen=True)
class SavedDataset:
    """A persisted training set and its record (``metadata``)."""

    name: str
    metadata: dict[str, Any]
    _engine: Any

    @property
    def path(self) -> str:
        return str(self.metadata["path"])

    @property
    def features(self) -> list[str]:
        return list(self.metadata["features"])

    @property
    def versions(self) -> dict[str, Any]:
        """View name -> {kind, version, version_hash} as used to build it."""
        return dict(self.metadata["versions"])

    @property
    def entity_fingerprint(self) -> str:
        return str(self.metadata["entity_fingerprint"])

    def to_arrow(self) -> pa.Table:
        return self._engine.read_dataset(self.path)

    def to_pandas(self) -> pd.DataFrame:
        return self.to_arrow().to_pandas()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.metadata}


def _versions(registry: Registry, job: RetrievalJob) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for vp in job.plan.views:
        obj = registry.stored("feature_view", vp.view.name, vp.version)
        out[vp.view.name if vp.version is None else f"{vp.view.name}@{vp.version}"] = {
            "kind": "feature_view", "version": obj.version, "version_hash": obj.version_hash,
        }
    for step in job.plan.on_demand:
        obj = registry.stored("on_demand_feature_view", step.view.name)
        out[step.view.name] = {"kind": "on_demand_feature_view", "version": obj.version, "version_hash": obj.version_hash}
    return out


def persist_job(engine: OfflineEngine, registry: Registry, job: RetrievalJob, name: str, overwrite: bool) -> SavedDataset:
    check_name("saved dataset", name)
    if not overwrite and registry.get_value(NAMESPACE, name) is not None:
        raise InputError(f"a saved dataset {name!r} exists already; pass overwrite=True or choose another name")
    versions = _versions(registry, job)
    path, rows = engine.write_dataset(name, job.to_reader())
    from quiver.registry import current_user

    meta = {
        **job.metadata,
        "path": path,
        "rows": rows,
        "columns": job.columns,
        "versions": versions,
        "entity_fingerprint": entity_fingerprint(job.entities.table),  # type: ignore[attr-defined]
        "created_at": datetime.now(UTC).isoformat(),
        "created_by": current_user(),
    }
    registry.set_value(NAMESPACE, name, meta)
    return SavedDataset(name, meta, engine)


def get_saved_dataset(engine: OfflineEngine, registry: Registry, name: str) -> SavedDataset:
    meta = registry.get_value(NAMESPACE, name)
    if meta is None:
        known = list(registry.list_values(NAMESPACE))
        raise NotFoundError(f"no saved dataset {name!r}.{closest(name, known)}" + ("" if known else " None is saved yet: use job.persist(name)."))
    return SavedDataset(name, dict(meta), engine)
