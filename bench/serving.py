"""Feature-server benchmark: single-entity ``fraud_model`` requests over HTTP.

A closed-loop load client in another process (``wrk`` from Debian, one
thread) sends the same request back to back on 1 and on 16 connections for
``--duration`` seconds each and reports throughput and p50/p99 latency for:

* ``floor``: a minimal ASGI endpoint returning a fixed feature vector (the cost
  of HTTP and the ASGI server alone);
* ``quiver``: ``quiver serve`` on the fraud example (small scale, data ending
  now) with the Redis online store: 8 stored features + 2 on-demand features;
* ``feast``: Feast 0.67's feature server on the same data files and request
  (``bench/feast_serving.py``), materialized into database 1 of the same Redis
  server so keys do not mix; the run ends with quiver's throughput over Feast's.

Beside throughput and latency, each line gives the server's CPU time per
request (user + system, all its processes, from ``/proc``): on a shared machine
it moves less than throughput does.

Every server runs ``--workers`` workers (2 by default: one per core of the
benchmark machine), quiver's, the floor's and Feast's alike. ``--servers
granian,uvicorn`` runs both servers (how the default of ``quiver serve`` was
chosen). Run by hand, never in CI::

    .venv/bin/python bench/serving.py                      # 20 s per point
    .venv/bin/python bench/serving.py --duration 5 --servers granian,uvicorn
    .venv/bin/python bench/serving.py --targets floor,quiver,feast
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PIN: list[str] = []  # with --pin: the CPUs of the server, and of the client and Redis


def pinned(i: int) -> list[str]:
    """The ``taskset`` prefix that runs a command on ``PIN[i]`` (nothing without --pin)."""
    return ["taskset", "-c", PIN[i]] if PIN else []


VECTOR = (b'{"feature_names":["account_age_days","credit_limit","country","avg_amount_90d","num_orders_90d",'
          b'"merchant_risk","merchant_tx_count_1h","merchant_avg_amount_1h","distance_from_home_km",'
          b'"amount_to_avg_90d"],"results":[{"values":[812,5000.0,"US",33.1,20,0.05,31,32.9,12.5,1.3],'
          b'"statuses":["PRESENT","PRESENT","PRESENT","PRESENT","PRESENT","PRESENT","PRESENT","PRESENT",'
          b'"PRESENT","PRESENT"]}]}')
REQUEST: dict[str, Any] = {
    "feature_service": "fraud_model",
    "entities": {"user_id": [7], "merchant_id": [3]},
    "request_context": {"amount": [42.5], "lat": [40.7], "lon": [-74.0]},
}


class FloorApp:
    """The floor: read the body, answer a fixed vector. Nothing else. ASGI for uvicorn,
    RSGI for granian (the interfaces ``quiver serve`` runs on them)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]
                await send({"type": kind + ".complete"})
                if kind == "lifespan.shutdown":
                    return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": VECTOR})

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        await proto()
        proto.response_bytes(200, [("content-type", "application/json")], VECTOR)


def floor_factory() -> Any:
    return FloorApp()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """Stop a server started in its own session, with its workers: SIGTERM, then SIGKILL
    after ``timeout`` seconds."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def cpu_seconds(session: int) -> float:
    """User + system CPU of every live process of a session (a server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[3]) == session:  # the process group; the server was started in its own session
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def start_server(args: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*pinned(0), *args], cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc


def wrk(url: str, body: bytes, connections: int, duration: int, folder: Path, headers: dict[str, str]) -> dict[str, Any]:
    """One closed-loop run: throughput and latency percentiles as wrk reports them."""
    script = folder / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body.decode())}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run([*pinned(1), "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    pct = {m.group(1): _ms(m.group(2)) for m in re.finditer(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": pct.get("50"), "p99_ms": pct.get("99"),
            "non_2xx": int(bad.group(1)) if bad else 0, "socket_errors": errors.group(1) if errors else ""}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    assert m, text
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]


class Redis:
    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        subprocess.run([*pinned(1), "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(folder), "--pidfile", str(folder / "redis.pid"),
                        "--logfile", str(folder / "redis.log"), "--daemonize", "yes"], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        subprocess.run(["redis-cli", "-p", str(self.port), "shutdown", "nosave"], capture_output=True)


def make_repo(folder: Path, redis_url: str, scale: str) -> Path:
    """The fraud example whose data ends now, applied and materialized into Redis."""
    from importlib import resources

    from quiver import FeatureStore
    from quiver.examples.fraud.data import SCALES, generate

    repo = folder / "repo"
    repo.mkdir()
    pkg = resources.files("quiver.examples.fraud")
    with resources.as_file(pkg / "features.py") as src:
        shutil.copyfile(src, repo / "features.py")
    (repo / "quiver.yaml").write_text(
        "project: fraud\nregistry: data/registry.db\noffline: {engine: duckdb, path: data/offline}\n"
        f"online: {{type: redis, url: '{redis_url}'}}\n"
    )
    days = SCALES[scale][2]
    start = (datetime.now(UTC) - timedelta(days=days)).replace(minute=0, second=0, microsecond=0)
    generate(repo / "data", scale=scale, start=start)
    with FeatureStore(repo) as store:
        store.apply()
        t = time.perf_counter()
        store.materialize(start, datetime.now(UTC) + timedelta(minutes=1))
        print(f"materialized {scale} into Redis in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        resp = store.get_online_features(feature_service="fraud_model", entity_rows=REQUEST["entities"],
                                         request_context=REQUEST["request_context"])
        print("in-process vector:", resp.to_dict(), file=sys.stderr)
    return repo


def report(target: str, server: str, c: int, r: dict[str, Any]) -> None:
    cpu = f"{r['cpu_us']:6.0f} us CPU/req" if r.get("cpu_us") is not None else " " * 17
    print(f"{target:7s} {server:8s} c={c:<3d} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms"
          f"  {cpu}  non-2xx {r['non_2xx']} {r['socket_errors']}", flush=True)


def run_feast(repo: Path, redis: Redis, folder: Path, conns: list[int], duration: int,
              workers: int = 1) -> list[dict[str, Any]]:
    """Feast's feature server on the same data, in database 1 of the same Redis, with as
    many workers as quiver's."""
    from bench.feast_serving import feast_server

    rows = []
    with feast_server(repo, f"redis://127.0.0.1:{redis.port}/1", folder / "feast", workers=workers) as (url, body, note):
        print(note, file=sys.stderr)
        wrk(url, body, 4, 2, folder, {})  # warm-up
        for c in conns:
            r = wrk(url, body, c, duration, folder, {})
            rows.append({"target": "feast", "server": "feast", "connections": c, **r})
            report("feast", "gunicorn", c, r)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--connections", default="1,16")
    ap.add_argument("--servers", default="uvicorn", help="comma-separated: uvicorn (quiver serve's default), granian")
    ap.add_argument("--targets", default="floor,quiver,feast", help="comma-separated: floor, quiver, feast")
    ap.add_argument("--workers", type=int, default=2,
                    help="server workers, quiver's and Feast's alike (2: one per core of the benchmark machine)")
    ap.add_argument("--scale", default="small")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--pin", metavar="SERVER_CPUS:CLIENT_CPUS",
                    help="run the server on these CPUs, wrk and Redis on those (e.g. 0:1), as a server host would")
    ap.add_argument("--serve-floor", metavar="SERVER:PORT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.pin:
        PIN[:] = args.pin.split(":")
    if args.serve_floor:
        from quiver.cli.serve import run_server

        server, port = args.serve_floor.split(":")
        run_server(floor_factory, server, "127.0.0.1", int(port), args.workers)
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    conns = [int(c) for c in args.connections.split(",")]
    servers = args.servers.split(",")
    targets = args.targets.split(",")
    py = sys.executable
    quiver_bin = str(Path(py).parent / "quiver")
    rows = []
    with tempfile.TemporaryDirectory(prefix="quiver-bench-serving-") as tmp:
        folder = Path(tmp)
        redis = None
        repo = None
        try:
            if "quiver" in targets or "feast" in targets:
                (folder / "redis").mkdir()
                redis = Redis(folder / "redis")
                repo = make_repo(folder, f"redis://127.0.0.1:{redis.port}/0", args.scale)
            body = json.dumps(REQUEST).encode()
            for server in servers:
                for target in targets:
                    if target == "feast":
                        if server == servers[0]:  # Feast runs on its own server, once
                            rows += run_feast(repo, redis, folder, conns, args.duration, args.workers)  # type: ignore[arg-type]
                        continue
                    port = free_port()
                    if target == "floor":
                        cmd = [py, str(Path(__file__).resolve()), "--serve-floor", f"{server}:{port}",
                               "--workers", str(args.workers)]
                    else:
                        cmd = [quiver_bin, "-r", str(repo), "serve", "--port", str(port), "--server", server,
                               "--workers", str(args.workers)]
                    proc = start_server(cmd, port)
                    try:
                        url = f"http://127.0.0.1:{port}/v1/features"
                        wrk(url, body, 4, 2, folder, {})  # warm-up
                        for c in conns:
                            cpu = cpu_seconds(proc.pid)
                            r = wrk(url, body, c, args.duration, folder, {})
                            r["cpu_us"] = (cpu_seconds(proc.pid) - cpu) / max(r["rps"] * args.duration, 1) * 1e6
                            rows.append({"target": target, "server": server, "connections": c, **r})
                            report(target, server, c, r)
                    finally:
                        stop(proc)
        finally:
            if redis:
                redis.stop()
    for server in servers:
        for c in conns:
            q = [r for r in rows if r["target"] == "quiver" and r["server"] == server and r["connections"] == c]
            f = [r for r in rows if r["target"] == "feast" and r["connections"] == c]
            if q and f and f[0]["rps"]:
                print(f"quiver ({server}) / feast at c={c}: {q[0]['rps'] / f[0]['rps']:.1f}x throughput", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
