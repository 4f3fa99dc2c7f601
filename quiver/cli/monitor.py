"""``quiver monitor``: run the checks (exit 1 when one fails), skew, history, report."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from quiver.cli import cli, emit_json, store_from

console = Console()
_STYLE = {"ok": "green", "failing": "bold red", "info": "dim"}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


@cli.group(invoke_without_command=True)
@click.option("--views", "-v", multiple=True, help="Only these views (repeat, or comma-separated).")
@click.option("--json", "as_json", is_flag=True, help="Print every result as JSON.")
@click.option("--now", default=None, help="Evaluate as of this time (ISO; default: now).")
@click.option("--all", "show_all", is_flag=True, help="Show every check, not only the failing ones.")
@click.pass_context
def monitor(ctx: click.Context, views: tuple[str, ...], as_json: bool, now: str | None, show_all: bool) -> None:
    """Check freshness, schema, null rates and drift; exit 1 when a check fails."""
    if ctx.invoked_subcommand is not None:
        return
    store = store_from(ctx)
    names = [v for item in views for v in item.split(",") if v]
    run = store.monitor(names or None, now=now)
    if as_json:
        emit_json(run.to_dict())
    else:
        t = Table("view", "feature", "check", "value", "threshold", "status", "detail")
        for r in run.results:
            if show_all or r.status == "failing":
                t.add_row(r.view, r.feature, r.check, _fmt(r.value), _fmt(r.threshold),
                          f"[{_STYLE[r.status]}]{r.status}[/]", r.detail)
        console.print(t)
        for a in run.alerts:
            console.print(f"[bold]alert[/] {a['state']}: {a['message']}", highlight=False)
        n = len(run.failing)
        console.print(f"{len(run.results)} checks, [{'red' if n else 'green'}]{n} failing[/]")
    store.monitoring.close()
    if not run.ok:
        sys.exit(1)


@monitor.command("skew")
@click.option("--start", default=None, help="Only requests logged at or after this time.")
@click.option("--end", default=None, help="Only requests logged before this time.")
@click.option("--limit", type=int, default=None, help="At most this many logged requests (the latest).")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def monitor_skew(ctx: click.Context, start: str | None, end: str | None, limit: int | None, as_json: bool) -> None:
    """Recompute logged served vectors offline; exit 1 when a feature differs."""
    store = store_from(ctx)
    rep = store.monitor_skew(start=start, end=end, limit=limit)
    if as_json:
        emit_json(rep.to_dict())
    else:
        t = Table("feature", "compared", "differ", "share", "threshold", "status")
        for f in rep.features:
            t.add_row(f.ref, str(f.compared), str(f.differ), f"{f.share:.4%}", f"{f.threshold:.4%}",
                      f"[{_STYLE[f.status]}]{f.status}[/]")
        console.print(t)
        for f in rep.features:
            for ex in f.examples:
                console.print(f"  {f.ref}: {ex}", markup=False, highlight=False)
        for ref, why in rep.not_compared.items():
            console.print(f"  not compared: {ref} ({why})", markup=False, highlight=False)
        console.print(f"{rep.requests} logged requests compared; "
                      f"[{'red' if not rep.ok else 'green'}]{len([f for f in rep.features if f.status == 'failing'])} "
                      f"features skewed[/]")
    store.monitoring.close()
    if not rep.ok:
        sys.exit(1)


@monitor.command("history")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.option("--last", type=int, default=10, show_default=True, help="Results per check to show.")
@click.pass_context
def monitor_history(ctx: click.Context, name: str, as_json: bool, last: int) -> None:
    """Trend of the checks and profile of VIEW or VIEW:FEATURE."""
    h = store_from(ctx).monitor_history(name)
    if as_json:
        emit_json(h)
        return
    t = Table("check", "time", "value", "threshold", "status")
    for check, rows in h["checks"].items():
        for r in rows[-last:]:
            t.add_row(check, r["time"], _fmt(r["value"]), _fmt(r["threshold"]), f"[{_STYLE[r['status']]}]{r['status']}[/]")
    console.print(t)
    p = (h.get("profile") or {}).get("current")
    if p:
        keys = ("count", "null_rate", "mean", "std", "min", "max")
        console.print("latest profile: " + ", ".join(f"{k}={_fmt(p.get(k))}" for k in keys if k in p)
                      + ("" if "quantiles" not in p else ", " + ", ".join(f"{k}={_fmt(v)}" for k, v in p["quantiles"].items()))
                      + ("" if "top" not in p else ", top=" + ", ".join(f"{v}:{c}" for v, c in p["top"][:5])),
                      highlight=False)
    for a in h["alerts"][-last:]:
        console.print(f"alert {a['time']} {a['state']}: {a['message']}", highlight=False)


@monitor.command("report")
@click.option("--out", "-o", default="report.html", show_default=True, help="HTML file to write.")
@click.option("--views", "-v", multiple=True, help="Only these views.")
@click.pass_context
def monitor_report(ctx: click.Context, out: str, views: tuple[str, ...]) -> None:
    """Write one self-contained HTML page of the latest checks, history and histograms."""
    names = [v for item in views for v in item.split(",") if v]
    path = store_from(ctx).monitor_report(out, names or None)
    click.echo(f"wrote {path}")


@monitor.command("pin")
@click.argument("view")
@click.option("--start", default=None, help="Reference window start (ISO time).")
@click.option("--end", default=None, help="Reference window end (ISO time).")
@click.option("--dataset", default=None, help="A saved dataset (the one a model was trained on).")
@click.option("--unpin", is_flag=True, help="Go back to the rolling reference window.")
@click.pass_context
def monitor_pin(ctx: click.Context, view: str, start: str | None, end: str | None, dataset: str | None, unpin: bool) -> None:
    """Pin the drift reference of VIEW to a time window or a saved dataset."""
    store = store_from(ctx)
    spec = store.pin_monitor_reference(view) if unpin else store.pin_monitor_reference(
        view, start=start, end=end, dataset=dataset)
    click.echo(f"{view}: reference {spec or 'rolling window'}")


@monitor.command("metrics")
@click.pass_context
def monitor_metrics(ctx: click.Context) -> None:
    """Print the latest results as Prometheus gauges."""
    click.echo(store_from(ctx).monitor_metrics(), nl=False)
