"""Sources: where raw rows come from.

``FileSource`` (Parquet file, folder or glob), ``KafkaSource`` (a topic, with a
batch source holding the same events' history), ``PushSource`` (rows pushed
through the API) and ``RequestSource`` (values that arrive with a request).
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from quiver.definitions._base import Definition, check_name
from quiver.definitions.field import Field, check_unique
from quiver.errors import DefinitionError

__all__ = ["FileSource", "KafkaSource", "PushSource", "RequestSource", "Source", "source_from_spec"]


class Source(Definition):
    """Base of all sources. ``timestamp_field`` is the event-time column."""

    kind = "source"
    timestamp_field: str
    created_timestamp_column: str | None
    field_mapping: dict[str, str]

    @property
    def batch(self) -> FileSource | None:
        """The source whose files hold this source's history."""
        return None

    def _init_common(
        self,
        name: str,
        timestamp_field: str,
        created_timestamp_column: str | None,
        field_mapping: dict[str, str] | None,
    ) -> None:
        object.__setattr__(self, "name", check_name(type(self).__name__, name))
        label = f"{type(self).__name__} {name!r}"
        if not isinstance(timestamp_field, str) or not timestamp_field:
            raise DefinitionError(f"{label}: timestamp_field must name the event-time column")
        if created_timestamp_column is not None and not isinstance(created_timestamp_column, str):
            raise DefinitionError(f"{label}: created_timestamp_column must be a column name or None")
        mapping = dict(field_mapping or {})
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
            raise DefinitionError(f"{label}: field_mapping must map source column names to feature names (str -> str)")
        object.__setattr__(self, "timestamp_field", timestamp_field)
        object.__setattr__(self, "created_timestamp_column", created_timestamp_column)
        object.__setattr__(self, "field_mapping", mapping)

    def _common_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": type(self).__name__,
            "name": self.name,
            "timestamp_field": self.timestamp_field,
            "created_timestamp_column": self.created_timestamp_column,
            "field_mapping": dict(self.field_mapping),
        }


class FileSource(Source):
    """Parquet data: one file, a folder of files, or a glob. Relative paths are
    resolved against the feature repository."""

    path: str

    def __init__(
        self,
        path: str,
        timestamp_field: str = "event_timestamp",
        created_timestamp_column: str | None = None,
        field_mapping: dict[str, str] | None = None,
        *,
        name: str | None = None,
        description: str = "",
        owner: str = "",
        tags: dict[str, str] | None = None,
    ) -> None:
        if not isinstance(path, str | PurePath) or not str(path):
            raise DefinitionError(f"FileSource {name!r}: path must be a Parquet file, folder or glob, got {path!r}")
        path = str(path)
        if name is None:
            stem = PurePath(path.rstrip("/*")).stem.split(".")[0] or "source"
            name = "".join(c if c.isalnum() else "_" for c in stem)
            name = name if name.isidentifier() else f"src_{name}"
        self._init_common(name, timestamp_field, created_timestamp_column, field_mapping)
        object.__setattr__(self, "path", path)
        self._init_meta(owner, description, tags)

    def to_spec(self) -> dict[str, Any]:
        return {**self._common_spec(), "path": self.path, **self._meta_spec()}

    @property
    def batch(self) -> FileSource:
        return self


class KafkaSource(Source):
    """A Kafka topic of JSON events; ``batch_source`` holds their history."""

    topic: str
    bootstrap_servers: str
    message_format: str
    batch_source: FileSource | None
    schema: tuple[Field, ...]

    def __init__(
        self,
        name: str,
        topic: str,
        timestamp_field: str = "event_timestamp",
        batch_source: FileSource | None = None,
        *,
        bootstrap_servers: str = "127.0.0.1:9092",
        message_format: str = "json",
        field_mapping: dict[str, str] | None = None,
        created_timestamp_column: str | None = None,
        schema: list[Field] | None = None,
        description: str = "",
        owner: str = "",
        tags: dict[str, str] | None = None,
    ) -> None:
        self._init_common(name, timestamp_field, created_timestamp_column, field_mapping)
        label = f"KafkaSource {name!r}"
        if not isinstance(topic, str) or not topic:
            raise DefinitionError(f"{label}: topic must be a non-empty string")
        if message_format != "json":
            raise DefinitionError(f"{label}: message_format {message_format!r} is not supported; use 'json'")
        if batch_source is not None and not isinstance(batch_source, FileSource):
            raise DefinitionError(f"{label}: batch_source must be a FileSource holding the topic's history")
        fields = tuple(schema or ())
        check_unique(label, [f.name for f in fields])
        object.__setattr__(self, "topic", topic)
        object.__setattr__(self, "bootstrap_servers", bootstrap_servers)
        object.__setattr__(self, "message_format", message_format)
        object.__setattr__(self, "batch_source", batch_source)
        object.__setattr__(self, "schema", fields)
        self._init_meta(owner, description, tags)

    @property
    def batch(self) -> FileSource | None:
        return self.batch_source

    def to_spec(self) -> dict[str, Any]:
        return {
            **self._common_spec(),
            "topic": self.topic,
            "bootstrap_servers": self.bootstrap_servers,
            "message_format": self.message_format,
            "batch_source": self.batch_source.version_spec() if self.batch_source else None,
            "schema": [f.to_spec() for f in self.schema],
            **self._meta_spec(),
        }


class PushSource(Source):
    """Rows pushed with ``store.push`` or ``POST /v1/push``; ``batch_source``
    optionally holds older history."""

    batch_source: FileSource | None
    schema: tuple[Field, ...]

    def __init__(
        self,
        name: str,
        batch_source: FileSource | None = None,
        timestamp_field: str = "event_timestamp",
        *,
        schema: list[Field] | None = None,
        created_timestamp_column: str | None = None,
        field_mapping: dict[str, str] | None = None,
        description: str = "",
        owner: str = "",
        tags: dict[str, str] | None = None,
    ) -> None:
        self._init_common(name, timestamp_field, created_timestamp_column, field_mapping)
        if batch_source is not None and not isinstance(batch_source, FileSource):
            raise DefinitionError(f"PushSource {name!r}: batch_source must be a FileSource")
        fields = tuple(schema or ())
        check_unique(f"PushSource {name!r}", [f.name for f in fields])
        object.__setattr__(self, "batch_source", batch_source)
        object.__setattr__(self, "schema", fields)
        self._init_meta(owner, description, tags)

    @property
    def batch(self) -> FileSource | None:
        return self.batch_source

    def to_spec(self) -> dict[str, Any]:
        return {
            **self._common_spec(),
            "batch_source": self.batch_source.version_spec() if self.batch_source else None,
            "schema": [f.to_spec() for f in self.schema],
            **self._meta_spec(),
        }


class RequestSource(Source):
    """Values that come with a feature request (e.g. the transaction amount)."""

    schema: tuple[Field, ...]

    def __init__(
        self,
        name: str,
        schema: list[Field],
        *,
        description: str = "",
        owner: str = "",
        tags: dict[str, str] | None = None,
    ) -> None:
        object.__setattr__(self, "name", check_name("RequestSource", name))
        object.__setattr__(self, "timestamp_field", "")
        object.__setattr__(self, "created_timestamp_column", None)
        object.__setattr__(self, "field_mapping", {})
        fields = tuple(schema or ())
        if not fields:
            raise DefinitionError(f"RequestSource {name!r}: schema must list at least one Field")
        check_unique(f"RequestSource {name!r}", [f.name for f in fields])
        object.__setattr__(self, "schema", fields)
        self._init_meta(owner, description, tags)

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "type": "RequestSource",
            "name": self.name,
            "schema": [f.to_spec() for f in self.schema],
            **self._meta_spec(),
        }


def source_from_spec(spec: dict[str, Any]) -> Source:
    meta: dict[str, Any] = {k: spec.get(k) or d for k, d in (("description", ""), ("owner", ""), ("tags", None))}
    t = spec["type"]
    common: dict[str, Any] = {
        "created_timestamp_column": spec.get("created_timestamp_column"),
        "field_mapping": spec.get("field_mapping"),
    }
    batch = source_from_spec(spec["batch_source"]) if spec.get("batch_source") else None
    schema = [Field.from_spec(f) for f in spec.get("schema") or []]
    if t == "FileSource":
        return FileSource(spec["path"], spec["timestamp_field"], name=spec["name"], **common, **meta)
    if t == "KafkaSource":
        return KafkaSource(
            spec["name"],
            spec["topic"],
            spec["timestamp_field"],
            batch,  # type: ignore[arg-type]
            bootstrap_servers=spec["bootstrap_servers"],
            message_format=spec["message_format"],
            schema=schema,
            **common,
            **meta,
        )
    if t == "PushSource":
        return PushSource(spec["name"], batch, spec["timestamp_field"], schema=schema, **common, **meta)  # type: ignore[arg-type]
    if t == "RequestSource":
        return RequestSource(spec["name"], schema, **meta)
    raise DefinitionError(f"unknown source type {t!r} in registry spec")
