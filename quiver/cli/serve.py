"""``quiver serve``: the feature server on uvicorn (ASGI) or granian (RSGI).

uvicorn is the default, picked by six paired runs of ``bench/serving.py
--duration 20 --servers granian,uvicorn --targets quiver --connections 16``
(wrk, one thread, one worker, full ``fraud_model`` requests: 8 stored + 2
on-demand features on Redis) on this 2-core machine: p99 at 16 connections had
a median of 4.96 ms on uvicorn (4.1-5.6 ms) and 5.25 ms on granian (4.2-6.8 ms);
granian served more (median 7,190 req/s against 6,290: its Rust threads parse
HTTP and hand the app the whole body, so the Python thread does only the app's
work), uvicorn answered one caller sooner (p50 0.54-0.62 ms against
0.70-0.78 ms: no hand-over between threads per request). ``--server granian``
is there for throughput with one worker. With two workers (``--workers 2``, one
per core of this machine) uvicorn leads further: in three paired 20 s runs at 16
connections it served 8,750-10,100 req/s with p99 3.1-3.8 ms, granian
6,910-7,290 req/s with p99 4.6-5.0 ms; and two uvicorn workers beat one (8,440-
10,010 req/s, p99 3.2-4.1 ms, against 5,930-6,930 req/s, p99 4.6-7.0 ms, three
paired runs). ``--workers 1`` stays the default, for a predictable footprint
(each worker holds its own registry, plans and connections): set it to the
cores the server has to itself. uvicorn runs with ``JoinedWritesProtocol``
(``quiver.serving.uvicorn_http``): a response's head and body in one write. The app is
built inside each worker by a loader that carries the repository path, so no
environment variable is set; it warms up before the worker listens.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import click

from quiver.cli import cli

SERVERS = ("uvicorn", "granian")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=6566, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--server", "server", default=SERVERS[0], show_default=True, type=click.Choice(SERVERS),
              help="HTTP server that runs the app: uvicorn (ASGI, least latency) or granian (RSGI, "
                   "most throughput).")
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

    from quiver.serving.uvicorn_http import JoinedWritesProtocol

    config = uvicorn.Config(factory, host=host, port=port, factory=True, loop="uvloop", http=JoinedWritesProtocol,
                            log_level=log_level, access_log=False, workers=workers, lifespan="on",
                            proxy_headers=False)
    server = uvicorn.Server(config)
    if workers == 1:
        server.run()
    else:
        Multiprocess(config, sockets=[config.bind_socket()]).run()  # spawns workers that build the app
