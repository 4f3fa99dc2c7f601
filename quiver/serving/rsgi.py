"""The routes other than ``POST /v1/features`` under an RSGI server (granian).

Granian runs one interface per app. Under RSGI its Rust side parses HTTP and
hands the app the whole request body in one call, which is what makes the
scoring route cheap; the other routes (push, catalog, health, metrics, the
OpenAPI document) are a Starlette app, so each of their requests is passed to
it as one ASGI call: the scope built from the RSGI scope, the body as the one
``http.request`` message, and the response collected and sent whole (none of
these routes streams).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["ASGIApp", "call_asgi"]

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def _address(text: str) -> tuple[str, int] | None:
    host, _, port = text.rpartition(":")
    return (host.strip("[]"), int(port)) if port.isdigit() else None


async def call_asgi(app: ASGIApp, scope: Any, proto: Any) -> None:
    """Answer one RSGI HTTP request with the ASGI ``app``."""
    body = await proto()
    asgi_scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": scope.path,
        "raw_path": scope.path.encode(),
        "query_string": scope.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
        "client": _address(scope.client),
        "server": _address(scope.server),
    }
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await proto.client_disconnect()
        return {"type": "http.disconnect"}

    status, headers, chunks = 500, [], []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                proto.response_bytes(status, headers, b"".join(chunks))

    await app(asgi_scope, receive, send)
