"""``quiver serve``: the feature server on granian (RSGI) or uvicorn (ASGI).

granian is the default, picked by ``bench/serving.py --duration 10 --servers
granian,uvicorn --targets floor,quiver`` (wrk, one thread, one worker, full
``fraud_model`` requests: 8 stored + 2 on-demand features on Redis) on this
2-core machine: at 16 connections granian served 6,177 req/s at p99 4.4 ms and
uvicorn 4,200 req/s at p99 7.8 ms. Under RSGI granian's Rust threads parse HTTP
and hand the app the whole body in one call, so the Python thread (the one the
GIL lets run) does only the app's work; uvicorn parses HTTP in that thread.
With one connection uvicorn answers sooner (p50 0.57 ms against 0.84 ms: no
hand-over between threads per request), so ``--server uvicorn`` suits a single
sequential caller. ``--workers 1`` stays the default: in one back-to-back check
at 16 connections, one uvicorn worker served 5,177 req/s (p99 5.5 ms) and two
3,553 (p99 13.6 ms); the two cores are shared with the load client and Redis,
and one worker joins more concurrent requests into one read. The app is built
inside each worker by a loader that carries the repository path, so no
environment variable is set; it warms up before the worker listens.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import click

from quiver.cli import cli

SERVERS = ("granian", "uvicorn")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=6566, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--server", "server", default=SERVERS[0], show_default=True, type=click.Choice(SERVERS),
              help="HTTP server that runs the app: granian (RSGI, most throughput) or uvicorn (ASGI, "
                   "least latency for one caller).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int, server: str, log_level: str) -> None:
    """Serve feature vectors over HTTP (POST /v1/features, /v1/push; GET /v1/catalog, /metrics, /openapi.json)."""
    from pathlib import Path

    from quiver.config import load_config
    from quiver.serving.app import ServingSettings

    config = load_config(ctx.obj["repo"])  # fail here, once, on a bad quiver.yaml
    ServingSettings(config.serving)
    factory = partial(warm_app, str(Path(config.repo_path)))
    click.echo(f"quiver serve: project {config.project} on http://{host}:{port} ({server}, {workers} worker(s))", err=True)
    run_server(factory, server, host, port, workers, log_level)


def warm_app(repo: str) -> Any:
    """The app of ``repo``, built in each worker before it listens: warmed up (one
    request per feature service: registry, plans, online connection, on-demand code),
    then everything loaded so far is frozen out of the garbage collector's reach
    (``gc.freeze``), so a full collection never walks the ~100k objects of the
    loaded libraries in the middle of a request (one took 100-400 ms here)."""
    import gc

    from quiver.serving.app import create_app, warm_up
    from quiver.store import FeatureStore

    store = FeatureStore(repo)
    app = create_app(store)
    warm_up(store)
    gc.collect()
    gc.freeze()
    return app


def run_server(factory: Callable[[], Any], server: str, host: str, port: int, workers: int = 1,
               log_level: str = "warning") -> None:
    """Run the app that ``factory()`` builds (once per worker) until stopped: over ASGI on
    uvicorn, over RSGI (its ``__rsgi__``) on granian."""
    if server == "granian":
        _granian(factory, host, port, workers, log_level)
    else:
        _uvicorn(factory, host, port, workers, log_level)


def _granian(factory: Callable[[], Any], host: str, port: int, workers: int, log_level: str) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        "quiver.serving.app:create_app",  # a label only: the loader below builds the app
        address=host,
        port=port,
        interface=Interfaces.RSGI,  # the app's ``__rsgi__``: the whole body in one call, no ASGI messages
        workers=workers,
        loop=Loops.uvloop,
        websockets=False,
        log_level=log_level,  # type: ignore[arg-type]
        log_access=False,
    ).serve(target_loader=factory, wrap_loader=False)


def _uvicorn(factory: Callable[[], Any], host: str, port: int, workers: int, log_level: str) -> None:
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(factory, host=host, port=port, factory=True, loop="uvloop", http="httptools",
                            log_level=log_level, access_log=False, workers=workers, lifespan="on",
                            proxy_headers=False)
    server = uvicorn.Server(config)
    if workers == 1:
        server.run()
    else:
        Multiprocess(config, sockets=[config.bind_socket()]).run()  # spawns workers that build the app
