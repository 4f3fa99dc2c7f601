"""The feature server: an ASGI app whose every route is one FeatureStore call.

``create_app(store)`` returns the app. The routes parse the body
(``models``), call the facade (``get_online_features``, ``push``,
``catalog``), and render; no feature logic lives here, so a request over HTTP
and a call in process take the same code path. ``POST /v1/features``, the hot
route, is a plain callable (``vectors``) in front of a Starlette app that holds
the others; the app speaks ASGI (uvicorn) and RSGI (granian, ``rsgi``).
``QuiverError`` classes map to HTTP statuses in one table below, and every
error body is ``{"error": class, "message": text}``.

Handlers call the store on the event loop thread: reads are sub-millisecond
key lookups, a worker is bound by its one core anyway, and the backends need
no locking. Scale with ``--workers``.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
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
from quiver.serving.models import TooManyEntities, dumps, openapi, parse_push
from quiver.serving.rsgi import ASGIApp, call_asgi
from quiver.serving.vectors import PATH, FeaturesRoute

if TYPE_CHECKING:
    from quiver.store import FeatureStore

__all__ = ["ServingApp", "ServingSettings", "create_app", "warm_up"]

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

    def check(self, authorization: str, write: bool) -> None:
        """Raise ``AuthError`` unless the value of the ``Authorization`` header opens the route."""
        allowed = [self.write_key] if write else [self.read_key, self.write_key]
        allowed = [k for k in allowed if k] or ([self.read_key] if write and self.read_key else [])
        if not allowed:
            return
        scheme, _, given = authorization.partition(" ")
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


def error_body(e: BaseException) -> bytes:
    return dumps({"error": type(e).__name__, "message": str(e)})


def failure(route: str, e: Exception, metrics: ServerMetrics) -> tuple[int, bytes]:
    """The status and JSON body answering a failed request; counts and logs the error."""
    metrics.error(route, type(e).__name__)
    if not isinstance(e, QuiverError | NotImplementedError):
        log.exception("unexpected error on %s", route)
        return 500, error_body(RuntimeError(f"internal error: {type(e).__name__}: {e}"))
    status = status_of(e)
    if status >= 500:
        log.error("%s on %s: %s", type(e).__name__, route, e)
    return status, error_body(e)


def create_app(store: FeatureStore | str | Path = ".", settings: ServingSettings | None = None) -> ServingApp:
    """The app serving ``store`` (a FeatureStore or a repository path): ``POST
    /v1/features`` on its own lean callable (``vectors``), every other request on a
    Starlette app wrapped in its metrics recorder."""
    if not hasattr(store, "get_online_features"):
        from quiver.store import FeatureStore

        store = FeatureStore(store)
    fs: FeatureStore = store  # type: ignore[assignment]
    settings = settings or ServingSettings(fs.config.serving)
    metrics = ServerMetrics(ROUTES)

    def _failed(route: str, e: Exception) -> Response:
        status, body = failure(route, e, metrics)
        return Response(body, status, media_type=JSON)

    def _auth(request: Request, write: bool) -> None:
        settings.check(request.headers.get("authorization", ""), write)

    features = FeaturesRoute(fs, settings, metrics, lambda route, e: failure(route, e, metrics))

    async def push(request: Request) -> Response:
        try:
            _auth(request, write=True)
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

    async def not_found(request: Request, exc: Exception) -> Response:
        return Response(error_body(NotFoundError(f"no route {request.url.path}.{closest(request.url.path, ROUTES)}")),
                        404, media_type=JSON)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return Response(dumps({"error": "MethodNotAllowed", "message": f"{request.method} is not allowed on "
                               f"{request.url.path}"}), 405, media_type=JSON)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        fs.close()

    starlette = Starlette(
        routes=[
            Route("/v1/features", features, methods=["POST"]),  # reached by ``app`` below, before Starlette
            Route("/v1/push", push, methods=["POST"]),
            Route("/v1/catalog", catalog, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics_text, methods=["GET"]),
            Route("/openapi.json", openapi_json, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_allowed},
        lifespan=lifespan,
    )
    others = metrics.wrap(starlette)

    return ServingApp(features, others, fs.close)


class ServingApp:
    """The server's app under either interface: ASGI ``__call__`` (uvicorn, test
    clients) and RSGI ``__rsgi__`` (granian). ``POST /v1/features`` goes to its lean
    route (which counts itself in the metrics), everything else to Starlette."""

    def __init__(self, features: FeaturesRoute, others: ASGIApp, close: Callable[[], None]) -> None:
        self.features = features
        self.others = others
        self._close = close

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST":
            await self.features(scope, receive, send)
        else:
            await self.others(scope, receive, send)

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.path == PATH and scope.method == "POST":
            await self.features.rsgi(scope, proto)
        else:
            await call_asgi(self.others, scope, proto)

    def __rsgi_del__(self, loop: Any) -> None:
        self._close()  # what the Starlette lifespan does under ASGI


def warm_up(fs: FeatureStore) -> int:
    """Run one request per feature service, so the first real one finds the registry
    loaded, the online plans compiled, the online store connected and the on-demand
    functions' modules imported (a cold first request took ~1.5 s). The entity keys
    and request fields are zeros of their types; a service whose functions reject
    them is warmed as far as it got. Returns how many services answered."""
    answered = 0
    for service in fs.list_feature_services():
        try:
            sel = fs.resolve(None, service.name)
            keys: dict[str, Sequence[Any]] = {}
            context: dict[str, list[Any]] = {}
            for vs in sel.views:
                for e in getattr(vs.view, "entities", ()):
                    for k, dtype in e.dtypes.items():
                        keys.setdefault(k, [_ZEROS.get(dtype.name)])
                for k, dtype in getattr(vs.view, "request_dtypes", {}).items():
                    context.setdefault(k, [_ZEROS.get(dtype.name)])
            fs.get_online_features(feature_service=service.name, entity_rows=keys, request_context=context)
            answered += 1
        except Exception as e:  # noqa: BLE001 - warming up is best effort; real requests report errors
            log.info("warm-up of feature service %r stopped: %s: %s", service.name, type(e).__name__, e)
    return answered


_ZEROS = {"Int32": 0, "Int64": 0, "Float32": 0.0, "Float64": 0.0, "String": "", "Bool": False, "Bytes": b""}
