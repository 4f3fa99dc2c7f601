"""Materialization commands: ``quiver materialize START END`` and ``quiver materialize-incremental END``."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from quiver.cli import cli, emit_json, pass_store

console = Console()


class _Bar:
    """A rich progress bar per view: rows written, of how many, and the rate."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.tasks: dict[str, tuple[TaskID, float]] = {}

    def __call__(self, view: str, written: int, total: int) -> None:
        if view not in self.tasks:
            self.tasks[view] = (self.progress.add_task(view, total=max(total, 1), rate=""), time.perf_counter())
        task, t0 = self.tasks[view]
        dt = max(time.perf_counter() - t0, 1e-6)
        self.progress.update(task, completed=written if total else 1, total=max(total, 1),
                             rate=f"{written:,} rows  {written / dt:,.0f} rows/s")


def _run(store: Any, as_json: bool, call: Any) -> None:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, disable=as_json) as progress:
        result = call(_Bar(progress))
    if as_json:
        emit_json(result.to_dict())
        return
    for v in result.views:
        if v.skipped:
            console.print(f"  {v.view}: skipped ({v.skipped})")
        else:
            console.print(f"  {v.view}: {v.rows:,} keys written in {v.seconds:.2f}s")
    rate = result.rows / result.seconds if result.seconds else 0.0
    console.print(f"materialized {result.rows:,} keys in {result.seconds:.2f}s ({rate:,.0f} keys/s)")


@cli.command("materialize")
@click.argument("start")
@click.argument("end")
@click.option("--views", "-v", multiple=True, help="Views to materialize (repeat, or comma-separated); default all.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_store
def materialize(store: Any, start: str, end: str, views: tuple[str, ...], as_json: bool) -> None:
    """Write the latest values with event time in [START, END) online (and the history offline).

    START and END are ISO-8601 times (UTC when no zone is given)."""
    names = [n for v in views for n in v.split(",") if n] or None
    _run(store, as_json, lambda bar: store.materialize(start, end, names, progress=bar))


@cli.command("materialize-incremental")
@click.argument("end")
@click.option("--views", "-v", multiple=True, help="Views to materialize (repeat, or comma-separated); default all.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_store
def materialize_incremental(store: Any, end: str, views: tuple[str, ...], as_json: bool) -> None:
    """Materialize each view from its watermark up to END, late-arriving rows included."""
    names = [n for v in views for n in v.split(",") if n] or None
    _run(store, as_json, lambda bar: store.materialize_incremental(end, names, progress=bar))
