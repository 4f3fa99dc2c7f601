"""Exactly-once effect: a worker SIGKILLed at random points, restarted, neither loses
nor double-counts (online aggregates and offline events both)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver import FeatureStore
from quiver.testing.reference import window_aggregate
from tests.fixtures.kafka import CONSUMER, KafkaBroker, topic_name
from tests.stream.conftest import make_repo

STREAM = "stream: {batch_size: 40, status_every: 2, consumer: " + orjson.dumps({**CONSUMER, "max.poll.interval.ms": 6000}).decode() + "}"


def _worker(repo: Path, log: Path) -> subprocess.Popen[bytes]:
    code = "from quiver.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, "-r", str(repo), "stream", "--idle-exit", "1"],
                            stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=repo,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})


@pytest.mark.parametrize(("online", "rounds"), [("sqlite", 3), ("redis", 2)])
def test_sigkilled_worker_neither_loses_nor_double_counts(
    request: pytest.FixtureRequest, kafka_broker: KafkaBroker, tmp_path: Path, online: str, rounds: int
) -> None:
    topic = kafka_broker.create_topic(topic_name("crash"), partitions=2)
    cfg = "{type: sqlite, path: data/online.db}"
    if online == "redis":
        cfg = f"{{type: redis, url: '{request.getfixturevalue('redis_clean_url')}'}}"
    repo = make_repo(tmp_path / "repo", topic=topic, bootstrap=kafka_broker.bootstrap, stream=STREAM, online=cfg)
    store = FeatureStore(repo)
    store.apply()
    rng = np.random.default_rng(11)
    n = 6000
    now = datetime.now(UTC)
    events = [{"tx_id": i, "user_id": int(u), "merchant_id": int(m), "amount": float(a),
               "event_timestamp": now - timedelta(seconds=float(s))}
              for i, (u, m, a, s) in enumerate(zip(rng.integers(0, 15, n), rng.integers(0, 5, n),
                                                   rng.integers(1, 100, n), rng.uniform(1, 20 * 3600, n)))]
    kafka_broker.produce(topic, [orjson.dumps({**e, "event_timestamp": e["event_timestamp"].isoformat()})
                                 for e in events], [str(e["user_id"]).encode() for e in events])

    log = tmp_path / "worker.log"
    kills = 0
    for _ in range(rounds):  # start, wait until it has written some state, SIGKILL at a random moment after
        proc = _worker(repo, log)
        before = sum(store.online.read_offsets(f"{topic}/").values())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(store.online.read_offsets(f"{topic}/").values()) > before:
                break
            time.sleep(0.02)
        time.sleep(float(rng.uniform(0, 0.4)))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(10)
    held = sum(store.online.read_offsets(f"{topic}/").values())
    assert 0 < held < n, held  # the kills came mid-way
    proc = _worker(repo, log)  # the last one runs to the end of the topic
    assert proc.wait(120) == 0, log.read_text()[-3000:]
    assert kills >= rounds - 1, "the worker finished before it could be killed; produce more events"

    view = store.get_feature_view("user_tx")
    users = list(range(16))
    at = datetime.now(UTC)
    got = store.online.read_aggregates(view, pa.table({"user_id": users}), None, at).to_pylist()
    aggs = [(a.column, a.function, a.window, a.name) for a in view.aggregations]
    want = window_aggregate([{"user_id": u, "event_timestamp": at} for u in users], events, ["user_id"], aggs)
    assert got == want  # integer amounts: every sum is exact
    files = list((repo / "data/offline/events/transactions").glob("date=*/*.parquet"))
    offline = pa.concat_tables([pq.read_table(f, columns=["tx_id"]) for f in files])
    assert offline.num_rows == n and len(set(offline.column("tx_id").to_pylist())) == n
    store.close()
