"""FeatureView: a named, versioned set of features over one source.

Snapshot views declare ``schema`` (each source row is a feature value at its
event time); aggregate views declare ``aggregations`` (time windows over raw
events).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from quiver.definitions._base import Definition, check_name, duration_or_none, seconds
from quiver.definitions.aggregation import Aggregation
from quiver.definitions.entity import Entity
from quiver.definitions.field import Field, check_unique
from quiver.definitions.sources import RequestSource, Source, source_from_spec
from quiver.errors import DefinitionError, closest

__all__ = ["FeatureView", "FeatureViewProjection"]


class FeatureView(Definition):
    """A snapshot view (``schema=``) or an aggregate view (``aggregations=``)."""

    kind = "feature_view"
    entities: tuple[Entity, ...]
    source: Source
    schema: tuple[Field, ...]
    aggregations: tuple[Aggregation, ...]
    ttl: timedelta | None
    freshness_sla: timedelta | None
    online: bool
    monitoring: dict[str, float]
    _features: tuple[Field, ...]
    _feature_names: tuple[str, ...]

    def __init__(
        self,
        name: str,
        entities: list[Entity],
        source: Source,
        schema: list[Field] | None = None,
        aggregations: list[Aggregation] | None = None,
        ttl: timedelta | str | None = None,
        *,
        owner: str = "",
        description: str = "",
        tags: dict[str, str] | None = None,
        freshness_sla: timedelta | str | None = None,
        online: bool = True,
        monitoring: dict[str, float] | None = None,
    ) -> None:
        object.__setattr__(self, "name", check_name("feature view", name))
        label = f"feature view {name!r}"
        if isinstance(entities, Entity):
            entities = [entities]
        for what, value in (("entities", entities), ("schema", schema), ("aggregations", aggregations)):
            if value is not None and not isinstance(value, list | tuple):
                raise DefinitionError(f"{label}: {what} must be a list, got {type(value).__name__}")
        ents = tuple(entities or ())
        if not ents:
            raise DefinitionError(f"{label}: needs at least one entity")
        if not all(isinstance(e, Entity) for e in ents):
            raise DefinitionError(f"{label}: entities must be Entity objects, got {[type(e).__name__ for e in ents]}")
        keys = [k for e in ents for k in e.join_keys]
        if len(set(keys)) != len(keys):
            raise DefinitionError(f"{label}: its entities share a join key ({keys})")
        if not isinstance(source, Source) or isinstance(source, RequestSource):
            raise DefinitionError(f"{label}: source must be a FileSource, KafkaSource or PushSource")
        fields = tuple(schema or ())
        aggs = tuple(aggregations or ())
        if fields and aggs:
            raise DefinitionError(f"{label}: give either schema (a snapshot view) or aggregations, not both")
        if not fields and not aggs:
            raise DefinitionError(f"{label}: give schema=[Field(...)] or aggregations=[Aggregation(...)]")
        if not all(isinstance(f, Field) for f in fields):
            raise DefinitionError(f"{label}: schema must be a list of Field")
        if not all(isinstance(a, Aggregation) for a in aggs):
            raise DefinitionError(f"{label}: aggregations must be a list of Aggregation")
        names = [f.name for f in fields] + [a.name for a in aggs]
        check_unique(label, names)
        clash = sorted(set(names) & set(keys))
        if clash:
            raise DefinitionError(f"{label}: feature names {clash} are also join keys; rename the features")
        object.__setattr__(self, "entities", ents)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "schema", fields)
        object.__setattr__(self, "aggregations", aggs)
        object.__setattr__(self, "ttl", duration_or_none(label, "ttl", ttl))
        object.__setattr__(self, "freshness_sla", duration_or_none(label, "freshness_sla", freshness_sla))
        object.__setattr__(self, "online", bool(online))
        object.__setattr__(self, "monitoring", dict(monitoring or {}))
        # computed once: reads ask for these on every request
        feats = fields or tuple(Field(a.name, a.output_dtype()) for a in aggs)
        object.__setattr__(self, "_features", feats)
        object.__setattr__(self, "_feature_names", tuple(f.name for f in feats))
        self._init_meta(owner, description, tags)

    # -- what the rest of quiver asks of a view -------------------------------------

    @property
    def is_aggregate(self) -> bool:
        return bool(self.aggregations)

    @property
    def join_keys(self) -> list[str]:
        return [k for e in self.entities for k in e.join_keys]

    @property
    def features(self) -> list[Field]:
        """The output features, aggregates included, as Fields."""
        return list(self._features)

    @property
    def feature_names(self) -> list[str]:
        return list(self._feature_names)

    @property
    def max_window(self) -> timedelta | None:
        return max((a.window for a in self.aggregations), default=None)

    def feature(self, name: str) -> Field:
        for f in self.features:
            if f.name == name:
                return f
        from quiver.errors import NotFoundError

        raise NotFoundError(f"feature view {self.name!r} has no feature {name!r}.{closest(name, self.feature_names)}")

    def source_column(self, feature: str) -> str:
        """The source column a snapshot feature reads (after field_mapping)."""
        reverse = {v: k for k, v in self.source.field_mapping.items()}
        return reverse.get(feature, feature)

    def __getitem__(self, names: list[str]) -> FeatureViewProjection:
        """``view[["a", "b"]]``: a subset of this view's features, for services."""
        if isinstance(names, str):
            names = [names]
        for n in names:
            if n not in self.feature_names:
                raise DefinitionError(
                    f"feature view {self.name!r} has no feature {n!r}.{closest(n, self.feature_names)}"
                )
        return FeatureViewProjection(self.name, tuple(names))

    # -- spec --------------------------------------------------------------------

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "entities": [e.name for e in self.entities],
            "entity_specs": [e.version_spec() for e in self.entities],
            "source": self.source.version_spec(),
            "schema": [f.to_spec() for f in self.schema],
            "aggregations": [a.to_spec() for a in self.aggregations],
            "ttl": seconds(self.ttl),
            "online": self.online,
            "freshness_sla": seconds(self.freshness_sla),
            "monitoring": dict(self.monitoring),
            **self._meta_spec(),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FeatureView:
        return cls(
            spec["name"],
            [Entity.from_spec(e) for e in spec["entity_specs"]],
            source_from_spec(spec["source"]),
            schema=[Field.from_spec(f) for f in spec["schema"]],
            aggregations=[Aggregation.from_spec(a) for a in spec["aggregations"]],
            ttl=None if spec.get("ttl") is None else timedelta(seconds=spec["ttl"]),
            owner=spec.get("owner", ""),
            description=spec.get("description", ""),
            tags=spec.get("tags"),
            freshness_sla=None if spec.get("freshness_sla") is None else timedelta(seconds=spec["freshness_sla"]),
            online=spec.get("online", True),
            monitoring=spec.get("monitoring"),
        )


@dataclass(frozen=True, slots=True)
class FeatureViewProjection:
    """Some features of one view, as written ``view[["a", "b"]]``."""

    view: str
    features: tuple[str, ...]

    def refs(self) -> list[str]:
        return [f"{self.view}:{f}" for f in self.features]
