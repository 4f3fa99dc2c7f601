"""The ``quiver`` command: parse arguments, call one FeatureStore method, render.

Each command group lives in its own module and is registered below; none
holds logic of its own. ``QuiverError`` becomes a one-line message and exit 1.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click

from quiver.errors import QuiverError

__all__ = ["main", "cli"]


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except QuiverError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("--repo", "-r", default=".", envvar="QUIVER_REPO", show_default=True,
              help="Feature repository folder (holds quiver.yaml).")
@click.version_option(package_name="quiver-fs")
@click.pass_context
def cli(ctx: click.Context, repo: str) -> None:
    """quiver: a feature store. Define features once; train and serve them the same way."""
    ctx.obj = {"repo": repo}


def store_from(ctx: click.Context) -> Any:
    from quiver.store import FeatureStore

    if "store" not in ctx.obj:
        ctx.obj["store"] = FeatureStore(ctx.obj["repo"])
        ctx.call_on_close(ctx.obj["store"].close)
    return ctx.obj["store"]


def pass_store(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command the FeatureStore of ``--repo`` as its first argument."""

    @click.pass_context
    @wraps(fn)
    def wrapper(ctx: click.Context, *args: Any, **kwargs: Any) -> Any:
        return fn(store_from(ctx), *args, **kwargs)

    return wrapper


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def main() -> None:
    cli(prog_name="quiver")


# command modules register themselves on `cli`
from quiver.cli import repo as _repo  # noqa: E402,F401
from quiver.cli import serve as _serve  # noqa: E402,F401
from quiver.cli import monitor as _monitor  # noqa: E402,F401
from quiver.cli import materialize as _materialize  # noqa: E402,F401
from quiver.cli import stream as _stream  # noqa: E402,F401
from quiver.cli import dataset as _dataset  # noqa: E402,F401
