"""``quiver.yaml`` -> a frozen ``RepoConfig``.

The top-level keys are checked here; each backend section (``offline``,
``online``) is checked by its backend's own config when loaded, so a bad key
is reported by the part that knows what it means.

```yaml
project: fraud
registry: registry.db                 # a path (SQLite) or an SQLAlchemy URL
offline: {engine: duckdb, path: data/offline}
online: {type: sqlite, path: data/online.db}
```
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from quiver.errors import ConfigError, closest
from quiver.plugins import BUILTIN, known

__all__ = ["CONFIG_FILE", "RepoConfig", "load_config"]

CONFIG_FILE = "quiver.yaml"
_TOP_KEYS = ("project", "registry", "offline", "online", "serving", "stream", "monitoring")
_REGISTRY_KEYS = ("path", "cache_ttl_seconds")


@dataclass(frozen=True)
class RepoConfig:
    """The validated contents of ``quiver.yaml`` plus where the repository is."""

    repo_path: Path
    project: str
    registry: str
    registry_options: dict[str, Any] = field(default_factory=dict)
    offline: dict[str, Any] = field(default_factory=lambda: {"engine": "duckdb", "path": "data/offline"})
    online: dict[str, Any] = field(default_factory=lambda: {"type": "sqlite", "path": "data/online.db"})
    serving: dict[str, Any] = field(default_factory=dict)
    stream: dict[str, Any] = field(default_factory=dict)
    monitoring: dict[str, Any] = field(default_factory=dict)

    def resolve(self, path: str | Path) -> Path:
        """A path of the config, relative to the repository."""
        p = Path(os.path.expanduser(str(path)))
        return p if p.is_absolute() else self.repo_path / p

    @property
    def registry_url(self) -> str:
        """An SQLAlchemy URL: a plain path means an SQLite file in the repository."""
        if "://" in self.registry:
            return self.registry
        return f"sqlite:///{self.resolve(self.registry)}"


def _section(data: dict[str, Any], key: str, default: dict[str, Any], kind_key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return dict(default)
    if isinstance(value, str):  # `online: redis` shorthand
        return {kind_key: value}
    if not isinstance(value, dict):
        raise ConfigError(f"{CONFIG_FILE}: '{key}' must be a mapping like {default}, got {value!r}")
    out = dict(value)
    out.setdefault(kind_key, default[kind_key])
    return out


def _registry(fname: str, value: Any) -> tuple[str, dict[str, Any]]:
    """``registry: path-or-URL`` or ``registry: {path: ..., cache_ttl_seconds: 0.5}``."""
    options: dict[str, Any] = {}
    if isinstance(value, dict):
        for key in value:
            if key not in _REGISTRY_KEYS:
                raise ConfigError(
                    f"{fname}: unknown key 'registry.{key}'.{closest(str(key), _REGISTRY_KEYS)}"
                    f" Known keys: {', '.join(_REGISTRY_KEYS)}"
                )
        options = {k: v for k, v in value.items() if k != "path"}
        value = value.get("path")
        ttl = options.get("cache_ttl_seconds", 1.0)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl < 0:
            raise ConfigError(f"{fname}: 'registry.cache_ttl_seconds' must be a number >= 0, got {ttl!r}")
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{fname}: 'registry' must be a file path or an SQLAlchemy URL, got {value!r}")
    return value, options


def _check_backend(fname: str, key: str, kind_key: str, name: Any) -> None:
    if isinstance(name, str) and name in BUILTIN[key]:
        return  # the common case: no entry-point scan
    names = known(key)
    if not isinstance(name, str) or name not in names:
        raise ConfigError(
            f"{fname}: '{key}.{kind_key}' is {name!r}, not a known {key} backend.{closest(str(name), names)}"
            f" Known: {', '.join(names)}"
        )


def load_config(repo_path: str | Path) -> RepoConfig:
    """Read and validate ``quiver.yaml`` in ``repo_path``."""
    root = Path(repo_path).resolve()
    f = root / CONFIG_FILE if root.is_dir() else root
    if f.name != CONFIG_FILE and f.suffix in (".yaml", ".yml"):
        root = f.parent
    elif root.is_file():
        root = root.parent
    if not f.exists():
        raise ConfigError(f"no {CONFIG_FILE} in {root}: run 'quiver init' there, or pass the repository folder")
    try:
        data = yaml.safe_load(f.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{f.name} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{f.name} must be a mapping of keys ({', '.join(_TOP_KEYS)})")
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{f.name}: unknown key {key!r}.{closest(str(key), _TOP_KEYS)} Known keys: {', '.join(_TOP_KEYS)}")
    project = data.get("project")
    if not isinstance(project, str) or not project.isidentifier():
        raise ConfigError(f"{f.name}: 'project' must be an identifier such as 'fraud', got {project!r}")
    registry, registry_options = _registry(f.name, data.get("registry", "registry.db"))
    for key in ("serving", "stream", "monitoring"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"{f.name}: '{key}' must be a mapping, got {data[key]!r}")
    offline = _section(data, "offline", {"engine": "duckdb", "path": "data/offline"}, "engine")
    online = _section(data, "online", {"type": "sqlite", "path": "data/online.db"}, "type")
    for key, section, kind_key in (("offline", offline, "engine"), ("online", online, "type")):
        _check_backend(f.name, key, kind_key, section[kind_key])
        if "path" in section and not isinstance(section["path"], str):
            raise ConfigError(f"{f.name}: '{key}.path' must be a path, got {section['path']!r}")
    return RepoConfig(
        repo_path=root,
        project=project,
        registry=registry,
        registry_options=registry_options,
        offline=offline,
        online=online,
        serving=dict(data.get("serving") or {}),
        stream=dict(data.get("stream") or {}),
        monitoring=dict(data.get("monitoring") or {}),
    )
