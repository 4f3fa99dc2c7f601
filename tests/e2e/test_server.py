"""The feature server through real HTTP: ``quiver serve`` in its own process on a
loopback port, on the SQLite and on the Redis online store.

Responses equal ``get_online_features`` in process; on-demand features equal
at serving and at training time; every bad input gets a 4xx naming the
problem; a failing on-demand function gives a 500 naming its view and the
server keeps serving; API keys; metrics; the OpenAPI document holds against
the live server (schemathesis).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.quiver_server import QuiverServer, live_fraud_repo

EXTRA = '''
import pandas as pd


@on_demand_feature_view(sources=[tx_amount, user_home[["home_lat"]]], schema=[Field("boom_value", types.Float64)])
def boom(row):
    if row["amount"] is not None and row["amount"] < 0:
        raise ValueError("negative amount")
    return {"boom_value": row["amount"]}


@on_demand_feature_view(sources=[tx_amount, user_profile[["avg_amount_90d"]]],
                        schema=[Field("amount_to_avg_90d_pd", types.Float64)], mode="pandas")
def amount_vs_avg_pd(df):
    out = pd.DataFrame(index=df.index)
    out["amount_to_avg_90d_pd"] = df["amount"] / df["avg_amount_90d"].where(df["avg_amount_90d"] != 0)
    return out
'''
MAX_ENTITIES = 50
USERS = [0, 1, 2, 5, 17, 999_999]  # the last one is unknown
MERCHANTS = [0, 3, 4, 5, 6, 7]
CONTEXT = {"amount": [10, 250.5, None, 42.0, 7, 1.5], "lat": [40.7, 51.5, 48.9, None, 35.7, 0.0],
           "lon": [-74.0, -0.1, 2.35, 13.4, 139.7, 0.0]}
ODFV_FEATURES = ["tx_distance:distance_from_home_km", "amount_vs_avg:amount_to_avg_90d",
                 "amount_vs_avg_pd:amount_to_avg_90d_pd"]


@dataclass
class Live:
    repo: Path
    server: QuiverServer
    store: Any

    @property
    def url(self) -> str:
        return self.server.url

    def post(self, path: str, body: Any = None, content: bytes | None = None, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, content=content, timeout=10, **kw)


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    from quiver import FeatureStore

    backend = request.param
    online = "{type: sqlite, path: data/online.db}"
    if backend == "redis":
        online = f"{{type: redis, url: '{request.getfixturevalue('redis_url')}', key_prefix: serving_e2e}}"
    repo = live_fraud_repo(tmp_path_factory.mktemp(f"serving-{backend}"), online,
                           serving=f"{{max_entities: {MAX_ENTITIES}}}", extra_definitions=EXTRA)
    server = QuiverServer(repo)
    store = FeatureStore(repo)
    try:
        yield Live(repo, server, store)
    finally:
        server.stop()
        store.close()


def _request(features: Any = None, service: str | None = "fraud_model", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"entities": {"user_id": USERS, "merchant_id": MERCHANTS}, "request_context": CONTEXT}
    if features:
        body["features"] = features
    else:
        body["feature_service"] = service
    return {**body, **extra}


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _assert_same(http: dict[str, Any], resp: Any) -> None:
    """An HTTP answer holds exactly what the in-process response holds."""
    data = resp.to_dict()
    names = [n for n in data if n not in ("user_id", "merchant_id")]
    assert http["feature_names"] == names
    assert http["entities"] == {"user_id": data["user_id"], "merchant_id": data["merchant_id"]}
    assert len(http["results"]) == len(USERS)
    for i, row in enumerate(http["results"]):
        assert row["values"] == [data[n][i] for n in names], f"entity {i}"
        assert row["statuses"] == [resp.statuses[n][i] for n in names], f"entity {i}"
        assert row["event_timestamps"] == {v: _iso(t[i]) for v, t in resp.event_timestamps.items()}
    datetime.fromisoformat(http["evaluated_at"].replace("Z", "+00:00"))


def test_service_vector_equals_in_process(live: Live) -> None:
    r = live.post("/v1/features", _request())
    assert r.status_code == 200, r.text
    body = r.json()
    resp = live.store.get_online_features(feature_service="fraud_model",
                                          entity_rows={"user_id": USERS, "merchant_id": MERCHANTS},
                                          request_context=CONTEXT)
    _assert_same(body, resp)
    assert len(body["feature_names"]) == 10
    first = dict(zip(body["feature_names"], body["results"][0]["values"], strict=True))
    assert first["credit_limit"] is not None or body["results"][0]["statuses"][1] == "present"
    assert isinstance(first["distance_from_home_km"], float)
    assert body["results"][-1]["statuses"][0] == "not_found"  # the unknown user


def test_feature_list_with_full_names_equals_in_process(live: Live) -> None:
    feats = ["user_profile:credit_limit", "merchant_stats:merchant_risk", *ODFV_FEATURES]
    r = live.post("/v1/features", _request(features=feats, full_feature_names=True))
    assert r.status_code == 200, r.text
    resp = live.store.get_online_features(features=feats, entity_rows={"user_id": USERS, "merchant_id": MERCHANTS},
                                          request_context=CONTEXT, full_feature_names=True)
    _assert_same(r.json(), resp)
    assert r.json()["feature_names"][0] == "user_profile__credit_limit"


def test_on_demand_equal_at_serving_and_training(live: Live) -> None:
    """The same inputs give the same on-demand values from the server and from a training set."""
    r = live.post("/v1/features", _request(features=ODFV_FEATURES))
    assert r.status_code == 200, r.text
    served = r.json()
    import pyarrow as pa

    now = datetime.fromisoformat(served["evaluated_at"].replace("Z", "+00:00"))
    entity_df = pa.table({"user_id": USERS, "merchant_id": MERCHANTS, "event_timestamp": [now] * len(USERS),
                          **{k: pa.array(v, pa.float64()) for k, v in CONTEXT.items()}})
    try:
        train = live.store.get_historical_features(entity_df, features=ODFV_FEATURES).to_arrow().to_pydict()
    except NotImplementedError as e:
        pytest.skip(f"training sets are not there yet: {e}")
    for j, name in enumerate(served["feature_names"]):
        got = [row["values"][j] for row in served["results"]]
        assert got == pytest.approx(train[name], nan_ok=True), name
    assert any(v is not None for v in train["distance_from_home_km"])


def test_json_numbers_are_coerced_to_the_key_type(live: Live) -> None:
    a = live.post("/v1/features", {"features": ["user_profile:credit_limit"], "entities": {"user_id": [1, 2]}})
    b = live.post("/v1/features", {"features": ["user_profile:credit_limit"], "entities": {"user_id": [1.0, 2.0]}})
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    assert a.json()["results"] == b.json()["results"]
    assert a.json()["results"][0]["statuses"] == ["present"]
    # an integer sent for a Float64 request field is a float to the function
    c = live.post("/v1/features", {"features": ["boom:boom_value"], "entities": {"user_id": [1]},
                                   "request_context": {"amount": 3}})
    assert c.status_code == 200, c.text
    assert c.json()["results"][0]["values"] == [3.0]


BAD = [
    ("malformed json", b'{"feature_service": ', 400, "not valid JSON"),
    ("not an object", b"[1, 2]", 400, "JSON object"),
    ("unknown body key", {"feature_service": "fraud_model", "entitis": {"user_id": [1]}}, 400, "'entities'"),
    ("no features", {"entities": {"user_id": [1]}}, 400, "feature_service"),
    ("unknown service", {"feature_service": "fraud_modle", "entities": {"user_id": [1]}}, 404, "'fraud_model'"),
    ("unknown feature", {"features": ["user_profile:credit_limt"], "entities": {"user_id": [1]}}, 404,
     "'credit_limit'"),
    ("unknown view", {"features": ["user_profil:credit_limit"], "entities": {"user_id": [1]}}, 404,
     "'user_profile'"),
    ("bad reference", {"features": ["credit_limit"], "entities": {"user_id": [1]}}, 400, "view:feature"),
    ("missing join key", {"feature_service": "fraud_model", "entities": {"user_id": [1]},
                          "request_context": {"amount": 1, "lat": 1, "lon": 1}}, 400, "merchant_id"),
    ("wrongly typed key", {"features": ["user_profile:credit_limit"], "entities": {"user_id": ["abc"]}}, 400,
     "user_id"),
    ("bool key", {"features": ["user_profile:credit_limit"], "entities": {"user_id": [True]}}, 400, "user_id"),
    ("fractional key", {"features": ["user_profile:credit_limit"], "entities": {"user_id": [1.5]}}, 400, "user_id"),
    ("entities not columns", {"features": ["user_profile:credit_limit"], "entities": [{"user_id": 1}]}, 400,
     "entities"),
    ("no entities", {"features": ["user_profile:credit_limit"], "entities": {}}, 400, "entities"),
    ("uneven columns", {"feature_service": "fraud_model", "entities": {"user_id": [1, 2], "merchant_id": [1]}},
     400, "merchant_id"),
    ("too many entities", {"features": ["user_profile:credit_limit"],
                           "entities": {"user_id": list(range(MAX_ENTITIES + 1))}}, 413, "max_entities"),
    ("missing request field", {"features": ["amount_vs_avg:amount_to_avg_90d"], "entities": {"user_id": [1]}}, 400,
     "amount"),
    ("wrongly typed request field", {"features": ["amount_vs_avg:amount_to_avg_90d"], "entities": {"user_id": [1]},
                                     "request_context": {"amount": ["ten"]}}, 400, "amount"),
    ("request field of the wrong length", {"features": ["amount_vs_avg:amount_to_avg_90d"],
                                           "entities": {"user_id": [1]}, "request_context": {"amount": [1, 2]}},
     400, "amount"),
]


@pytest.mark.parametrize(("case", "body", "status", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_naming_the_problem(live: Live, case: str, body: Any, status: int, fragment: str) -> None:
    content = body if isinstance(body, bytes) else None
    r = live.post("/v1/features", None if content else body, content=content,
                  headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"error", "message"}
    assert fragment in err["message"], err


def test_failing_on_demand_function_is_a_500_naming_the_view(live: Live) -> None:
    body = {"features": ["boom:boom_value"], "entities": {"user_id": [1]}, "request_context": {"amount": [-1]}}
    r = live.post("/v1/features", body)
    assert r.status_code == 500, r.text
    assert r.json()["error"] == "OnDemandError"
    assert "'boom'" in r.json()["message"] and "negative amount" in r.json()["message"]
    assert live.server.alive
    ok = live.post("/v1/features", {**body, "request_context": {"amount": [2]}})
    assert ok.status_code == 200, ok.text
    assert ok.json()["results"][0]["values"] == [2.0]


def test_catalog_health_metrics_openapi(live: Live) -> None:
    assert httpx.get(live.url + "/health").json()["status"] == "ok"
    cat = httpx.get(live.url + "/v1/catalog").json()
    services = {s["name"]: s for s in cat["feature_services"]}
    assert len(services["fraud_model"]["features"]) == 10
    views = {v["name"]: v for v in cat["feature_views"]}
    assert views["user_profile"]["owner"] == "risk@example.com"
    assert views["user_profile"]["freshness_sla_seconds"] == 86400
    assert {v["name"] for v in cat["on_demand_feature_views"]} >= {"tx_distance", "amount_vs_avg"}
    live.post("/v1/features", _request())
    live.post("/v1/features", {"feature_service": "nope", "entities": {"user_id": [1]}})
    text = httpx.get(live.url + "/metrics").text
    assert 'quiver_http_requests_total{method="POST",route="/v1/features",status="200"}' in text
    assert 'quiver_http_requests_total{method="POST",route="/v1/features",status="404"}' in text
    assert 'quiver_http_request_duration_seconds_bucket{le="0.005",route="/v1/features"}' in text
    assert 'quiver_view_reads_total{view="user_profile"}' in text
    assert 'quiver_http_errors_total{error="NotFoundError",route="/v1/features"}' in text
    doc = httpx.get(live.url + "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert {"/v1/features", "/v1/push", "/v1/catalog", "/health", "/metrics"} <= set(doc["paths"])


def test_push_over_http(live: Live) -> None:
    bad = live.post("/v1/push", {"source": "transactions"})
    assert bad.status_code == 400 and "rows" in bad.json()["message"]
    bad = live.post("/v1/push", {"source": "transactions", "rows": [{"user_id": 1}], "to": "somewhere"})
    assert bad.status_code == 400 and "to" in bad.json()["message"]
    now = datetime.now(UTC).isoformat()
    row = {"tx_id": 10**9, "user_id": 1, "merchant_id": 2, "amount": 12, "event_timestamp": now,
           "created_timestamp": now}
    r = live.post("/v1/push", {"source": "transactions", "rows": [row]})
    if r.status_code == 501:
        pytest.skip(f"store.push is not there yet: {r.json()['message']}")
    assert r.status_code == 200, r.text
    assert r.json() == {"source": "transactions", "rows": 1}
    unknown = live.post("/v1/push", {"source": "transactionz", "rows": [row]})
    assert unknown.status_code == 404 and "'transactions'" in unknown.json()["message"]


def test_api_keys(live: Live, quiver_server: Any) -> None:
    if "redis" in (live.repo / "quiver.yaml").read_text():
        pytest.skip("the keys do not depend on the online store")
    server = quiver_server(live.repo, env={"QUIVER_SERVING_READ_KEY": "r-key", "QUIVER_SERVING_WRITE_KEY": "w-key"})
    body = {"features": ["user_profile:credit_limit"], "entities": {"user_id": [1]}}

    def post(path: str, payload: Any, key: str | None) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.post(server.url + path, json=payload, headers=headers, timeout=10)

    assert post("/v1/features", body, None).status_code == 401
    assert post("/v1/features", body, "wrong").status_code == 401
    assert post("/v1/features", body, "r-key").status_code == 200
    assert post("/v1/features", body, "w-key").status_code == 200
    push = {"source": "transactions", "rows": [{"user_id": 1}]}
    assert post("/v1/push", push, "r-key").status_code == 401
    assert post("/v1/push", push, "w-key").status_code != 401
    assert httpx.get(server.url + "/health").status_code == 200
    assert "securitySchemes" in httpx.get(server.url + "/openapi.json").json()["components"]


def test_openapi_holds_against_the_live_server(live: Live) -> None:
    """schemathesis: generated requests for every operation (a bounded number); no 5xx,
    invalid requests rejected, every answer as documented."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    from schemathesis.specs.openapi.checks import positive_data_acceptance

    if "redis" in (live.repo / "quiver.yaml").read_text():
        pytest.skip("the document does not depend on the online store")
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    push_ready = live.post("/v1/push", {"source": "x", "rows": [{"a": 1}]}).status_code != 501
    failures = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/v1/push" and not push_ready:
            continue

        @settings(max_examples=10, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=op.as_strategy())
        def check(case: Any) -> None:
            # schema-valid is not always meaningful (a join key the view lacks is a 400): that check is off
            case.call_and_validate(base_url=live.url, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as e:  # noqa: BLE001 - collect every operation's failure
            failures.append(f"{op.method.upper()} {op.path}: {e}")
    assert not failures, "\n\n".join(failures)


def test_concurrent_requests_each_get_their_own_answer(live: Live) -> None:
    """Requests in flight together (joined into one read by the server) answer as in process."""
    import asyncio

    async def send_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
            bodies = [{"feature_service": "fraud_model", "entities": {"user_id": [u], "merchant_id": [m]},
                       "request_context": {k: [v[i]] for k, v in CONTEXT.items()}}
                      for i, (u, m) in enumerate(zip(USERS, MERCHANTS, strict=True))]
            bodies.append({"features": ["user_profile:credit_limit"], "entities": {"user_id": ["abc"]}})
            return list(await asyncio.gather(*(client.post("/v1/features", json=b) for b in bodies * 3)))

    answers = asyncio.run(send_all())
    for n, r in enumerate(answers):
        i = n % (len(USERS) + 1)
        if i == len(USERS):
            assert r.status_code == 400 and "user_id" in r.json()["message"]
            continue
        assert r.status_code == 200, r.text
        resp = live.store.get_online_features(
            feature_service="fraud_model", entity_rows={"user_id": [USERS[i]], "merchant_id": [MERCHANTS[i]]},
            request_context={k: [v[i]] for k, v in CONTEXT.items()})
        assert r.json()["results"][0]["values"] == [resp.to_dict()[c][0] for c in r.json()["feature_names"]]
        assert r.json()["entities"] == {"user_id": [USERS[i]], "merchant_id": [MERCHANTS[i]]}


def test_uvicorn_and_granian_answer_alike(live: Live, quiver_server: Any) -> None:
    """The app under ASGI (uvicorn) and under RSGI (granian, the fixture's server): the
    same status and body on every route, for good and bad requests, and the same headers
    that matter (content type, the query string reaching the route)."""
    other = quiver_server(live.repo, server="uvicorn")
    calls: list[tuple[str, str, Any]] = [
        ("POST", "/v1/features", _request()),
        ("POST", "/v1/features", _request(features=["user_profile:credit_limt"])),  # 4xx
        ("POST", "/v1/features", b"{not json"),
        ("GET", "/v1/features", None),  # 405
        ("GET", "/v1/catalog", None),
        ("GET", "/health?verbose=1", None),
        ("GET", "/no/such/route", None),
        ("POST", "/v1/push", {"source": "no_such_source", "rows": [{"user_id": 1}]}),
    ]
    for method, path, body in calls:
        answers = []
        for url in (live.url, other.url):
            kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
            r = httpx.request(method, url + path, timeout=10, **(kw if body is not None else {}))
            answers.append((r.status_code, r.headers.get("content-type"), r.json()))
        (s1, t1, b1), (s2, t2, b2) = answers
        if path == "/v1/features" and s1 == 200:  # evaluated now: the times differ
            b1.pop("evaluated_at"), b2.pop("evaluated_at")
        assert (s1, t1, b1) == (s2, t2, b2), f"{method} {path}"
    metrics = httpx.get(live.url + "/metrics", timeout=10)
    counted = 'quiver_http_requests_total{method="POST",route="/v1/features",status="200"}'
    assert metrics.status_code == 200 and counted in metrics.text
