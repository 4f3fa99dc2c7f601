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

__all__ = ["BUILTIN", "known", "load"]

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


def _entry_points(kind: str) -> dict[str, str]:
    """name -> "module:Class" of the backends of ``kind`` that installed packages register."""
    prefix = f"{kind}."
    return {
        ep.name[len(prefix) :]: str(ep.value)
        for ep in entry_points(group="quiver.backends")
        if ep.name.startswith(prefix)
    }


def known(kind: str) -> list[str]:
    """Every backend name of ``kind``: the built-in ones first, then registered ones."""
    builtin = list(BUILTIN.get(kind, {}))
    return builtin + sorted(set(_entry_points(kind)) - set(builtin))


def load(kind: str, name: str) -> Any:
    """The backend class for ``kind`` (offline, online, registry, stream) and ``name``."""
    if kind not in BUILTIN:
        raise ConfigError(f"unknown backend kind {kind!r}.{closest(kind, BUILTIN)} Known: {', '.join(BUILTIN)}")
    target, extra = BUILTIN[kind].get(name, (None, ""))
    if target is None:
        target = _entry_points(kind).get(name)
    if target is None:
        names = known(kind)
        raise ConfigError(
            f"unknown {kind} backend {name!r}.{closest(name, names)} Known: {', '.join(names)}"
            " (or install a package that registers it under the entry-point group 'quiver.backends')"
        )
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        if e.name and (e.name == module_name or module_name.startswith(e.name + ".")):
            raise ConfigError(f"{kind} backend {name!r}: module {module_name!r} does not exist ({target})") from e
        hint = f"pip install 'quiver-fs[{extra}]'" if extra else "reinstall quiver-fs"
        raise ConfigError(f"{kind} backend {name!r} needs a package that is not installed ({e.name}): {hint}") from e
    try:
        return getattr(module, cls_name)
    except AttributeError:
        raise ConfigError(f"{kind} backend {name!r}: {module_name} has no {cls_name!r} ({target})") from None
