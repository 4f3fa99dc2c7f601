"""Import a feature repository's Python files and collect its definitions.

Every ``*.py`` file below the repository root is imported (folders starting
with ``.`` or ``_``, ``data`` folders and virtual environments are skipped).
Definitions are found by type among each module's globals; two different
definitions with one name are an error naming both files.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from quiver.definitions._base import Definition
from quiver.definitions.entity import Entity
from quiver.definitions.feature_service import FeatureService
from quiver.definitions.feature_view import FeatureView
from quiver.definitions.on_demand import OnDemandFeatureView
from quiver.errors import DefinitionError, RepoLoadError

__all__ = ["RepoContents", "load_repo"]

_SKIP_DIRS = {"data", "venv", "node_modules", "build", "dist", "tests"}


@dataclass
class RepoContents:
    """The definitions of one repository, by kind and name."""

    entities: dict[str, Entity] = field(default_factory=dict)
    feature_views: dict[str, FeatureView] = field(default_factory=dict)
    on_demand_feature_views: dict[str, OnDemandFeatureView] = field(default_factory=dict)
    feature_services: dict[str, FeatureService] = field(default_factory=dict)

    def all(self) -> list[Definition]:
        return [
            *self.entities.values(),
            *self.feature_views.values(),
            *self.on_demand_feature_views.values(),
            *self.feature_services.values(),
        ]

    def add(self, obj: Definition, where: str, origins: dict[tuple[str, str], str]) -> None:
        table: dict[str, Definition] = {
            "entity": self.entities,
            "feature_view": self.feature_views,
            "on_demand_feature_view": self.on_demand_feature_views,
            "feature_service": self.feature_services,
        }[obj.kind]  # type: ignore[assignment]
        key = (obj.kind, obj.name)
        prev = table.get(obj.name)
        if prev is not None and prev != obj:
            raise DefinitionError(
                f"two different {obj.kind.replace('_', ' ')}s are named {obj.name!r}: in {origins[key]} and in {where}"
            )
        table[obj.name] = obj
        origins.setdefault(key, where)
        # the entities and views a definition uses count as defined too
        if isinstance(obj, FeatureView):
            for e in obj.entities:
                self.add(e, where, origins)


def _python_files(root: Path) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if any(part.startswith((".", "_")) or part in _SKIP_DIRS for part in rel[:-1]):
            continue
        if rel[-1].startswith(("_", "test_")) or rel[-1] == "conftest.py":
            continue
        out.append(p)
    return out


def load_repo(root: str | Path) -> RepoContents:
    """Import every definition file of the repository at ``root``."""
    root = Path(root).resolve()
    contents = RepoContents()
    origins: dict[tuple[str, str], str] = {}
    before = set(sys.modules)
    sys.path.insert(0, str(root))
    try:
        for path in _python_files(root):
            rel = str(path.relative_to(root))
            mod_name = "quiver_repo_" + rel[:-3].replace("/", "_").replace("-", "_")
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise RepoLoadError(f"{rel} cannot be imported as a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except DefinitionError as e:
                raise type(e)(f"{rel}: {e}") from None
            except Exception as e:
                tb = traceback.format_exception_only(type(e), e)[-1].strip()
                raise RepoLoadError(f"{rel} failed to import: {tb}") from e
            for var, obj in vars(module).items():
                if isinstance(obj, Entity | FeatureView | OnDemandFeatureView | FeatureService):
                    contents.add(obj, f"{rel} ({var})", origins)
    finally:
        sys.path.remove(str(root))
        # forget the repository's modules (and helpers it imported by plain name), so
        # loading again, or loading another repository with the same file names, runs fresh code
        for name in set(sys.modules) - before:
            file = getattr(sys.modules[name], "__file__", None) or ""
            if name.startswith("quiver_repo_") or file.startswith(str(root)):
                del sys.modules[name]
    return contents
