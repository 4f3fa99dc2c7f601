"""What every definition shares: a checked name, metadata, and a JSON spec.

A definition is frozen and validated in its constructor. ``to_spec()`` is its
full JSON form (stored by the registry); ``version_spec()`` is the part whose
change makes a new version, so owner, description and tags are left out of it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta
from typing import Any, ClassVar

from quiver.errors import DefinitionError
from quiver.timeutil import parse_duration

__all__ = ["METADATA_KEYS", "Definition", "check_name", "check_tags", "duration_or_none", "fingerprint"]

METADATA_KEYS = ("owner", "description", "tags", "freshness_sla", "monitoring")


def check_name(kind: str, name: Any, what: str = "name") -> str:
    if not isinstance(name, str) or not name.isascii() or not name.isidentifier():
        raise DefinitionError(
            f"{kind} {name!r}: {what} must be an identifier (ASCII letters, digits and '_', not starting with a digit)"
        )
    return name


def check_tags(label: str, tags: Any) -> dict[str, str]:
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise DefinitionError(f"{label}: tags must be a dict of str to str, got {tags!r}")
    return dict(tags)


def duration_or_none(owner: str, what: str, value: Any) -> timedelta | None:
    if value is None:
        return None
    try:
        d = parse_duration(value, f"{owner}: {what}")
    except ValueError as e:
        raise DefinitionError(str(e)) from None
    if d <= timedelta(0):
        raise DefinitionError(f"{owner}: {what} must be positive, got {value!r}")
    return d


def seconds(d: timedelta | None) -> float | None:
    return None if d is None else d.total_seconds()


def fingerprint(spec: Any) -> str:
    """A short stable hash of a JSON-able value."""
    blob = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Definition:
    """Base of registered objects. Subclasses set ``kind`` and implement ``to_spec``."""

    kind: ClassVar[str] = ""
    name: str
    owner: str
    description: str
    tags: dict[str, str]

    def _init_meta(self, owner: str, description: str, tags: dict[str, str] | None) -> None:
        label = f"{self.kind.replace('_', ' ')} {self.name!r}"
        for what, v in (("owner", owner), ("description", description)):
            if not isinstance(v, str):
                raise DefinitionError(f"{label}: {what} must be a string, got {v!r}")
        object.__setattr__(self, "owner", owner)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "tags", check_tags(label, tags))

    def _meta_spec(self) -> dict[str, Any]:
        return {"owner": self.owner, "description": self.description, "tags": dict(self.tags)}

    def to_spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def version_spec(self) -> dict[str, Any]:
        """The spec without metadata: a change here is a new version."""
        return {k: v for k, v in self.to_spec().items() if k not in METADATA_KEYS}

    @property
    def version_hash(self) -> str:
        return fingerprint(self.version_spec())

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{self.kind} {getattr(self, 'name', '?')!r} is frozen; build a new one instead")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_spec() == self.to_spec()

    def __hash__(self) -> int:
        return hash((self.kind, self.name, self.version_hash))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
