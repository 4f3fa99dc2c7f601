"""Feature references: ``view:feature`` and ``view@3:feature``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from quiver.errors import InputError

__all__ = ["FeatureRef"]

_REF_RE = re.compile(r"^(?P<view>[A-Za-z_]\w*)(?:@(?P<version>\d+))?:(?P<feature>[A-Za-z_]\w*)$")


@dataclass(frozen=True, slots=True)
class FeatureRef:
    view: str
    feature: str
    version: int | None = None

    @classmethod
    def parse(cls, ref: str) -> FeatureRef:
        if not isinstance(ref, str):
            raise InputError(f"bad feature reference {ref!r}: write 'view:feature' or 'view@3:feature'")
        return _parse(ref)

    def __str__(self) -> str:
        pinned = f"@{self.version}" if self.version is not None else ""
        return f"{self.view}{pinned}:{self.feature}"


@lru_cache(maxsize=4096)
def _parse(ref: str) -> FeatureRef:
    """Parsed once per distinct string: serving asks for the same references all day."""
    m = _REF_RE.match(ref.strip())
    if not m:
        raise InputError(f"bad feature reference {ref!r}: write 'view:feature' or 'view@3:feature'")
    v = m.group("version")
    return FeatureRef(m.group("view"), m.group("feature"), int(v) if v else None)
