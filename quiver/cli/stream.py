"""Stream commands: ``quiver stream`` (the worker, or ``--status``) and ``quiver backfill``."""

from __future__ import annotations

import signal
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from quiver.cli import cli, emit_json, pass_store

console = Console()


def _render_status(st: dict[str, Any]) -> None:
    t = Table("worker", "source", "events", "dead letters", "lag", "latency p50 / p99 ms", "last event", "updated")
    for wid, w in sorted(st["workers"].items()):
        for name, s in (w.get("sources") or {}).items():
            lag = sum((s.get("lag") or {}).values())
            p50, p99 = s.get("latency_ms_p50"), s.get("latency_ms_p99")
            lat = "-" if p50 is None else f"{p50:.0f} / {p99:.0f}"
            t.add_row(wid, name, str(s["events"]), str(s["dead_letters"]), str(lag), lat,
                      str(s.get("last_event") or "-"), str(s.get("updated_at", "-"))[:19])
    console.print(t)
    console.print(f"dead letters kept: {st['dead_letters']}")
    for r in st.get("dead_letter_reasons", [])[-5:]:
        console.print(f"  {r}", markup=False, highlight=False)


@cli.command()
@click.option("--views", "-v", multiple=True, help="Only the Kafka sources of these views (default: all).")
@click.option("--status", "show_status", is_flag=True, help="Show what the workers last reported, and exit.")
@click.option("--group", default=None, help="Consumer group (default: stream.group in quiver.yaml, or 'quiver').")
@click.option("--batch-size", type=int, default=None, help="Messages per batch.")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on 127.0.0.1:PORT.")
@click.option("--bootstrap-servers", default=None, help="Override the sources' Kafka bootstrap servers.")
@click.option("--idle-exit", type=float, default=None,
              help="Exit once every partition is read to its end and idle this many seconds.")
@click.option("--json", "as_json", is_flag=True)
@pass_store
def stream(store: Any, views: tuple[str, ...], show_status: bool, group: str | None, batch_size: int | None,
           metrics_port: int | None, bootstrap_servers: str | None, idle_exit: float | None, as_json: bool) -> None:
    """Consume the Kafka sources into online aggregation state and offline events."""
    if show_status:
        st = store.stream_status()
        emit_json(st) if as_json else _render_status(st)
        return
    options = {k: v for k, v in (("group", group), ("batch_size", batch_size), ("metrics_port", metrics_port),
                                 ("bootstrap_servers", bootstrap_servers)) if v is not None}
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        result = store.stream(list(views) or None, idle_exit=idle_exit, options=options)
    except KeyboardInterrupt:
        console.print("stopped")
        return
    if as_json:
        emit_json(result)
    else:
        for name, s in result["sources"].items():
            console.print(f"{name}: {s['events']} events, {s['dead_letters']} dead letters")


@cli.command()
@click.argument("view")
@click.option("--start", required=True, help="Start of event time (ISO-8601).")
@click.option("--end", required=True, help="End of event time (ISO-8601), exclusive.")
@click.option("--online", is_flag=True, help="Rebuild the view's online aggregation state from offline events.")
@click.option("--chunk", default=None, help="Chunk length, e.g. 1d or 6h (default 1d).")
@click.option("--force", is_flag=True, help="With --online: rebuild even if a stream worker reported lately.")
@click.option("--json", "as_json", is_flag=True)
@pass_store
def backfill(store: Any, view: str, start: str, end: str, online: bool, chunk: str | None, force: bool,
             as_json: bool) -> None:
    """Compute VIEW's history over [--start, --end) in resumable chunks."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task(f"backfill {view}", total=None)
        result = store.backfill(view, start, end, online=online, chunk=chunk, force=force,
                                progress=lambda i, n: progress.update(task, completed=i, total=n))
    if as_json:
        emit_json(result)
    else:
        console.print(f"{view}: {result['chunks_done']} chunk(s) done ({result['chunks_skipped']} already done "
                      f"before), {result['rows']} rows{' online' if online else ''}")
