"""Streaming benchmark: Kafka (Tansu) -> stream worker -> Redis (and SQLite) aggregation state.

On the shared workload's medium transactions (2M events; generate them with
``../shared/bench/datagen.py --scale medium --out bench-data``), with event
times compressed into the 23 hours before now so that every event lands in
the online state of ``user_tx`` (count and sum over 10m, 1h, 1d):

* **throughput**: one worker consuming the whole topic (JSON parse, offline
  Parquet, Redis state, offsets) in batches of 10,000, in events/s, beside the
  floor of a consumer that only reads and parses the messages, and the CPU per
  event of the worker process and of redis-server (steadier than wall time on a
  shared machine); then a second worker consumes the same topic into the
  embedded store (SQLite), in its batches (``stream_batch_size``, 40,000);
* **freshness**: event-to-online latency p50/p99 while a producer writes
  steadily at ``--rate`` events/s, batching 20 ms (from the message's create
  time, its produce call, to its state being durable in Redis, as the worker
  measures it);
* **reads**: the 6 features of the heaviest user, in a process of its own (as a
  model server's): the store's ``read_aggregate_rows`` and
  ``store.get_online_features``, p50/p99 and client CPU per read, beside the
  floor of one raw Redis GET; three times: as the scheduler places the reader
  and redis-server, on separate cores, and on one core together; the three
  again with the reader polling for its reply (``online.busy_poll_us``), and with
  a near cache (``online.near_cache_keys``: repeated reads answered in process,
  kept exact by Redis's invalidations); and
  from the SQLite store, in process, beside one SQLite primary-key read. Each pass
  prints the CPU time the host took from this VM meanwhile (steal), and the reads
  the guest's halt-poll setting: the two things on a VM that a read's tail follows.

Run by hand, never in CI::

    .venv/bin/python bench/streaming.py                       # medium
    .venv/bin/python bench/streaming.py --scale small --seconds 10
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFS = '''
from datetime import timedelta
from quiver import Aggregation, Entity, FeatureView, FileSource, KafkaSource
user = Entity(name="user", join_keys=["user_id"])
tx = KafkaSource(name="transactions", topic={topic!r}, bootstrap_servers={bootstrap!r},
                 batch_source=FileSource(path="data/none/*.parquet"))
user_tx = FeatureView(name="user_tx", entities=[user], source=tx, aggregations=[
    Aggregation("amount", f, window=w) for w in (timedelta(minutes=10), timedelta(hours=1), timedelta(days=1))
    for f in ("count", "sum")])
'''
CONSUMER = {"session.timeout.ms": 2000, "heartbeat.interval.ms": 300, "fetch.queue.backoff.ms": 20,
            "group.protocol": "classic", "enable.partition.eof": True}


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def steal_ms() -> float:
    """CPU time the hypervisor took from this VM's vCPUs so far (Linux /proc/stat), in ms:
    a read pass whose p99 jumps while this grows was slowed by the host, not the code."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def halt_poll() -> str:
    """The guest's cpuidle halt-poll window (haltpoll driver), where there is one: 0 means
    an idle vCPU halts at once, and a reply to it waits for the host to wake it."""
    try:
        with open("/sys/module/haltpoll/parameters/guest_halt_poll_ns") as f:
            return f"guest_halt_poll_ns {f.read().strip()}"
    except OSError:
        return "no haltpoll cpuidle driver"


def start_redis(d: Path) -> tuple[int, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(d), "--pidfile", str(d / "redis.pid"), "--daemonize", "yes"], check=True)
    time.sleep(0.3)
    return port, f"redis://127.0.0.1:{port}/0"


def messages(path: Path, limit: int | None) -> tuple[list[bytes], list[bytes], Any]:
    import numpy as np
    import orjson
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    tx = pq.read_table(path)
    if limit:
        tx = tx.slice(0, limit)
    ts = pc.cast(tx.column("event_timestamp"), "int64").to_numpy()
    now = int(time.time() * 1e6)
    span = max(1, int(ts.max() - ts.min()))
    new = now - 60_000_000 - ((ts.max() - ts) * (23 * 3600e6 / span)).astype("int64")  # into the last 23 h
    users = tx.column("user_id").to_numpy()
    amounts = tx.column("amount").to_numpy()
    merchants = tx.column("merchant_id").to_numpy()
    vals = [orjson.dumps({"tx_id": i, "user_id": int(u), "merchant_id": int(m), "amount": float(a),
                          "event_timestamp": int(t) / 1e6})
            for i, (u, m, a, t) in enumerate(zip(users.tolist(), merchants.tolist(), amounts.tolist(), new.tolist()))]
    keys = [str(u).encode() for u in users.tolist()]
    heavy = int(np.bincount(users).argmax())
    return vals, keys, heavy


def produce(bootstrap: str, topic: str, vals: list[bytes], keys: list[bytes]) -> float:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000,
                  "queue.buffering.max.messages": 1_000_000})
    t = time.perf_counter()
    for v, k in zip(vals, keys):
        while True:
            try:
                p.produce(topic, value=v, key=k)
                break
            except BufferError:
                p.poll(0.01)
    p.flush(120)
    return len(vals) / (time.perf_counter() - t)


def floor_consume(bootstrap: str, topic: str, n: int) -> float:
    """A consumer that only reads and parses: the ceiling any worker can reach here."""
    import orjson
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"floor-{time.time()}", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, **CONSUMER})
    c.subscribe([topic])
    got, t0 = 0, None
    while got < n:
        msgs = c.consume(5000, 1.0)
        for m in msgs:
            if m.error() is None:
                if t0 is None:
                    t0 = time.perf_counter()
                orjson.loads(m.value())
                got += 1
    dt = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return got / dt


def read_bench(repo: str, heavy: int, floor: str, reads: int) -> None:
    """Latency of reading the 6 aggregate features of the heaviest user: the store's
    ``read_aggregate_rows`` and ``store.get_online_features``, beside a floor: one raw
    Redis GET (``floor`` a Redis URL), or one SQLite primary-key read (``floor`` "sqlite")."""
    from quiver import FeatureStore

    store = FeatureStore(repo)
    view = store.get_feature_view("user_tx")
    feats = view.feature_names
    refs = [f"user_tx:{f}" for f in feats]
    if floor == "sqlite":
        con = sqlite3.connect(store.online.path)
        key = con.execute("SELECT view, entity, key FROM __agg_packed LIMIT 1").fetchone()
        floor_name, floor_read = "floor: SQLite key read", lambda: con.execute(
            "SELECT data FROM __agg_packed WHERE view = ? AND entity = ? AND key = ?", key).fetchone()
    else:
        import redis as redis_py

        r = redis_py.Redis.from_url(floor)
        r.set("floor-key", b"x" * 100)
        floor_name, floor_read = "floor: raw Redis GET", lambda: r.get("floor-key")
    runs = {
        "read_aggregate_rows": lambda: store.online.read_aggregate_rows(view, [(heavy,)], feats, time.time_ns() // 1000),
        "get_online_features": lambda: store.get_online_features(refs, entity_rows=[{"user_id": heavy}]),
        floor_name: floor_read,
    }
    for fn in runs.values():
        for _ in range(200):
            fn()
    row = store.get_online_features(refs, entity_rows=[{"user_id": heavy}]).to_dict()
    print(f"reads, heavy user {heavy} ({row['amount_count_1d'][0]:,} events in 1d), 6 features, {reads:,} each:")
    for name, fn in runs.items():
        lat = []
        cpu0, steal0 = time.process_time(), steal_ms()
        for _ in range(reads):
            t = time.perf_counter()
            fn()
            lat.append((time.perf_counter() - t) * 1e3)
        cpu = (time.process_time() - cpu0) / reads * 1e3
        print(f"  {name:<22} p50 {statistics.median(lat):.3f} ms  p99 {pct(lat, 99):.3f} ms  client CPU {cpu:.3f} ms"
              f"  (steal {steal_ms() - steal0:.0f} ms)")
    near = getattr(store.online, "_near", None)
    if near is not None:  # keys answered from memory: all but the raw buckets of a new instant's edges
        print(f"  near cache: {near.hits:,} keys from memory, {near.misses:,} from Redis")
    store.close()


def bulk(store: Any, repo: Path, group: str, batch_size: int | None = None) -> tuple[int, float, float]:
    """One worker consuming the whole topic into ``store``'s online store, in batches of
    ``batch_size`` (default: the store's ``stream_batch_size``): (events, events/s from its
    first batch to its last, CPU seconds of this process)."""
    from quiver.ingest.worker import StreamWorker

    opts = {"consumer": CONSUMER, "group": group, **({"batch_size": batch_size} if batch_size else {})}
    worker = StreamWorker([store.get_feature_view("user_tx")], store.online, repo / "data/offline", options=opts)
    first: list[float] = []
    last: list[float] = [0.0]
    step = worker._step

    def timed(*a: Any) -> int:
        t = time.perf_counter()
        got = step(*a)
        if got:
            if not first:
                first.append(t)
            last[0] = time.perf_counter()
        return got

    worker._step = timed  # type: ignore[method-assign]
    cpu0 = time.process_time()
    worker.run(idle_exit=1.0)
    cpu = time.process_time() - cpu0
    events = worker.status()["sources"]["transactions"]["events"]
    return events, events / (last[0] - first[0]), cpu  # from the first batch to the last (group join excluded)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", default="medium")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N transactions")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rate", type=int, default=10_000, help="events/s of the steady producer")
    ap.add_argument("--seconds", type=int, default=20, help="length of the steady phase")
    ap.add_argument("--reads", type=int, default=5000)
    ap.add_argument("--busy-poll-us", type=int, default=300, help="online.busy_poll_us of the second Redis read pass")
    ap.add_argument("--near-cache-keys", type=int, default=100_000, help="online.near_cache_keys of the third")
    ap.add_argument("--read-bench", nargs=3, metavar=("REPO", "USER", "FLOOR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read_bench:  # the read phase, in a process of its own
        repo_path, user, floor = args.read_bench
        return read_bench(repo_path, int(user), floor, args.reads)
    data = ROOT / "bench-data" / args.scale / "transactions.parquet"
    if not data.exists():
        sys.exit(f"no {data}: run  python ../shared/bench/datagen.py --scale {args.scale} --out bench-data")

    from quiver import FeatureStore
    from tests.fixtures.kafka import KafkaBroker

    tmp = Path(tempfile.mkdtemp(prefix="quiver-bench-stream-"))
    broker = KafkaBroker(tmp)
    _, redis_url = start_redis(tmp)
    try:
        topic = broker.create_topic("tx-bulk", args.partitions)
        repo = tmp / "repo"
        repo.mkdir()
        (repo / "quiver.yaml").write_text(f"project: bench\nregistry: data/registry.db\n"
                                         f"online: {{type: redis, url: '{redis_url}'}}\n")
        (repo / "features.py").write_text(DEFS.format(topic=topic, bootstrap=broker.bootstrap))
        store = FeatureStore(repo)
        store.apply()
        print(f"preparing {data} ...", flush=True)
        vals, keys, heavy = messages(data, args.limit)
        n = len(vals)
        rate = produce(broker.bootstrap, topic, vals, keys)
        print(f"produced {n:,} messages at {rate:,.0f}/s")
        floor = floor_consume(broker.bootstrap, topic, n)
        print(f"floor: read + parse only         {floor:>10,.0f} events/s")

        import redis as redis_py

        def redis_cpu() -> float:
            info = redis_py.Redis.from_url(redis_url).info("cpu")
            return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

        rcpu0 = redis_cpu()
        events, eps, cpu = bulk(store, repo, "bench", 10_000)
        rcpu = redis_cpu() - rcpu0
        print(f"worker: parse + offline + Redis  {eps:>10,.0f} events/s ({events:,} events, 1 worker)")
        print(f"  CPU per event: worker process {cpu / events * 1e6:.2f} us (all its threads), "
              f"redis-server {rcpu / events * 1e6:.2f} us")
        # the same topic into the embedded store (SQLite, in process), for its reads below
        repo_lite = tmp / "repo-sqlite"
        repo_lite.mkdir()
        (repo_lite / "quiver.yaml").write_text("project: bench\nregistry: data/registry.db\n"
                                              "online: {type: sqlite, path: data/online.db}\n")
        (repo_lite / "features.py").write_text(DEFS.format(topic=topic, bootstrap=broker.bootstrap))
        lite = FeatureStore(repo_lite)
        lite.apply()
        events, eps, cpu = bulk(lite, repo_lite, "bench-sqlite")
        lite.close()
        print(f"worker: parse + offline + SQLite {eps:>10,.0f} events/s ({events:,} events, 1 worker; "
              f"CPU per event {cpu / events * 1e6:.2f} us)")

        # -- freshness at a steady rate --------------------------------------------------
        topic2 = broker.create_topic("tx-steady", args.partitions)
        (repo / "features.py").write_text(DEFS.format(topic=topic2, bootstrap=broker.bootstrap))
        store.apply()
        proc = subprocess.Popen([sys.executable, "-c", "from quiver.cli import main; main()", "-r", str(repo),
                                 "stream", "--group", "bench-steady", "--batch-size", "2000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from confluent_kafka import Producer

        # keyed messages spread over every partition: with a 2 ms linger each becomes its own tiny
        # produce request, and Tansu spends a whole core on them (its CPU, not the worker, then sets
        # the latency); 20 ms batches them, and the figure includes it (create time = produce call)
        p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
        for i in range(args.partitions * 4):  # probes: start timing once the worker consumes
            p.produce(topic2, value=vals[i], key=keys[i])
        p.flush(10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(store.online.read_offsets(f"{topic2}/").values()) == 0:
            time.sleep(0.05)
        time.sleep(1.0)
        t0 = time.perf_counter()
        sent = 0
        stop = t0 + args.seconds
        while time.perf_counter() < stop:
            due = int((time.perf_counter() - t0) * args.rate)
            while sent < due:
                i = sent % n
                p.produce(topic2, value=vals[i], key=keys[i])
                sent += 1
            p.poll(0)
            time.sleep(0.001)
        p.flush(30)
        time.sleep(4)  # let the worker catch up and publish its status
        proc.terminate()
        proc.wait(30)
        store.registry.refresh()
        status = store.stream_status()["workers"]
        lat = [w["sources"]["transactions"] for w in status.values() if w.get("group") == "bench-steady"]
        s = max(lat, key=lambda x: x["events"]) if lat else {}
        print(f"freshness at {args.rate:,}/s: event-to-online p50 {s.get('latency_ms_p50', float('nan')):.0f} ms, "
              f"p99 {s.get('latency_ms_p99', float('nan')):.0f} ms ({s.get('events', 0):,} events)")

        # -- reads, in a process of their own (as a model server's): no producer, broker or
        # 2M produced messages in its heap, nothing else holding the GIL ---------------------
        del p
        broker.stop()
        store.close()
        os.sync()  # the earlier phases' files (Parquet, the broker's log) written back before reads are timed
        time.sleep(2)
        print(f"reads ({halt_poll()}; steal: CPU time the host took from this VM during a pass)")
        print("the embedded store (SQLite), in process:")
        subprocess.run([sys.executable, __file__, "--read-bench", str(repo_lite), str(heavy), "sqlite",
                        "--reads", str(args.reads)], check=True)
        cmd = [sys.executable, __file__, "--read-bench", str(repo), str(heavy), redis_url, "--reads", str(args.reads)]
        cpus = sorted(os.sched_getaffinity(0))
        rpid = int((tmp / "redis.pid").read_text())
        yaml = (repo / "quiver.yaml").read_text()
        modes = [("blocking for the reply", ""),
                 (f"polling {args.busy_poll_us} us for the reply", f" busy_poll_us: {args.busy_poll_us},"),
                 (f"near cache of {args.near_cache_keys:,} keys", f" near_cache_keys: {args.near_cache_keys},")]
        for how, option in modes:
            # Redis as the scheduler places the reader and redis-server, then on separate cores and
            # on one core together: where a wake-up of the other core costs (an idle vCPU that halts
            # at once), one core shows the read without it; then all again with the reader polling
            # for its reply (online.busy_poll_us), which keeps its core awake, and with a near
            # cache (online.near_cache_keys), which answers a repeated read without Redis
            (repo / "quiver.yaml").write_text(yaml.replace("type: redis,", f"type: redis,{option}"))
            places = [("placed by the scheduler", cpus, cpus)]
            if len(cpus) >= 2:
                places += [("on separate cores", [cpus[0]], [cpus[1]]), ("on one core", [cpus[1]], [cpus[1]])]
            for label, reader, server in places:
                os.sched_setaffinity(rpid, set(server))
                print(f"Redis, {how}, the reader and redis-server {label}:")
                subprocess.run(cmd, check=True, preexec_fn=lambda c=reader: os.sched_setaffinity(0, set(c)))
    finally:
        broker.stop()
        pid = (tmp / "redis.pid").read_text().strip() if (tmp / "redis.pid").exists() else ""
        if pid:
            subprocess.run(["kill", pid], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
