"""Repository commands: init, plan, apply, features (list/describe/search), lineage."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Column, Table

from quiver.cli import cli, emit_json, pass_store

console = Console()


@cli.command()
@click.argument("path", default=".")
@click.option("--example", default="fraud", show_default=True, help="Example repository to create.")
@click.option("--scale", default="small", show_default=True, type=click.Choice(["tiny", "small", "medium", "large"]),
              help="Size of the generated data.")
def init(path: str, example: str, scale: str) -> None:
    """Create a working example feature repository at PATH (definitions, quiver.yaml, data)."""
    from quiver.store import FeatureStore

    store = FeatureStore.init(path, example=example, scale=scale)
    click.echo(f"created the {example} example in {store.repo_path} ({scale} data); next: quiver -r {path} apply")


def _render_plan(plan: Any) -> None:
    marks = {"add": "[green]+[/]", "new_version": "[yellow]~[/]", "update_metadata": "[cyan]*[/]", "remove": "[red]-[/]"}
    for ch in plan.pending:
        ver = f"v{ch.old_version} -> v{ch.new_version}" if ch.action == "new_version" else (
            f"v{ch.new_version}" if ch.new_version else "")
        console.print(f"{marks[ch.action]} {ch.kind} [bold]{ch.name}[/] {ch.action.replace('_', ' ')} {ver}")
        for path, (old, new) in ch.diff.items():
            console.print(f"      {path}: {old!r} -> {new!r}", markup=False, highlight=False)
        for b in ch.breaking:
            console.print(f"      [bold red]BREAKING[/]: {b}")
    console.print(f"plan: {plan.summary()}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@pass_store
def plan(store: Any, as_json: bool) -> None:
    """Show what apply would add, change (with a field-level diff) and remove."""
    p = store.plan()
    emit_json(p.to_dict()) if as_json else _render_plan(p)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the applied plan as JSON.")
@pass_store
def apply(store: Any, as_json: bool) -> None:
    """Register the repository's definitions in one transaction."""
    with Progress(console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task("applying", total=None)
        p = store.apply(progress=lambda i, n: progress.update(task, completed=i, total=n))
    emit_json(p.to_dict()) if as_json else _render_plan(p)


@cli.group()
def features() -> None:
    """Discover features: list, describe, search."""


def _table(rows: list[dict[str, Any]]) -> None:
    t = Table("kind", Column("name", no_wrap=True), "version", "owner", "features / keys", "description")
    for r in rows:
        feats = r.get("features") or r.get("join_keys") or []
        names = [f["name"] if isinstance(f, dict) else f for f in feats]
        t.add_row(r["kind"], r["name"], str(r["version"]), r["owner"], ", ".join(names), r["description"])
    console.print(t)


@features.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_store
def features_list(store: Any, as_json: bool) -> None:
    """List every feature: view:feature, type, view version, owner, description."""
    cat = store.catalog()
    rows = [
        {"feature": f"{v['name']}:{f['name']}", "view": v["name"], "version": v["version"], "dtype": f["dtype"],
         "type": v["type"], "owner": v["owner"],
         "description": f.get("description") or f.get("aggregation") or v["description"],
         "tags": {**v["tags"], **f.get("tags", {})}}
        for v in cat["feature_views"] + cat["on_demand_feature_views"]
        for f in v["features"]
    ]
    if as_json:
        emit_json(rows)
        return
    t = Table("dtype", "version", "owner", "description")
    t.columns.insert(0, Column("feature", no_wrap=True))
    for r in rows:
        t.add_row(r["feature"], r["dtype"], f"v{r['version']}", r["owner"], r["description"])
    console.print(t)


@features.command("describe")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_store
def features_describe(store: Any, name: str, as_json: bool) -> None:
    """Describe VIEW, VIEW:FEATURE or a feature service (with versions)."""
    d = store.describe(name)
    if as_json:
        emit_json(d)
        return
    console.print(f"[bold]{d['name']}[/] ({d['kind']}, version {d['version']}) owner={d['owner'] or '-'}")
    if d.get("description"):
        console.print(d["description"])
    if d.get("freshness_sla_seconds"):
        console.print(f"freshness SLA: {d['freshness_sla_seconds']:g}s")
    t = Table("feature", "dtype", "version" if d["kind"] == "feature_service" else "detail")
    for f in d.get("features", []):
        if "ref" in f:
            t.add_row(f["ref"], str(f["dtype"]), f"{f['view']} v{f['version']}")
        else:
            t.add_row(f["name"], f["dtype"], f.get("aggregation", f.get("description", "")))
    console.print(t)
    console.print("history: " + "; ".join(f"v{h['version']} {h['action']} by {h['applied_by']}" for h in d["versions"]))


@features.command("search")
@click.argument("text")
@click.option("--json", "as_json", is_flag=True)
@pass_store
def features_search(store: Any, text: str, as_json: bool) -> None:
    """Find objects by name, description, tags, owner."""
    rows = store.search(text)
    emit_json(rows) if as_json else _table(rows)


@cli.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@pass_store
def lineage(store: Any, name: str, as_json: bool) -> None:
    """Show source -> view -> feature service around NAME."""
    g = store.lineage(name)
    if as_json:
        emit_json(g)
        return
    for a, b in g["edges"]:
        console.print(f"{a} -> {b}", markup=False, highlight=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_store
def catalog(store: Any, as_json: bool) -> None:
    """Print the registry's catalog."""
    cat = store.catalog()
    if as_json:
        emit_json(cat)
        return
    _table(cat["entities"] + cat["feature_views"] + cat["on_demand_feature_views"] + cat["feature_services"])
