"""quiver.yaml: defaults, shorthands, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest

from quiver.config import load_config
from quiver.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "quiver.yaml").write_text(text)
    return tmp_path


def test_the_documented_file_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, """
project: fraud
registry: registry.db
offline: {engine: duckdb, path: data/offline}
online: {type: sqlite, path: data/online.db}
"""))
    assert cfg.project == "fraud" and cfg.repo_path == tmp_path.resolve()
    assert cfg.registry_url == f"sqlite:///{tmp_path.resolve() / 'registry.db'}"
    assert cfg.offline == {"engine": "duckdb", "path": "data/offline"}
    assert cfg.online == {"type": "sqlite", "path": "data/online.db"}
    assert cfg.resolve("data/x") == tmp_path.resolve() / "data" / "x"


def test_defaults_shorthands_and_urls(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "project: p\nonline: redis\nregistry: postgresql+psycopg://u@h/db\n"))
    assert cfg.online == {"type": "redis"} and cfg.offline["engine"] == "duckdb"
    assert cfg.registry_url == "postgresql+psycopg://u@h/db"
    cfg = load_config(write(tmp_path, "project: p\nregistry: {path: r.db, cache_ttl_seconds: 0}\n"))
    assert cfg.registry == "r.db" and cfg.registry_options == {"cache_ttl_seconds": 0}
    assert load_config(tmp_path / "quiver.yaml").project == "p"  # the file itself works too


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("project: p\nregistyr: r.db\n", ["'registyr'", "Did you mean 'registry'"]),
        ("project: p\nonline: {type: redsi}\n", ["'online.type'", "'redsi'", "redis"]),
        ("project: p\noffline: {engine: sprak}\n", ["'offline.engine'", "spark"]),
        ("project: p\noffline: [duckdb]\n", ["'offline'", "mapping"]),
        ("project: p\nonline: {type: [redis]}\n", ["'online.type'"]),
        ("project: p\nonline: {type: sqlite, path: 3}\n", ["'online.path'"]),
        ("project: p\nregistry: {path: r.db, cache_ttl: 1}\n", ["'registry.cache_ttl'", "cache_ttl_seconds"]),
        ("project: p\nregistry: {path: r.db, cache_ttl_seconds: -1}\n", ["'registry.cache_ttl_seconds'"]),
        ("project: p\nregistry: 5\n", ["'registry'"]),
        ("project: p\nserving: 8080\n", ["'serving'", "mapping"]),
        ("project: my project\n", ["'project'", "identifier"]),
        ("registry: r.db\n", ["'project'"]),
        ("- a\n- b\n", ["mapping"]),
        ("project: [unclosed\n", ["not valid YAML"]),
    ],
)
def test_errors_name_the_bad_key(tmp_path: Path, text: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert isinstance(info.value, ValueError)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {str(info.value)!r}"


def test_missing_file_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="quiver init"):
        load_config(tmp_path)
