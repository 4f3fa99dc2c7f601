"""The one loader for backends: a name -> a class, imported only when used.

Built-in backends are listed below; others register under the entry-point
group ``quiver.backends`` as ``<kind>.<name> = "module:Class"``. An unknown
name lists the known ones and the extra to install.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from quiver.errors import ConfigError, closest

__all__ = ["BUILTIN", "load"]

# kind -> name -> ("module:Class", pip extra that brings its driver)
BUILTIN: dict[str, dict[str, tuple[str, str]]] = {
    "offline": {
        "duckdb": ("quiver.offline.duckdb:DuckDBEngine", ""),
        "spark": ("quiver.offline.spark:SparkEngine", "spark"),
    },
    "online": {
        "sqlite": ("quiver.online.sqlite:SQLiteOnlineStore", ""),
        "redis": ("quiver.online.redis:RedisOnlineStore", "redis"),
    },
    "registry": {
        "sql": ("quiver.registry.sql:SQLRegistryStore", ""),
    },
    "stream": {
        "kafka": ("quiver.streams.kafka:KafkaStream", "kafka"),
    },
}


def _entry_point(kind: str, name: str) -> str | None:
    for ep in entry_points(group="quiver.backends"):
        if ep.name == f"{kind}.{name}":
            return str(ep.value)
    return None


def load(kind: str, name: str) -> Any:
    """The backend class for ``kind`` (offline, online, registry, stream) and ``name``."""
    builtin = BUILTIN.get(kind, {})
    target, extra = builtin.get(name, (None, ""))
    if target is None:
        target = _entry_point(kind, name)
    if target is None:
        known = sorted(builtin)
        raise ConfigError(
            f"unknown {kind} backend {name!r}.{closest(name, known)} Known: {', '.join(known)}"
            " (or install a package that registers 'quiver.backends')"
        )
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        hint = f"pip install 'quiver-fs[{extra}]'" if extra else "reinstall quiver-fs"
        raise ConfigError(f"{kind} backend {name!r} needs a package that is not installed ({e.name}): {hint}") from e
    return getattr(module, cls_name)
