"""``make demo``: the fraud example end to end on the embedded defaults.

SQLite registry, DuckDB offline store, SQLite online store; nothing to start.
Run it with ``python -m quiver.examples.demo [FOLDER]`` (default ``demo-repo``).
"""

from __future__ import annotations

import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from quiver.store import FeatureStore
from quiver.timeutil import format_window

console = Console(width=None if sys.stdout.isatty() else 160)


def step(title: str) -> None:
    console.rule(f"[bold]{title}")


def create(folder: Path) -> FeatureStore:
    step("1. A feature repository for the fraud example")
    if folder.exists():
        shutil.rmtree(folder)
    t0 = time.perf_counter()
    store = FeatureStore.init(folder, example="fraud", scale="small")
    console.print(f"quiver init --example fraud -> {folder}/ ({time.perf_counter() - t0:.1f}s): "
                  + ", ".join(sorted(p.name for p in (folder / "data").glob("*.parquet"))))
    return store


def apply(store: FeatureStore) -> None:
    step("2. quiver apply: register the definitions")
    plan = store.apply()
    for ch in plan.pending:
        console.print(f"  + {ch.kind} {ch.name} v{ch.new_version}")
    console.print(f"applied: {plan.summary()}")


def catalog(store: FeatureStore) -> None:
    step("3. The registry's catalog")
    cat = store.catalog()
    t = Table("kind", "name", "v", "owner", "SLA", "features / keys")
    for group in ("entities", "feature_views", "on_demand_feature_views", "feature_services"):
        for r in cat[group]:
            feats = r.get("features") or r.get("join_keys") or []
            names = [f["name"] if isinstance(f, dict) else f for f in feats]
            sla = r.get("freshness_sla_seconds")
            t.add_row(r["kind"], r["name"], str(r["version"]), r["owner"] or "-",
                      format_window(timedelta(seconds=sla)) if sla else "-", ", ".join(names))
    console.print(t)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else "demo-repo")
    store = create(folder)
    with store:
        apply(store)
        catalog(store)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
