"""Feature requests that reach the server in the same event-loop turn are answered
by one ``get_online_features`` call (``quiver.serving.batching``): each request
must still get exactly the answer it gets alone, errors included.

The app runs in process here (ASGI calls on one event loop, SQLite online store),
so which requests share a turn is deterministic; the live-server tests in
``test_server.py`` send concurrent requests over real HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.quiver_server import live_fraud_repo

ODFV = ["amount_vs_avg:amount_to_avg_90d", "tx_distance:distance_from_home_km"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, list[int]]]:
    from quiver import FeatureStore
    from quiver.serving.app import create_app

    repo: Path = live_fraud_repo(tmp_path_factory.mktemp("batching"))
    store = FeatureStore(repo)
    calls: list[int] = []
    real = store.get_online_features

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    store.get_online_features = counted  # type: ignore[method-assign]
    try:
        yield store, create_app(store), calls
    finally:
        store.close()


async def _post(app: Any, body: bytes) -> tuple[int, dict[str, Any]]:
    scope = {"type": "http", "method": "POST", "path": "/v1/features", "raw_path": b"/v1/features",
             "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
             "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 2), "asgi": {"version": "3.0"}}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    answer = orjson.loads(sent[1]["body"])
    answer.pop("evaluated_at", None)  # the read time differs from call to call
    return sent[0]["status"], answer


def _together(app: Any, bodies: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    async def all_at_once() -> list[tuple[int, dict[str, Any]]]:
        return list(await asyncio.gather(*(_post(app, b) for b in bodies)))

    return asyncio.run(all_at_once())


def _alone(app: Any, bodies: list[bytes]) -> list[tuple[int, dict[str, Any]]]:
    async def one_by_one() -> list[tuple[int, dict[str, Any]]]:
        return [await _post(app, b) for b in bodies]

    return asyncio.run(one_by_one())


def _body(kind: str, user: Any, merchant: int, amount: Any) -> bytes:
    if kind == "service":
        return orjson.dumps({"feature_service": "fraud_model", "entities": {"user_id": [user], "merchant_id": [merchant]},
                             "request_context": {"amount": amount, "lat": 40.7, "lon": -74.0}})
    if kind == "odfv":
        return orjson.dumps({"features": ODFV, "entities": {"user_id": [user, 3]},
                             "request_context": {"amount": [amount, 1.0], "lat": [1.0, 2.0], "lon": [3.0, 4.0]}})
    return orjson.dumps({"features": ["user_profile:credit_limit"], "entities": {"user_id": [user]}})


def test_one_turn_is_one_call_and_each_request_gets_its_own_answer(served: tuple[Any, Any, list[int]]) -> None:
    _, app, calls = served
    bodies = [_body("service", u, u % 7, 10.0 + u) for u in range(12)]
    bodies += [_body("list", u, 0, None) for u in (1, 2, 999_999)]
    alone = _alone(app, bodies)
    calls.clear()
    together = _together(app, bodies)
    assert together == alone
    assert all(status == 200 for status, _ in together)
    assert len(calls) == 2  # one call per feature list, not one per request
    assert together[0][1]["entities"] == {"user_id": [0], "merchant_id": [0]}


def test_a_bad_request_fails_alone(served: tuple[Any, Any, list[int]]) -> None:
    _, app, _ = served
    bodies = [_body("service", 1, 1, 5.0), _body("service", "abc", 2, 5.0), _body("service", 3, 3, 7.0),
              _body("list", "x", 0, None), _body("list", 4, 0, None)]
    together = _together(app, bodies)
    assert together == _alone(app, bodies)
    assert [s for s, _ in together] == [200, 400, 200, 400, 200]
    assert "user_id" in together[1][1]["message"]


@settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(["service", "odfv", "list"]),
                          st.one_of(st.integers(0, 40), st.just("bad"), st.just(2.5)),
                          st.integers(0, 9),
                          st.one_of(st.floats(-5, 500, allow_nan=False), st.none(), st.just("ten"))),
                min_size=1, max_size=12))
def test_any_mix_answers_as_alone(served: tuple[Any, Any, list[int]], requests: list[tuple[Any, ...]]) -> None:
    """Whatever requests share a turn (good and bad, several feature lists), each
    answer equals the one the request gets on its own."""
    _, app, _ = served
    bodies = [_body(*r) for r in requests]
    assert _together(app, bodies) == _alone(app, bodies)


def test_warm_up_answers_every_service(served: tuple[Any, Any, list[int]]) -> None:
    """``quiver serve`` runs one request per feature service before it listens."""
    from quiver.serving.app import warm_up

    store, _, calls = served
    calls.clear()
    services = store.list_feature_services()
    assert services and warm_up(store) == len(services)
    assert len(calls) == len(services)
