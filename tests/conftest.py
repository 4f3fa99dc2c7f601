"""Test-wide fixtures. Each module in tests/fixtures/ (a real server or a sample
repository) is registered as a pytest plugin, so any test can ask for it."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import pytest

pytest_plugins = [
    f"tests.fixtures.{m.name}"
    for m in pkgutil.iter_modules([str(Path(__file__).parent / "fixtures")])
    if not m.name.startswith("_")
]


@pytest.fixture(scope="session")
def fraud_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fraud example's data at tiny scale, generated once per session."""
    from quiver.examples.fraud.data import generate

    out = tmp_path_factory.mktemp("fraud-data")
    generate(out, scale="tiny")
    return out


@pytest.fixture
def fraud_repo(tmp_path: Path, fraud_data: Path) -> Path:
    """A fresh fraud example repository (tiny data), not yet applied."""
    import shutil
    from importlib import resources

    pkg = resources.files("quiver.examples.fraud")
    for name in ("quiver.yaml", "features.py"):
        with resources.as_file(pkg / name) as src:
            shutil.copyfile(src, tmp_path / name)
    shutil.copytree(fraud_data, tmp_path / "data")
    return tmp_path
