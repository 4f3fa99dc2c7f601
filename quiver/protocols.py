"""The whole backend contract: four Protocols, columnar (Arrow) in and out.

Backends are reached only through ``quiver.plugins.load``; nothing above them
imports a concrete backend. Each backend declares what it can do in a
``Capabilities`` value that the facade checks before work starts, instead of
failing deep inside with ``NotImplementedError``.

Tables that cross these interfaces use the column names of the view:
join keys, feature names, ``event_timestamp`` and ``created_timestamp``
(both ``timestamp[us, tz=UTC]``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pyarrow as pa

if TYPE_CHECKING:
    from quiver.definitions import FeatureView, Source
    from quiver.plan.retrieval import EntityInput, RetrievalPlan

__all__ = [
    "EVENT_TS",
    "CREATED_TS",
    "Capabilities",
    "OfflineEngine",
    "OnlineStore",
    "NewVersion",
    "RegistryStore",
    "RegistryTransaction",
    "StoredObject",
    "StreamSource",
]

EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the facade checks these before it starts work."""

    historical_retrieval: bool = False
    window_aggregation: bool = False
    compacted_history: bool = False
    aggregate_state: bool = False
    transactions: bool = False
    extras: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class StoredObject:
    """One row of the registry: a definition at one version, with its metadata."""

    kind: str
    name: str
    version: int
    spec: dict[str, Any]
    version_hash: str
    created_at: datetime
    updated_at: datetime
    applied_by: str
    is_latest: bool = True


@runtime_checkable
class RegistryStore(Protocol):
    """Generic storage of definitions by kind: put/get/list in one transaction per apply.

    ``version()`` is a counter bumped by every apply; caches compare it to know
    when to reload, and ``transaction(expected_version)`` fails with
    ``ConcurrentApplyError`` when someone applied in between.
    """

    capabilities: Capabilities

    def version(self) -> int: ...

    def get(self, kind: str, name: str, version: int | None = None) -> StoredObject | None: ...

    def list(self, kind: str | None = None, *, all_versions: bool = False) -> list[StoredObject]: ...

    def max_versions(self) -> dict[tuple[str, str], int]:
        """(kind, name) -> the highest version ever stored, removed objects included."""
        ...

    def history(self, kind: str | None = None, name: str | None = None) -> list[dict[str, Any]]: ...

    def transaction(self, expected_version: int, user: str) -> AbstractContextManager[RegistryTransaction]:
        """One apply: all writes commit together, or none when the block raises."""
        ...

    def get_value(self, namespace: str, key: str) -> Any: ...

    def set_value(self, namespace: str, key: str, value: Any) -> None: ...

    def list_values(self, namespace: str) -> dict[str, Any]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class NewVersion:
    """One object's next version, as an apply writes it."""

    kind: str
    name: str
    spec: dict[str, Any]
    version_hash: str
    diff: Any = None
    action: str = "new_version"


class RegistryTransaction(Protocol):
    """The writes of one apply; each is also recorded in the registry's history."""

    def put_versions(self, items: Sequence[NewVersion]) -> list[int]:
        """Store the next version of each object (1 when new) as its latest; returns the versions."""
        ...

    def put_version(
        self, kind: str, name: str, spec: dict[str, Any], version_hash: str, diff: Any, action: str = "new_version"
    ) -> int:
        """Store the next version of an object (1 when new) as its latest; returns the version."""
        ...

    def update_metadata(self, kind: str, name: str, spec: dict[str, Any], diff: Any) -> int:
        """Rewrite owner, description, tags or SLA of the latest version in place."""
        ...

    def remove(self, kind: str, name: str) -> None:
        """Retire an object; its versions stay readable."""
        ...


@runtime_checkable
class OfflineEngine(Protocol):
    """Runs point-in-time joins, window aggregations and history writes.

    Engine-neutral: DuckDB is the embedded default; a Spark engine implements
    the same methods. Inputs and outputs are Arrow.
    """

    capabilities: Capabilities

    def source_schema(self, source: Source) -> pa.Schema:
        """The columns of a source as the engine reads them (for apply-time checks)."""
        ...

    def read_source(
        self, source: Source, start: datetime | None = None, end: datetime | None = None
    ) -> pa.RecordBatchReader:
        """A source's rows in ``[start, end)`` of event time, columns as named by the view."""
        ...

    def materialize(
        self, view: FeatureView, start: datetime, end: datetime, *, created_after: datetime | None = None
    ) -> pa.Table:
        """Write the view's compacted history (deduplicated on keys and event time by the
        greatest created time, superseded versions kept) and return the latest row per
        key with event time in ``[start, end)`` (only rows created after
        ``created_after`` when given). Idempotent."""
        ...

    def write_events(self, source: Source, table: pa.Table) -> None:
        """Append pushed/streamed events of a Kafka or push source to the offline store;
        every later read of a view over that source sees them."""
        ...

    def get_historical_features(self, plan: RetrievalPlan, entities: EntityInput) -> pa.RecordBatchReader:
        """Run an engine-neutral retrieval plan (point-in-time joins and window
        aggregations) over the entity rows; one output row per entity row, in order."""
        ...

    def query(self, sql: str) -> pa.Table:
        """Run a query in the engine's own SQL (an entity frame given as a query)."""
        ...

    def entity_timeline(self, views: list[FeatureView], start: datetime, end: datetime) -> pa.Table:
        """Every (join keys, event_timestamp) with rows in ``[start, end)`` in any of the
        views (which share join keys), sorted by time: entity rows for a training set
        asked for without an entity frame."""
        ...

    def write_dataset(self, name: str, batches: pa.RecordBatchReader) -> tuple[str, int]:
        """Store a saved dataset's rows; returns where (engine-specific location) and how many."""
        ...

    def read_dataset(self, path: str) -> pa.Table:
        """Read back a dataset written by ``write_dataset``."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class OnlineStore(Protocol):
    """Latest values (and aggregation state) per entity key.

    ``write`` never goes backwards: a row whose (event_timestamp,
    created_timestamp) is older than what is stored for its key is ignored,
    so repeated and out-of-order writes converge.
    """

    capabilities: Capabilities

    def write(self, view: FeatureView, table: pa.Table) -> int:
        """Upsert rows (join keys, features, event and created timestamps); returns rows written."""
        ...

    def read(self, view: FeatureView, keys: pa.Table, features: Sequence[str]) -> pa.Table:
        """One row per row of ``keys``, in order: the features plus ``event_timestamp``
        (null where the key is unknown)."""
        ...

    def lookup(
        self, reads: Sequence[tuple[FeatureView, Sequence[tuple[Any, ...]], Sequence[str]]]
    ) -> list[list[tuple[Any, ...] | None]]:
        """The hot path of ``get_online_features``: for each ``(view, key tuples,
        features)``, one entry per key: ``None`` when unknown, else the feature
        values (Python objects) followed by the event time in epoch microseconds.
        All reads of one call go out together (one query per view, one round trip)."""
        ...

    def delete_view(self, view_name: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class StreamSource(Protocol):
    """A partitioned event log read by a consumer group (Kafka)."""

    def poll(self, max_messages: int, timeout: float) -> Iterator[Any]: ...

    def commit(self, offsets: dict[int, int]) -> None: ...

    def close(self) -> None: ...
