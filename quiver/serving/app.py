"""The feature server: an ASGI app whose every route is one FeatureStore call.

``create_app(store)`` returns a Starlette app. The routes parse the body
(``models``), call the facade (``get_online_features``, ``push``,
``catalog``), and render; no feature logic lives here, so a request over HTTP
and a call in process take the same code path. ``QuiverError`` classes map to
HTTP statuses in one table below, and every error body is
``{"error": class, "message": text}``.

Handlers call the store on the event loop thread: reads are sub-millisecond
key lookups, a worker is bound by its one core anyway, and the backends need
no locking. Scale with ``--workers``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from quiver.errors import (
    ConfigError,
    InputError,
    NotFoundError,
    QuiverError,
    TransientError,
    UnsupportedError,
    closest,
)
from quiver.serving.metrics import CONTENT_TYPE_LATEST, ServerMetrics
from quiver.serving.models import TooManyEntities, dumps, openapi, parse_features, parse_push

if TYPE_CHECKING:
    from quiver.store import FeatureStore

__all__ = ["ServingSettings", "create_app"]

log = logging.getLogger("quiver.serving")

JSON = "application/json"
ROUTES = ("/v1/features", "/v1/push", "/v1/catalog", "/health", "/metrics", "/openapi.json")
_SETTINGS = {
    "max_entities": 1000,
    "max_push_rows": 100_000,
    "read_key": None,
    "write_key": None,
}
ENV_READ_KEY = "QUIVER_SERVING_READ_KEY"
ENV_WRITE_KEY = "QUIVER_SERVING_WRITE_KEY"


class AuthError(InputError):
    """A request without the API key the server asks for."""


class ServingSettings:
    """The ``serving:`` section of ``quiver.yaml``; API keys may come from the
    environment instead (``QUIVER_SERVING_READ_KEY``, ``QUIVER_SERVING_WRITE_KEY``),
    which wins over the file so secrets need not be committed.

    The read key opens feature requests; the write key opens push (and reads).
    With only a read key set, push needs it too; with no key, the server is open.
    """

    def __init__(self, section: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> None:
        section = dict(section or {})
        env = os.environ if env is None else env
        unknown = [k for k in section if k not in _SETTINGS]
        if unknown:
            raise ConfigError(f"quiver.yaml: unknown key serving.{unknown[0]}.{closest(unknown[0], _SETTINGS)} "
                              f"Known: {', '.join(_SETTINGS)}")
        values = {**_SETTINGS, **section}
        for k in ("max_entities", "max_push_rows"):
            if not isinstance(values[k], int) or isinstance(values[k], bool) or values[k] < 1:
                raise ConfigError(f"quiver.yaml: serving.{k} must be a positive integer, got {values[k]!r}")
        self.max_entities: int = values["max_entities"]
        self.max_push_rows: int = values["max_push_rows"]
        self.read_key: str | None = env.get(ENV_READ_KEY) or values["read_key"]
        self.write_key: str | None = env.get(ENV_WRITE_KEY) or values["write_key"]
        for k in ("read_key", "write_key"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, str) or not v):
                raise ConfigError(f"quiver.yaml: serving.{k} must be a non-empty string")

    @property
    def secured(self) -> bool:
        return bool(self.read_key or self.write_key)

    def check(self, request: Request, write: bool) -> None:
        allowed = [self.write_key] if write else [self.read_key, self.write_key]
        allowed = [k for k in allowed if k] or ([self.read_key] if write and self.read_key else [])
        if not allowed:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise AuthError(f"this server needs an API key: send 'Authorization: Bearer <{'write' if write else 'read'} key>'")
        if not any(hmac.compare_digest(given.encode(), k.encode()) for k in allowed):
            raise AuthError(f"wrong API key for {'push' if write else 'feature requests'}")


def status_of(e: BaseException) -> int:
    """The HTTP status of an error: the most specific class wins."""
    if isinstance(e, AuthError):
        return 401
    if isinstance(e, TooManyEntities):
        return 413
    if isinstance(e, NotFoundError):
        return 404
    if isinstance(e, InputError):
        return 400
    if isinstance(e, TransientError):
        return 503
    if isinstance(e, UnsupportedError | NotImplementedError):
        return 501
    return 500


def _error(e: BaseException, status: int | None = None) -> Response:
    body = {"error": type(e).__name__, "message": str(e)}
    return Response(dumps(body), status or status_of(e), media_type=JSON)


def _iso(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return v


def render_features(resp: Any, keys: list[str], evaluated_at: datetime) -> dict[str, Any]:
    """An online response -> ``{feature_names, entities, results, evaluated_at}``: one
    result per entity, in request order, with values and statuses per feature and the
    event time of the row served per view."""
    data = resp.to_dict()
    names = [n for n in data if n not in keys]
    columns = [data[c] for c in names]
    statuses = resp.statuses
    status_cols = [statuses.get(c) for c in names]
    times = resp.event_timestamps
    results = []
    for i in range(len(resp)):
        results.append({
            "values": [col[i] for col in columns],
            "statuses": [s[i] if s is not None else "present" for s in status_cols],
            "event_timestamps": {v: _iso(t[i]) for v, t in times.items()},
        })
    evaluated = getattr(resp, "evaluated_at", None) or evaluated_at
    return {
        "feature_names": names,
        "entities": {k: data[k] for k in keys if k in data},
        "results": results,
        "evaluated_at": _iso(evaluated),
    }


ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def create_app(store: FeatureStore | str | Path = ".", settings: ServingSettings | None = None) -> ASGIApp:
    """The ASGI app serving ``store`` (a FeatureStore or a repository path), wrapped
    in its metrics recorder."""
    if not hasattr(store, "get_online_features"):
        from quiver.store import FeatureStore

        store = FeatureStore(store)
    fs: FeatureStore = store  # type: ignore[assignment]
    settings = settings or ServingSettings(fs.config.serving)
    metrics = ServerMetrics(ROUTES)
    views_cache: dict[Any, tuple[float, list[str]]] = {}

    def views_of(req: Any) -> list[str]:
        """The views a request reads (for per-view read counts), cached a few seconds."""
        key = req.feature_service or tuple(req.features or ())
        hit = views_cache.get(key)
        now = time.monotonic()
        if hit is None or now - hit[0] > 5.0:
            if len(views_cache) > 1024:
                views_cache.clear()
            sel = fs.resolve(req.features, req.feature_service)
            hit = views_cache[key] = (now, [v.name for v in sel.views])
        return hit[1]

    async def features(request: Request) -> Response:
        try:
            settings.check(request, write=False)
            req = parse_features(await request.body(), settings.max_entities)
            now = datetime.now(UTC)
            resp = fs.get_online_features(
                features=req.features,
                feature_service=req.feature_service,
                entity_rows=req.entities,
                request_context=req.request_context,
                full_feature_names=req.full_feature_names,
            )
            out = render_features(resp, list(req.entities), now)
            metrics.reads(views_of(req), req.size)
        except Exception as e:  # noqa: BLE001 - every failure becomes a JSON answer; the server keeps serving
            return _failed("/v1/features", e)
        return Response(dumps(out), media_type=JSON)

    async def push(request: Request) -> Response:
        try:
            settings.check(request, write=True)
            req = parse_push(await request.body(), settings.max_push_rows)
            n = fs.push(req.source, req.rows, to=req.to)
        except Exception as e:  # noqa: BLE001
            return _failed("/v1/push", e)
        return Response(dumps({"source": req.source, "rows": n if isinstance(n, int) else req.size}), media_type=JSON)

    async def catalog(request: Request) -> Response:
        try:
            return Response(dumps(fs.catalog()), media_type=JSON)
        except Exception as e:  # noqa: BLE001
            return _failed("/v1/catalog", e)

    async def health(request: Request) -> Response:
        return Response(dumps({"status": "ok", "project": fs.config.project}), media_type=JSON)

    async def metrics_text(request: Request) -> Response:
        # the server's own figures, then the monitor's check results as gauges
        checks = await run_in_threadpool(fs.monitor_metrics)
        return Response(metrics.render() + checks.encode(), media_type=CONTENT_TYPE_LATEST)

    import quiver

    doc = dumps(openapi(f"quiver feature server ({fs.config.project})", quiver.__version__, settings.secured))

    async def openapi_json(request: Request) -> Response:
        return Response(doc, media_type=JSON)

    def _failed(route: str, e: Exception) -> Response:
        metrics.error(route, type(e).__name__)
        if not isinstance(e, QuiverError | NotImplementedError):
            log.exception("unexpected error on %s", route)
            return _error(RuntimeError(f"internal error: {type(e).__name__}: {e}"), 500)
        if status_of(e) >= 500:
            log.error("%s on %s: %s", type(e).__name__, route, e)
        return _error(e)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(NotFoundError(f"no route {request.url.path}.{closest(request.url.path, ROUTES)}"), 404)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return Response(dumps({"error": "MethodNotAllowed", "message": f"{request.method} is not allowed on "
                               f"{request.url.path}"}), 405, media_type=JSON)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        fs.close()

    app = Starlette(
        routes=[
            Route("/v1/features", features, methods=["POST"]),
            Route("/v1/push", push, methods=["POST"]),
            Route("/v1/catalog", catalog, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_allowed},
        lifespan=lifespan,
    )
    return metrics.wrap(app)  # type: ignore[no-any-return]
