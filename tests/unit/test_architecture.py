"""The shape of the package: public names, one-way imports, no driver at import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import quiver

PKG = Path(quiver.__file__).parent

EXPECTED_ALL = {
    "Aggregation",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "Field",
    "FileSource",
    "KafkaSource",
    "OnDemandFeatureView",
    "PushSource",
    "QuiverError",
    "RequestSource",
    "on_demand_feature_view",
    "types",
}


def test_public_names_are_pinned() -> None:
    assert set(quiver.__all__) == EXPECTED_ALL
    for name in quiver.__all__:
        assert hasattr(quiver, name), name


def test_import_loads_no_driver() -> None:
    code = (
        "import sys, quiver\n"
        "bad = [m for m in ('redis', 'pyspark', 'confluent_kafka', 'psycopg', 'psycopg2', 'starlette', 'uvicorn', "
        "'granian', 'polars', 'sklearn') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"import quiver loaded drivers: {out}"


def _module_imports() -> dict[str, set[str]]:
    """quiver module -> quiver modules it imports at module level (not under TYPE_CHECKING or in functions)."""
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        if path.parent.name in TEMPLATES:
            continue  # user repositories copied by `quiver init`, not part of the package's graph
        rel = path.relative_to(PKG.parent).with_suffix("")
        mod = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        tree = ast.parse(path.read_text())
        deps: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            for sub in ast.walk(node) if isinstance(node, ast.Import | ast.ImportFrom) else [node]:
                if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("quiver"):
                    for alias in sub.names:
                        sub_mod = f"{sub.module}.{alias.name}"
                        deps.add(sub_mod if (PKG.parent / sub_mod.replace(".", "/")).with_suffix(".py").exists()
                                 or (PKG.parent / sub_mod.replace(".", "/")).is_dir() else sub.module)
                elif isinstance(sub, ast.Import):
                    deps |= {a.name for a in sub.names if a.name.startswith("quiver")}
        graph[mod] = deps
    return {m: {d for d in ds if d in graph and d != m} for m, ds in graph.items()}


TEMPLATES = {"fraud"}

# packages in dependency order: a package may import only from itself and packages to its left
LAYERS = [
    {"quiver.errors", "quiver.types", "quiver.timeutil", "quiver.config", "quiver.protocols", "quiver.plugins"},
    {"quiver.definitions"},
    {"quiver.plan"},
    {"quiver.aggregation"},
    {"quiver.offline", "quiver.online", "quiver.registry", "quiver.streams"},
    {"quiver.ingest", "quiver.retrieval", "quiver.monitoring", "quiver.testing"},
    {"quiver.store", "quiver.examples"},
    {"quiver.cli", "quiver.serving"},
    {"quiver"},
]


def _layer(mod: str) -> int:
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if prefix != "quiver" and (mod == prefix or mod.startswith(prefix + ".")):
                return i
    return len(LAYERS) - 1


def test_imports_point_one_way() -> None:
    wrong = []
    for mod, deps in _module_imports().items():
        for d in deps:
            if mod == "quiver" or _layer(d) <= _layer(mod):
                continue
            wrong.append(f"{mod} imports {d}")
    assert not wrong, "imports that point upward:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle() -> None:
    graph = _module_imports()
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if d.startswith(m + "."):
                continue  # a package importing its own submodules
            if state.get(d) == 1:
                cycle.extend(stack + [m, d])
                return True
            if state.get(d) is None and visit(d, stack + [m]):
                return True
        state[m] = 2
        return False

    for m in sorted(graph):
        if state.get(m) is None and visit(m, []):
            break
    assert not cycle, " -> ".join(cycle)
