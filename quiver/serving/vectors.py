"""``POST /v1/features``, the route every scoring request takes, as a plain ASGI and RSGI callable.

A model server calls this route for every prediction, and the lookup behind it
(``FeatureStore.get_online_features``, the same code path as in process) cost
about 100 µs, while the Starlette stack around it (routing, two middlewares,
Request and Response objects, a send wrapper for the metrics) cost as much
again. So this route is a callable in front of the Starlette app that does only
what the route needs: read the body, check the API key, parse
(``models.parse_features``, the same validation and 4xx messages), read the
features on the event loop thread (a thread hop for ~100 µs of CPU-bound work
costs more than it frees) through ``batching``, which joins the requests of one
loop turn into one call, render with orjson, and count itself in the metrics.
Every other route, and any other method on this path, stays on Starlette. Both
server interfaces reach the same ``answer``: ASGI (uvicorn) and RSGI (granian,
whose Rust side parses HTTP and hands over the whole body in one call).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from quiver.retrieval.response import OnlineResponse
from quiver.serving.batching import Batcher
from quiver.serving.models import dumps, parse_features

if TYPE_CHECKING:
    from quiver.serving.metrics import ServerMetrics
    from quiver.store import FeatureStore

__all__ = ["FeaturesRoute", "render_features"]

PATH = "/v1/features"
_HEADERS = [(b"content-type", b"application/json")]
_RSGI_HEADERS = [("content-type", "application/json")]


def render_features(resp: OnlineResponse, keys: list[str], start: int = 0, stop: int | None = None) -> dict[str, Any]:
    """Rows ``start`` to ``stop`` of an online response -> ``{feature_names, entities,
    results, evaluated_at}``: one result per entity, in request order, with values and
    statuses per feature and the event time of the row served per view (ISO-8601 UTC, ``Z``)."""
    names, results, evaluated = resp.rendered(keys)
    data = resp.to_dict()
    return {
        "feature_names": names,
        "entities": {k: data[k][start:stop] for k in keys if k in data},
        "results": results[start:stop],
        "evaluated_at": evaluated,
    }


Failed = Callable[[str, Exception], tuple[int, bytes]]


class FeaturesRoute:
    """The ASGI callable of ``POST /v1/features``; ``failed(route, error)`` gives the
    status and JSON body of an error (and logs and counts it), as for every route."""

    def __init__(self, fs: FeatureStore, settings: Any, metrics: ServerMetrics, failed: Failed) -> None:
        self.fs = fs
        self.settings = settings
        self.metrics = metrics
        self.failed = failed
        self.batcher = Batcher(fs, max(settings.max_entities, 256))
        self._views: dict[Any, tuple[float, list[str]]] = {}

    def views_of(self, features: list[str] | None, service: str | None) -> list[str]:
        """The views a request reads (for per-view read counts), cached a few seconds."""
        key = service or tuple(features or ())
        hit = self._views.get(key)
        now = time.monotonic()
        if hit is None or now - hit[0] > 5.0:
            if len(self._views) > 1024:
                self._views.clear()
            sel = self.fs.resolve(features, service)
            hit = self._views[key] = (now, [v.name for v in sel.views])
        return hit[1]

    async def answer(self, body: bytes, authorization: str) -> tuple[int, bytes]:
        """The status and JSON body answering one request body (any server interface)."""
        start = time.perf_counter()
        try:
            if self.settings.secured:
                self.settings.check(authorization, write=False)
            req = parse_features(body, self.settings.max_entities)
            resp, first, last = await self.batcher.get(req)  # get_online_features, maybe with others
            out = dumps(render_features(resp, list(req.entities), first, last))
            self.metrics.reads(self.views_of(req.features, req.feature_service), req.size)
            status = 200
        except Exception as e:  # noqa: BLE001 - every failure becomes a JSON answer; the server keeps serving
            status, out = self.failed(PATH, e)
        self.metrics.answered(PATH, "POST", status, time.perf_counter() - start)
        return status, out

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """ASGI (uvicorn)."""
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        auth = ""
        if self.settings.secured:
            auth = next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1")
        status, out = await self.answer(body, auth)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*_HEADERS, (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})

    async def rsgi(self, scope: Any, proto: Any) -> None:
        """RSGI (granian): the body whole from ``proto()``, the answer in one call."""
        body = await proto()
        auth = scope.headers.get("authorization", "") if self.settings.secured else ""
        status, out = await self.answer(body, auth)
        proto.response_bytes(status, _RSGI_HEADERS, out)
