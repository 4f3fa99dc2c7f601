"""``quiver dataset``: build a training set from the command line, list and show saved ones."""

from __future__ import annotations

import shutil
import time
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quiver.cli import cli, emit_json, pass_store

console = Console(stderr=True)


@cli.group()
def dataset() -> None:
    """Training sets: build one from entity rows, show saved ones."""


@dataset.command("build")
@click.option("--service", "service", default=None, help="Feature service whose features to join.")
@click.option("--features", "features", default=None,
              help="Comma-separated feature references (view:feature), instead of --service.")
@click.option("--entities", required=True,
              help="Entity rows: a Parquet file or folder (join keys + event_timestamp), or an SQL query.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Parquet file to write.")
@click.option("--persist", "persist", default=None, help="Also keep it as a saved dataset with this name.")
@click.option("--full-feature-names", is_flag=True, help="Name columns view__feature.")
@click.option("--as-known", is_flag=True, help="Only values created by each row's time (no later corrections).")
@click.option("--overwrite", is_flag=True, help="Replace a saved dataset of the same name.")
@click.option("--json", "as_json", is_flag=True, help="Print the result summary as JSON.")
@pass_store
def build(store: Any, service: str | None, features: str | None, entities: str, out: str, persist: str | None,
          full_feature_names: bool, as_known: bool, overwrite: bool, as_json: bool) -> None:
    """Join point-in-time correct features onto the entity rows and write them to --out."""
    if bool(service) == bool(features):
        raise click.UsageError("give exactly one of --service NAME or --features view:feature,...")
    refs = [f.strip() for f in features.split(",") if f.strip()] if features else None
    started = time.perf_counter()
    job = store.get_historical_features(entities, features=refs, feature_service=service,
                                        full_feature_names=full_feature_names, as_known=as_known)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task("joining", total=None)

        def bar(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total or None)

        if persist:
            saved = job.persist(persist, overwrite=overwrite, progress=bar)
            shutil.copyfile(saved.path, out)
            rows = saved.metadata["rows"]
        else:
            rows = job.to_parquet(out, progress=bar)
    summary = {"out": out, "rows": rows, "columns": job.columns, "seconds": round(time.perf_counter() - started, 3),
               "saved_dataset": persist}
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"wrote {rows} rows x {len(job.columns)} columns to {out} in {summary['seconds']:.2f}s"
                   + (f"; saved as dataset {persist!r}" if persist else ""))


@dataset.command("show")
@click.argument("name")
@click.option("--rows", default=5, show_default=True, help="How many rows to print.")
@pass_store
def show(store: Any, name: str, rows: int) -> None:
    """Print a saved dataset's record (versions, fingerprint) and its first rows."""
    ds = store.get_saved_dataset(name)
    emit_json(ds.to_dict())
    if rows:
        click.echo(ds.to_arrow().slice(0, rows).to_pandas().to_string())
