"""Field: a named, typed column of a view, a request source or a schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quiver import types
from quiver.definitions._base import check_name, check_tags
from quiver.errors import DefinitionError, UnknownTypeError

__all__ = ["Field", "check_unique"]


@dataclass(frozen=True, slots=True)
class Field:
    """``Field("credit_limit", types.Float64)``.

    ``monitoring`` holds per-feature thresholds for the monitor (e.g.
    ``{"psi": 0.2, "null_rate": 0.05}``).
    """

    name: str
    dtype: types.ValueType
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    monitoring: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name("field", self.name)
        try:
            object.__setattr__(self, "dtype", types.coerce(self.dtype))
        except UnknownTypeError as e:
            raise UnknownTypeError(f"field {self.name!r}: {e}") from None
        if not isinstance(self.description, str):
            raise DefinitionError(f"field {self.name!r}: description must be a string, got {self.description!r}")
        object.__setattr__(self, "tags", check_tags(f"field {self.name!r}", self.tags))
        monitoring = dict(self.monitoring or {})
        if not all(isinstance(k, str) and isinstance(v, int | float) for k, v in monitoring.items()):
            raise DefinitionError(f"field {self.name!r}: monitoring must map check names to numbers, got {monitoring!r}")
        object.__setattr__(self, "monitoring", monitoring)

    def __hash__(self) -> int:
        return hash((self.name, self.dtype))

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "dtype": self.dtype.name}
        if self.description:
            spec["description"] = self.description
        if self.tags:
            spec["tags"] = dict(self.tags)
        if self.monitoring:
            spec["monitoring"] = dict(self.monitoring)
        return spec

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Field:
        return cls(
            spec["name"],
            types.from_name(spec["dtype"]),
            spec.get("description", ""),
            spec.get("tags") or {},
            spec.get("monitoring") or {},
        )


def check_unique(owner: str, names: list[str]) -> None:
    """Raise when a name appears twice among one object's features."""
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise DefinitionError(f"{owner}: duplicate feature names {dups}; give each feature a distinct name")
