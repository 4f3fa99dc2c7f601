"""Field: a named, typed column of a view, a request source or a schema."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quiver import types
from quiver.definitions._base import check_name

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
        object.__setattr__(self, "dtype", types.coerce(self.dtype))
        object.__setattr__(self, "tags", dict(self.tags or {}))
        object.__setattr__(self, "monitoring", dict(self.monitoring or {}))

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
    from quiver.errors import DefinitionError

    seen: set[str] = set()
    dups = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if dups:
        raise DefinitionError(f"{owner}: duplicate feature names {dups}; give each feature a distinct name")
