"""The one backend loader: built-ins by name, entry points, clear errors."""

from __future__ import annotations

import pytest

from quiver import plugins
from quiver.errors import ConfigError


def test_builtin_names_load_lazily() -> None:
    cls = plugins.load("registry", "sql")
    assert cls.__name__ == "SQLRegistryStore"
    assert plugins.known("online")[:2] == ["sqlite", "redis"]


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown online backend 'redsi'\. Did you mean 'redis'\?.*sqlite, redis"):
        plugins.load("online", "redsi")
    with pytest.raises(ConfigError, match="unknown backend kind"):
        plugins.load("onlien", "redis")


def test_missing_module_and_class_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(plugins.BUILTIN["online"], "ghost", ("quiver.online.ghost:Ghost", ""))
    with pytest.raises(ConfigError, match="does not exist"):
        plugins.load("online", "ghost")
    monkeypatch.setitem(plugins.BUILTIN["online"], "ghost", ("quiver.registry.sql:Ghost", ""))
    with pytest.raises(ConfigError, match="has no 'Ghost'"):
        plugins.load("online", "ghost")
    monkeypatch.setitem(plugins.BUILTIN["online"], "ghost", ("quiver_missing_driver_xyz:Ghost", "ghostdb"))
    with pytest.raises(ConfigError, match=r"does not exist"):
        plugins.load("online", "ghost")


def test_missing_driver_names_the_extra(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "needs_driver_xyz.py").write_text("import quiver_absent_driver_xyz\nclass B: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(plugins.BUILTIN["online"], "ghost", ("needs_driver_xyz:B", "ghostdb"))
    with pytest.raises(ConfigError, match=r"quiver_absent_driver_xyz.*pip install 'quiver-fs\[ghostdb\]'"):
        plugins.load("online", "ghost")


def test_entry_points_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    ep = EntryPoint(name="online.custom", value="quiver.registry.sql:SQLRegistryStore", group="quiver.backends")
    monkeypatch.setattr(plugins, "entry_points", lambda group: [ep] if group == "quiver.backends" else [])
    assert plugins.load("online", "custom").__name__ == "SQLRegistryStore"
    assert "custom" in plugins.known("online")
