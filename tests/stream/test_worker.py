"""The worker's freshness reporting: Prometheus metrics, ``stream_status`` and the
dead-letter store, after consuming a small topic with some bad messages."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

import orjson
import pyarrow.parquet as pq

from quiver import FeatureStore
from quiver.ingest.worker import StreamWorker
from tests.fixtures.kafka import CONSUMER, KafkaBroker, topic_name
from tests.stream.conftest import make_repo


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_status_and_dead_letters(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    topic = kafka_broker.create_topic(topic_name("w"), partitions=2)
    repo = make_repo(tmp_path / "repo", topic=topic, bootstrap=kafka_broker.bootstrap)
    store = FeatureStore(repo)
    store.apply()
    now = time.time()
    good = [orjson.dumps({"user_id": i % 3, "amount": 1.0 + i, "merchant_id": i, "event_timestamp": now - i})
            for i in range(50)]
    bad = [b"oops", orjson.dumps({"user_id": 1, "amount": 2.0, "event_timestamp": "not a time"})]
    kafka_broker.produce(topic, good[:25] + bad + good[25:], [b"k"] * 52)  # one partition: offsets 25 and 26
    port = _port()
    worker = StreamWorker([store.get_feature_view("user_tx")], store.online, repo / "data/offline",
                          registry=store.registry,
                          options={"consumer": CONSUMER, "metrics_port": port, "keep_metrics": True})
    result = worker.run(idle_exit=0.5, max_seconds=60)
    src = result["sources"]["transactions"]
    assert src["events"] == 50 and src["dead_letters"] == 2 and src["latency_ms_p50"] is not None
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    worker.metrics.server.shutdown()
    assert 'quiver_stream_events_total{source="transactions"} 50.0' in body
    assert 'quiver_stream_dead_letters_total{source="transactions"} 2.0' in body
    assert "quiver_stream_consumer_lag{" in body and "quiver_stream_event_to_online_seconds_bucket" in body
    status = store.stream_status()
    (report,) = status["workers"].values()
    assert report["sources"]["transactions"]["events"] == 50 and status["dead_letters"] == 2
    files = list((repo / "data/offline/dead_letters/transactions").glob("*.parquet"))
    dead = sorted(pq.read_table(files[0]).to_pylist(), key=lambda r: r["offset"])
    assert [(d["topic"], d["offset"]) for d in dead] == [(topic, 25), (topic, 26)]
    assert dead[0]["reason"].startswith("not JSON") and "timestamp" in dead[1]["reason"]
    assert dead[0]["payload"] == b"oops"
    # the batch under a backlog is the online store's (SQLite: big, its readers never wait), or the option's
    assert worker.batch_size == store.online.stream_batch_size == 40_000
    again = StreamWorker([store.get_feature_view("user_tx")], store.online, repo / "data/offline",
                         options={"batch_size": 700})
    assert again.batch_size == 700
    store.close()


def test_files_of_a_killed_run_past_the_state_are_replaced_not_kept(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    """A worker killed after writing event files whose state never became durable reads
    those offsets again, in batches whose edges need not match: the old files go."""
    topic = kafka_broker.create_topic(topic_name("r"), partitions=1)
    repo = make_repo(tmp_path / "repo", topic=topic, bootstrap=kafka_broker.bootstrap)
    store = FeatureStore(repo)
    store.apply()
    now = time.time()
    kafka_broker.produce(topic, [orjson.dumps({"user_id": i % 3, "amount": 1.0 + i, "merchant_id": i,
                                               "event_timestamp": now - i}) for i in range(40)], [b"k"] * 40)
    offline = repo / "data/offline"
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    stale = offline / f"events/transactions/date={day}"
    stale.mkdir(parents=True)
    for first in (15, 30):  # what a killed run with other batch edges left: offsets 15.. and 30..
        pq.write_table(pq.read_table(_one_event_file(now)), stale / f"{topic}-0-{first:020d}.parquet")
    ghost = offline / f"events/transactions/date={day}/other-0-{30:020d}.parquet"  # another topic: kept
    pq.write_table(pq.read_table(_one_event_file(now)), ghost)
    worker = StreamWorker([store.get_feature_view("user_tx")], store.online, offline,
                          options={"consumer": CONSUMER, "batch_size": 8})
    worker.run(idle_exit=0.5, max_seconds=60)
    files = sorted(stale.glob(f"{topic}-0-*.parquet"))
    assert sum(pq.read_metadata(f).num_rows for f in files) == 40  # each event once, none of the stale rows
    assert ghost.exists()
    store.close()


def _one_event_file(now: float) -> Path:
    import tempfile

    import pyarrow as pa

    f = Path(tempfile.mkdtemp()) / "e.parquet"
    pq.write_table(pa.table({"user_id": [1], "amount": [1.0], "merchant_id": [1]}), f)
    return f


def test_online_rebuild_is_refused_beside_a_live_worker(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    """``backfill --online`` deletes and rebuilds the state: a worker writing meanwhile would
    count events twice or lose them. While one consumes the view's source the rebuild is
    refused with its name; once it stopped (its last status says so), or with ``force``,
    the rebuild runs."""
    import threading
    from datetime import UTC, datetime, timedelta

    import pytest

    from quiver.errors import InputError

    topic = kafka_broker.create_topic(topic_name("live"), partitions=1)
    repo = make_repo(tmp_path / "repo", topic=topic, bootstrap=kafka_broker.bootstrap)
    store = FeatureStore(repo)
    store.apply()
    worker = StreamWorker([store.get_feature_view("user_tx")], store.online, repo / "data/offline",
                          registry=store.registry, options={"consumer": CONSUMER, "status_every": 0.1})
    thread = threading.Thread(target=worker.run, kwargs={"max_seconds": 120})
    thread.start()
    try:
        for _ in range(600):  # until its first status is published (bounded)
            if any(w.get("running") for w in store.stream_status()["workers"].values()):
                break
            time.sleep(0.05)
        start, end = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC)
        with pytest.raises(InputError, match=f"stream worker.*{worker.worker_id}.*--force"):
            store.backfill("user_tx", start, end, online=True)
        assert store.backfill("user_clicks", start, end, online=True)["chunks"] == 1  # another source's view
        assert store.backfill("user_tx", start, end, online=True, force=True)["chunks"] == 1
    finally:
        worker.stop()
        thread.join(60)
    assert not store.stream_status()["workers"][worker.worker_id]["running"]
    done = store.backfill("user_tx", start, end, online=True, chunk="30m")
    assert done["chunks_done"] == done["chunks"] > 1
    store.close()
