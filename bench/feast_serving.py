"""Feast 0.67's feature server on the fraud example's data: the baseline of the serving benchmark.

``feast_server(repo, redis_url, folder)`` writes a Feast feature repository
under ``folder`` over the Parquet files of a quiver fraud repository made by
``bench.serving.make_repo`` (``repo/data``): entities user and merchant, the
views user_profile (5 features), merchant_stats (3; its 1-hour window columns
are precomputed in the data) and user_home, the two on-demand features of
``fraud_model`` (distance from home, amount / 90-day average) as Feast
on-demand feature views in ``python`` mode over request sources, and a feature
service ``fraud_model`` serving the same 10 features. It runs ``feast apply``
and ``feast materialize`` into the Redis at ``redis_url`` (use another database
than quiver's), starts ``feast serve`` (one worker) in the Feast venv
(``bench/.venv-feast``, made by ``bench.online.feast_python``), and yields the
POST URL, the request body for the benchmark's entity and a one-line note.

The server runs in its fastest documented configuration: no access log,
worker recycling off (``--max-requests 0``; the default restarts the worker
every ~1000 requests), registry refresh once an hour instead of every minute;
its gunicorn worker is uvicorn's, with uvloop and httptools installed, and
Feast reads Redis with its async client (hiredis installed).

Try it alone (small fraud data, a Redis, the server, wrk at 1 and 16
connections, then Feast's values beside quiver's in-process vector)::

    .venv/bin/python -m bench.feast_serving --duration 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bench.online import feast_python
from bench.serving import REQUEST as _REQUEST
from bench.serving import Redis, free_port, stop, wait_port, wrk

REQUEST: dict[str, Any] = _REQUEST  # the benchmark's request, quiver's shape

# The feature repository Feast applies: the same views and service as quiver's
# quiver/examples/fraud/features.py, written in Feast's API. @DATA@ is replaced
# by the folder of the fraud Parquet files.
FEAST_FEATURES = '''
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

DATA = "@DATA@"

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
merchant = Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)


def src(name):
    return FileSource(name=name, path=f"{DATA}/{name}.parquet", timestamp_field="event_timestamp",
                      created_timestamp_column="created_timestamp")


user_profile = FeatureView(
    name="user_profile", entities=[user], ttl=timedelta(days=2), source=src("user_profile"),
    schema=[Field(name="account_age_days", dtype=Int64), Field(name="credit_limit", dtype=Float64),
            Field(name="country", dtype=String), Field(name="avg_amount_90d", dtype=Float64),
            Field(name="num_orders_90d", dtype=Int64)])
merchant_stats = FeatureView(
    name="merchant_stats", entities=[merchant], ttl=timedelta(hours=2), source=src("merchant_stats"),
    schema=[Field(name="merchant_risk", dtype=Float64), Field(name="merchant_tx_count_1h", dtype=Int64),
            Field(name="merchant_avg_amount_1h", dtype=Float64)])
user_home = FeatureView(
    name="user_home", entities=[user], ttl=timedelta(0), source=src("user_home"),
    schema=[Field(name="home_lat", dtype=Float64), Field(name="home_lon", dtype=Float64)])

tx_amount = RequestSource(name="tx_amount", schema=[Field(name="amount", dtype=Float64)])
tx_location = RequestSource(name="tx_location", schema=[Field(name="lat", dtype=Float64),
                                                        Field(name="lon", dtype=Float64)])


@on_demand_feature_view(sources=[tx_location, user_home], schema=[Field(name="distance_from_home_km", dtype=Float64)],
                        mode="python")
def tx_distance(inputs):
    import math

    out = []
    for lat, lon, hlat, hlon in zip(inputs["lat"], inputs["lon"], inputs["home_lat"], inputs["home_lon"]):
        if None in (lat, lon, hlat, hlon):
            out.append(None)
            continue
        p1, p2 = math.radians(hlat), math.radians(lat)
        dp, dl = p2 - p1, math.radians(lon - hlon)
        a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
        out.append(2 * 6371.0 * math.asin(min(1.0, math.sqrt(a))))
    return {"distance_from_home_km": out}


@on_demand_feature_view(sources=[tx_amount, user_profile[["avg_amount_90d"]]],
                        schema=[Field(name="amount_to_avg_90d", dtype=Float64)], mode="python")
def amount_vs_avg(inputs):
    out = []
    for amount, avg in zip(inputs["amount"], inputs["avg_amount_90d"]):
        out.append(None if amount is None or not avg else amount / avg)
    return {"amount_to_avg_90d": out}


fraud_model = FeatureService(name="fraud_model", features=[user_profile, merchant_stats, tx_distance, amount_vs_avg])
# the 8 stored features alone: what the two on-demand features cost Feast
fraud_model_stored = FeatureService(name="fraud_model_stored", features=[user_profile, merchant_stats])
'''


def feast_connection_string(redis_url: str) -> str:
    """redis://[:password@]host:port[/db] as Feast's ``host:port,db=N[,password=...]``."""
    u = urlsplit(redis_url)
    if u.scheme not in ("redis", "rediss"):
        raise ValueError(f"not a redis:// URL: {redis_url}")
    db = int(u.path.strip("/") or 0)
    parts = [f"{u.hostname or '127.0.0.1'}:{u.port or 6379}", f"db={db}"]
    if u.password:
        parts.append(f"password={unquote(u.password)}")
    if u.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def feast_body(on_demand: bool = True) -> bytes:
    """The benchmark's request in Feast's shape: request data go with the entities."""
    if not on_demand:
        return json.dumps({"feature_service": "fraud_model_stored", "entities": REQUEST["entities"]}).encode()
    return json.dumps({"feature_service": REQUEST["feature_service"],
                       "entities": {**REQUEST["entities"], **REQUEST["request_context"]}}).encode()


def _run(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        rc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd[1:3])} failed with {rc}:\n{tail}")


def post(url: str, body: bytes, timeout: float = 10) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@contextmanager
def feast_server(repo: Path, redis_url: str, folder: Path, *, on_demand: bool = True,
                 workers: int = 1) -> Iterator[tuple[str, bytes, str]]:
    """Feast 0.67 serving fraud_model from ``redis_url``: yields (POST URL, request body, note).

    ``on_demand=False`` asks for the 8 stored features only (a Feast feature
    service without the two on-demand views), to see what those cost Feast.
    """
    py = feast_python()
    feast_bin = str(py.parent / "feast")
    data = (Path(repo) / "data").resolve()
    frepo = Path(folder) / "feast_repo"
    frepo.mkdir(parents=True, exist_ok=True)
    (frepo / "feature_store.yaml").write_text(
        "project: fraud\nregistry: registry.db\nprovider: local\nentity_key_serialization_version: 3\n"
        "offline_store: {type: file}\n"
        f"online_store: {{type: redis, connection_string: '{feast_connection_string(redis_url)}'}}\n"
    )
    (frepo / "features.py").write_text(FEAST_FEATURES.replace("@DATA@", str(data)))
    env = {**os.environ, "FEAST_USAGE": "False", "PYTHONUNBUFFERED": "1"}
    env.pop("VIRTUAL_ENV", None)
    log = Path(folder) / "feast.log"
    t = time.perf_counter()
    _run([feast_bin, "apply"], frepo, env, log)
    end = datetime.now(UTC) + timedelta(minutes=1)
    _run([feast_bin, "materialize", "2000-01-01T00:00:00+00:00", end.isoformat()], frepo, env, log)
    print(f"feast apply + materialize in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    port = free_port()
    cmd = [feast_bin, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-access-log",
           "--max-requests", "0", "--max-requests-jitter", "0", "--registry_ttl_sec", "3600"]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=frepo, env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, timeout=120)
        url = f"http://127.0.0.1:{port}/get-online-features"
        body = feast_body(on_demand)
        deadline = time.monotonic() + 60
        while True:  # the port opens before the worker answers
            try:
                status, answer = post(url, body)
            except OSError as e:
                status, answer = 0, str(e).encode()
            if status == 200:
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"feast serve answers {status}: {answer[:500]!r} (log: {log})")
            time.sleep(0.2)
        version = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('feast'))"],
                                 env=env, capture_output=True, text=True).stdout.strip()
        what = ("fraud_model: 8 stored + 2 on-demand (python mode)" if on_demand
                else "fraud_model_stored: the 8 stored features only")
        note = (f"Feast {version} feature server (feast serve: gunicorn, {workers} uvicorn worker(s), no access log, "
                f"no worker recycling), feature service {what}, from Redis")
        yield url, body, note
    finally:
        stop(proc)


def feast_vector(answer: bytes) -> dict[str, Any]:
    """Feature name -> (value, status) from a Feast /get-online-features answer for one entity."""
    doc = json.loads(answer)
    names = doc["metadata"]["feature_names"]
    return {n: (r["values"][0], r["statuses"][0]) for n, r in zip(names, doc["results"])}


def quiver_vector(repo: Path) -> dict[str, Any]:
    from quiver import FeatureStore

    with FeatureStore(repo) as store:
        resp = store.get_online_features(feature_service=REQUEST["feature_service"], entity_rows=REQUEST["entities"],
                                         request_context=REQUEST["request_context"])
        return resp.to_dict()  # type: ignore[no-any-return]


def compare(quiver: dict[str, Any], feast: dict[str, Any]) -> list[str]:
    diffs = []
    for name, (value, status) in feast.items():
        if name in REQUEST["entities"]:
            continue
        if name not in quiver:
            diffs.append(f"{name}: only in Feast ({value!r}, {status})")
            continue
        q = quiver[name]
        q = q[0] if isinstance(q, list) else q
        same = (q == value or (isinstance(q, float) and isinstance(value, (int, float))
                               and abs(q - value) <= 1e-9 * max(1.0, abs(q))))
        if not same or status != "PRESENT":
            diffs.append(f"{name}: quiver {q!r}, Feast {value!r} ({status})")
    diffs += [f"{n}: only in quiver" for n in quiver if n not in feast and n not in REQUEST["entities"]]
    return diffs


def main() -> None:
    from bench.serving import make_repo

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", default="1,16")
    ap.add_argument("--scale", default="small")
    ap.add_argument("--stored-only", action="store_true", help="the 8 stored features, no on-demand views")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory(prefix="quiver-bench-feast-") as tmp:
        folder = Path(tmp)
        (folder / "redis").mkdir()
        redis = Redis(folder / "redis")
        try:
            repo = make_repo(folder, f"redis://127.0.0.1:{redis.port}/0", args.scale)
            with feast_server(repo, f"redis://127.0.0.1:{redis.port}/1", folder / "feast",
                              on_demand=not args.stored_only) as (url, body, note):
                print(note)
                _, answer = post(url, body)
                fv = feast_vector(answer)
                wrk(url, body, 4, 2, folder, {})  # warm-up
                print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
                for c in (int(c) for c in args.connections.split(",")):
                    r = wrk(url, body, c, args.duration, folder, {})
                    print(f"feast   c={c:<3d} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms"
                          f"  non-2xx {r['non_2xx']} {r['socket_errors']}", flush=True)
                print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
            qv = quiver_vector(repo)
            if args.stored_only:  # quiver's in-process vector still has the two on-demand features
                qv = {k: v for k, v in qv.items() if k in fv}
            print("feast: ", {k: v[0] for k, v in fv.items()})
            print("quiver:", qv)
            diffs = compare(qv, fv)
            print("values: " + ("the same as quiver's in-process vector" if not diffs else "DIFFERENT\n  "
                                + "\n  ".join(diffs)))
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
