"""What the HTTP API accepts and returns: request parsing and the OpenAPI document.

Requests are parsed here, once, into small dataclasses, with errors that name
the field that is wrong; the same shapes are written as JSON Schema in
``openapi()`` so clients (and schemathesis) can check both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from quiver.errors import InputError, closest

__all__ = ["FeaturesRequest", "PushRequest", "TooManyEntities", "openapi", "parse_features", "parse_push"]


class TooManyEntities(InputError):
    """A request asks for more entities than ``serving.max_entities`` allows."""


@dataclass
class FeaturesRequest:
    features: list[str] | None
    feature_service: str | None
    entities: dict[str, list[Any]]
    request_context: dict[str, list[Any]] | None
    full_feature_names: bool = False
    size: int = 0


@dataclass
class PushRequest:
    source: str
    rows: list[dict[str, Any]] | dict[str, list[Any]]
    to: str = "online_and_offline"
    size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


_FEATURES_KEYS = ("features", "feature_service", "entities", "request_context", "full_feature_names")
_PUSH_KEYS = ("source", "rows", "to")
PUSH_TARGETS = ("online_and_offline", "online", "offline")


def _body(raw: bytes, keys: tuple[str, ...]) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InputError(f"the request body is not valid JSON ({e}); send a JSON object") from None
    if not isinstance(body, dict):
        raise InputError(f"the request body must be a JSON object with keys {', '.join(keys)}, got {type(body).__name__}")
    for k in body:
        if k not in keys:
            raise InputError(f"unknown key {k!r} in the request body.{closest(k, keys)} Known keys: {', '.join(keys)}")
    return body


def _columns(value: Any, what: str, n: int | None) -> tuple[dict[str, list[Any]], int]:
    """A columnar mapping ``{"name": [values...]}`` whose columns all have one length;
    a scalar is broadcast when ``n`` is known."""
    if not isinstance(value, dict):
        raise InputError(f"{what!r} must be an object of columns like {{\"user_id\": [1, 2]}}, got {type(value).__name__}")
    out: dict[str, list[Any]] = {}
    for name, col in value.items():
        if not isinstance(col, list):
            if n is None or isinstance(col, dict):
                raise InputError(f"{what}.{name} must be a list of values (one per entity), got {type(col).__name__}")
            col = [col] * n
        if n is None:
            n = len(col)
        elif len(col) != n:
            raise InputError(f"{what}.{name} has {len(col)} values but there are {n} entities; send one value per entity")
        out[name] = col
    return out, n or 0


def parse_features(raw: bytes, max_entities: int) -> FeaturesRequest:
    body = _body(raw, _FEATURES_KEYS)
    features = body.get("features")
    service = body.get("feature_service")
    if features is not None and (not isinstance(features, list) or not all(isinstance(f, str) for f in features)):
        raise InputError("'features' must be a list of 'view:feature' strings")
    if service is not None and not isinstance(service, str):
        raise InputError("'feature_service' must be the name of a feature service (a string)")
    if not features and not service:
        raise InputError("ask for 'features': ['view:feature', ...] or a 'feature_service': 'name'")
    if features and service:
        raise InputError("send either 'features' or 'feature_service', not both")
    if "entities" not in body:
        raise InputError("'entities' is missing: send the join keys as columns, e.g. {\"user_id\": [1, 2]}")
    entities, n = _columns(body["entities"], "entities", None)
    if not entities or n == 0:
        raise InputError("'entities' is empty: send at least one join key column with at least one value")
    if n > max_entities:
        raise TooManyEntities(
            f"{n} entities in one request; the limit is {max_entities} (serving.max_entities in quiver.yaml): "
            "split the request"
        )
    context = None
    if body.get("request_context") is not None:
        context, _ = _columns(body["request_context"], "request_context", n)
    full = body.get("full_feature_names", False)
    if not isinstance(full, bool):
        raise InputError("'full_feature_names' must be true or false")
    return FeaturesRequest(features or None, service, entities, context, full, n)


def parse_push(raw: bytes, max_rows: int) -> PushRequest:
    body = _body(raw, _PUSH_KEYS)
    source = body.get("source")
    if not isinstance(source, str) or not source:
        raise InputError("'source' must name a push or stream source, e.g. \"transactions\"")
    to = body.get("to", "online_and_offline")
    if to not in PUSH_TARGETS:
        raise InputError(f"'to' must be one of {', '.join(PUSH_TARGETS)}, got {to!r}")
    rows = body.get("rows")
    if isinstance(rows, list):
        if not all(isinstance(r, dict) for r in rows):
            raise InputError("'rows' must be a list of objects (one per event) or an object of columns")
        n = len(rows)
    elif isinstance(rows, dict):
        rows, n = _columns(rows, "rows", None)
    else:
        raise InputError("'rows' is missing: send a list of events [{...}, ...] or columns {\"col\": [...]}")
    if n == 0:
        raise InputError("'rows' is empty: send at least one event")
    if n > max_rows:
        raise TooManyEntities(f"{n} rows in one push; the limit is {max_rows} (serving.max_push_rows): split the push")
    return PushRequest(source, rows, to, n)


# -- the OpenAPI document ---------------------------------------------------------------

_SCALAR = {"type": ["string", "number", "integer", "boolean", "null"]}
_VALUE = {"description": "a feature value (number, string, bool, list or null)"}
_COLUMNS = {
    "type": "object",
    "additionalProperties": {"type": "array", "items": _SCALAR},
}
_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "the error class, e.g. NotFoundError"},
        "message": {"type": "string", "description": "what was wrong and what to do"},
    },
}


def _err(desc: str) -> dict[str, Any]:
    return {"description": desc, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_AUTH_ERRORS = {"401": _err("missing or wrong API key")}


def openapi(title: str, version: str, secured: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the server."""
    schemas = {
        "Error": _ERROR,
        "FeaturesRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["entities"],
            "oneOf": [{"required": ["features"]}, {"required": ["feature_service"]}],
            "properties": {
                "features": {"type": "array", "minItems": 1, "description": "'view:feature' references",
                             "items": {"type": "string", "pattern": r"^[A-Za-z_]\w*(@\d+)?:[A-Za-z_]\w*$"}},
                "feature_service": {"type": "string", "minLength": 1, "description": "a feature service name"},
                "entities": {
                    "type": "object",
                    "minProperties": 1,
                    "additionalProperties": {"type": "array", "items": _SCALAR, "minItems": 1},
                    "description": "join keys as columns of one length: {\"user_id\": [1, 2]}",
                },
                "request_context": {
                    "type": "object",
                    "additionalProperties": {"oneOf": [{"type": "array", "items": _SCALAR}, _SCALAR]},
                    "description": "request-time inputs of on-demand features, a column or one value for all entities",
                },
                "full_feature_names": {"type": "boolean", "default": False},
            },
        },
        "FeaturesResponse": {
            "type": "object",
            "required": ["feature_names", "results", "evaluated_at"],
            "properties": {
                "feature_names": {"type": "array", "items": {"type": "string"}},
                "entities": _COLUMNS,
                "results": {
                    "type": "array",
                    "description": "one item per entity, in request order",
                    "items": {
                        "type": "object",
                        "required": ["values", "statuses", "event_timestamps"],
                        "properties": {
                            "values": {"type": "array", "items": _VALUE},
                            "statuses": {"type": "array", "items": {"type": "string"}},
                            "event_timestamps": {
                                "type": "object",
                                "additionalProperties": {"type": ["string", "null"]},
                                "description": "per feature view, the event time of the row served (UTC)",
                            },
                        },
                    },
                },
                "evaluated_at": {"type": "string", "description": "the time at which windows were evaluated (UTC)"},
            },
        },
        "PushRequest": {
            "type": "object",
            "additionalProperties": False,
            "required": ["source", "rows"],
            "properties": {
                "source": {"type": "string"},
                "rows": {
                    "oneOf": [
                        {"type": "array", "items": {"type": "object"}, "minItems": 1},
                        _COLUMNS,
                    ]
                },
                "to": {"type": "string", "enum": list(PUSH_TARGETS), "default": "online_and_offline"},
            },
        },
        "PushResponse": {
            "type": "object",
            "required": ["source", "rows"],
            "properties": {"source": {"type": "string"}, "rows": {"type": "integer"}},
        },
    }
    security = [{"apiKey": []}] if secured else []
    bad = {"400": _err("malformed body, bad feature reference, missing or mistyped join key"),
           "404": _err("unknown feature view, feature or service (with the closest names)"),
           "413": _err("too many entities or rows in one request"),
           "500": _err("an on-demand feature's function failed (names the view) or the server failed"),
           "503": _err("a backend is unavailable for the moment; retry")}
    if secured:
        bad.update(_AUTH_ERRORS)

    def body(ref: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}

    def ok(ref: str | None, desc: str, media: str = "application/json") -> dict[str, Any]:
        schema = {"$ref": f"#/components/schemas/{ref}"} if ref else {"type": "object"}
        if media != "application/json":
            schema = {"type": "string"}
        return {"description": desc, "content": {media: {"schema": schema}}}

    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "quiver feature server: feature vectors, pushed events, the catalog"},
        "paths": {
            "/v1/features": {"post": {
                "operationId": "getOnlineFeatures",
                "summary": "Feature vectors for entity keys (a feature service or a list of features)",
                "requestBody": body("FeaturesRequest"),
                "responses": {"200": ok("FeaturesResponse", "values, statuses and event times per entity"), **bad},
                "security": security,
            }},
            "/v1/push": {"post": {
                "operationId": "push",
                "summary": "Rows into a push or stream source: online state and offline history",
                "requestBody": body("PushRequest"),
                "responses": {"200": ok("PushResponse", "rows accepted"), **bad},
                "security": security,
            }},
            "/v1/catalog": {"get": {
                "operationId": "catalog",
                "summary": "Views, features and services with owners, SLAs and versions",
                "responses": {"200": ok(None, "the catalog")},
            }},
            "/health": {"get": {"operationId": "health", "summary": "Liveness",
                                "responses": {"200": ok(None, "the server is up")}}},
            "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus metrics",
                                 "responses": {"200": ok(None, "Prometheus text format", "text/plain")}}},
        },
        "components": {"schemas": schemas},
    }
    if secured:
        doc["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
    return doc


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=str)
