"""Entity: the thing features describe, identified by its join keys."""

from __future__ import annotations

from typing import Any

from quiver import types
from quiver.definitions._base import Definition, check_name
from quiver.errors import DefinitionError, UnknownTypeError

__all__ = ["Entity"]


class Entity(Definition):
    """``Entity(name="user", join_keys=["user_id"])``; composite keys allowed.

    ``dtypes`` optionally declares each key's type (default Int64) so that a
    key sent as a JSON number or string is coerced before lookup.
    """

    kind = "entity"
    join_keys: tuple[str, ...]
    dtypes: dict[str, types.ValueType]

    def __init__(
        self,
        name: str,
        join_keys: list[str] | None = None,
        *,
        dtypes: dict[str, Any] | None = None,
        description: str = "",
        owner: str = "",
        tags: dict[str, str] | None = None,
    ) -> None:
        object.__setattr__(self, "name", check_name("entity", name))
        if isinstance(join_keys, str):
            raise DefinitionError(f"entity {name!r}: join_keys must be a list of column names, e.g. [{join_keys!r}]")
        keys = tuple(join_keys) if join_keys is not None else (name,)
        if not keys:
            raise DefinitionError(f"entity {name!r}: needs at least one join key")
        for k in keys:
            check_name(f"entity {name!r} join key", k, "join key")
        if len(set(keys)) != len(keys):
            raise DefinitionError(f"entity {name!r}: duplicate join keys {list(keys)}")
        object.__setattr__(self, "join_keys", keys)
        dt = dict(dtypes or {})
        unknown = set(dt) - set(keys)
        if unknown:
            raise DefinitionError(f"entity {name!r}: dtypes names {sorted(unknown)}, which are not join keys {list(keys)}")
        try:
            object.__setattr__(self, "dtypes", {k: types.coerce(dt.get(k, types.Int64)) for k in keys})
        except UnknownTypeError as e:
            raise UnknownTypeError(f"entity {name!r}: {e}") from None
        self._init_meta(owner, description, tags)

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "join_keys": list(self.join_keys),
            "dtypes": {k: v.name for k, v in self.dtypes.items()},
            **self._meta_spec(),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Entity:
        return cls(
            spec["name"],
            spec["join_keys"],
            dtypes=spec.get("dtypes"),
            description=spec.get("description", ""),
            owner=spec.get("owner", ""),
            tags=spec.get("tags"),
        )
