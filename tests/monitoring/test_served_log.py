"""The served-vector log: what is spooled on the request path comes back from
Parquet exactly as it was served, once, whoever compacts it."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quiver.monitoring.served_compact import compact
from quiver.monitoring.served_log import REQUEST_TIME, ServedLog, spool_dir
from quiver.store import FeatureStore

T0 = 1_750_000_000_000_000  # epoch microseconds


def served(root: Path) -> pa.Table:
    files = sorted(root.glob("date=*/*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).sort_by(REQUEST_TIME) if files else pa.table({})


def test_spooled_responses_come_back_as_served(tmp_path: Path, mon_repo: Path, mon_now: datetime) -> None:
    with FeatureStore(mon_repo) as store:
        store.apply()
        store.materialize(mon_now - timedelta(days=9), mon_now)
        log = ServedLog(tmp_path / "served", 1.0, flush_seconds=60, compact_bytes=0)
        refs_a, refs_b = ["profile:a", "profile:country", "stats:risk"], ["stats:volume"]
        want_a, want_b = [], []
        for i in range(30):
            rows = [{"user_id": i, "merchant_id": i % 20}] if i % 3 else \
                [{"user_id": i + k, "merchant_id": k} for k in range(4)]  # several rows in one response
            resp = store.get_online_features(features=refs_a, entity_rows=rows)
            log.log(store.__dict__["_online_reader"].plan(refs_a, None, False), resp, T0 + i)
            want_a.append(resp.to_arrow().add_column(0, REQUEST_TIME, pa.array([T0 + i] * len(resp), pa.int64())))
            if i % 10 == 0:
                resp = store.get_online_features(features=refs_b, entity_rows=[{"merchant_id": i % 20}])
                log.log(store.__dict__["_online_reader"].plan(refs_b, None, False), resp, T0 + i)
                want_b.append(resp.to_arrow().add_column(0, REQUEST_TIME, pa.array([T0 + i], pa.int64())))
        assert log.flush() == 33 and log.flush() == 0
        log.close()
    root = tmp_path / "served"
    assert compact(root) == sum(t.num_rows for t in want_a + want_b)
    assert not list(spool_dir(root).glob("*.rec"))
    files = sorted(root.glob("date=*/*.parquet"))
    assert len(files) == 2
    for f in files:
        got = pq.read_table(f)
        refs = got.schema.metadata[b"quiver.refs"].decode()
        want = pa.concat_tables(want_a if "profile:a" in refs else want_b)
        want = want.set_column(0, REQUEST_TIME, want[REQUEST_TIME].cast(pa.timestamp("us", tz="UTC")))
        assert got.select(want.column_names).to_pylist() == want.to_pylist()


@dataclass
class _Read:
    view: Any
    features: list[str]


@dataclass(eq=False)
class _Plan:
    """The parts of an ``OnlinePlan`` the logger reads."""

    join_keys: list[str]
    arrow_types: dict[str, pa.DataType]
    outputs: list[tuple[str, str, int, Any]]
    reads: list[_Read] = field(default_factory=list)
    odfvs: list[Any] = field(default_factory=list)


@dataclass
class _Response:
    """What ``ServedLog.log`` reads of an ``OnlineResponse``: the column names and the
    columns, join keys first."""

    values: dict[str, list[Any]]
    join_keys: list[str] = field(default_factory=lambda: ["id"])

    @property
    def feature_names(self) -> list[str]:
        return [c for c in self.values if c not in self.join_keys]

    def columns(self) -> tuple[list[Any], ...]:
        return tuple(self.values[c] for c in [*self.join_keys, *self.feature_names])


def _plan() -> _Plan:
    view = type("V", (), {"name": "events"})()
    return _Plan(["id"], {"id": pa.int64(), "seen": pa.timestamp("us", tz="UTC"), "tags": pa.list_(pa.string())},
                 [("seen", "v", 0, 0), ("tags", "v", 0, 1)], [_Read(view, ["seen", "tags"])])


def test_timestamps_lists_and_nulls_survive_the_spool(tmp_path: Path) -> None:
    log = ServedLog(tmp_path, 1.0, flush_seconds=60, compact_bytes=0)
    plan = _plan()
    seen = [datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(2025, 1, 2, 3, 4, 5), None]  # naive = UTC
    log.log(plan, _Response({"id": [1, 2, 3], "seen": seen, "tags": [["a", "b"], [], None]}), T0)
    log.log(plan, _Response({"id": [4], "seen": [None], "tags": [["c"]]}), T0 + 1)
    log.close()
    assert compact(tmp_path) == 4
    got = served(tmp_path)
    assert got["seen"].to_pylist() == [seen[0], seen[1].replace(tzinfo=UTC), None, None]
    assert got["tags"].to_pylist() == [["a", "b"], [], None, ["c"]]
    assert got["id"].to_pylist() == [1, 2, 3, 4]
    assert got[REQUEST_TIME].cast(pa.int64()).to_pylist() == [T0, T0, T0, T0 + 1]


def test_compacting_twice_never_duplicates(tmp_path: Path) -> None:
    log = ServedLog(tmp_path, 1.0, flush_seconds=60, compact_bytes=0)
    for i in range(5):
        log.log(_plan(), _Response({"id": [i], "seen": [None], "tags": [None]}), T0 + i)
    log.close()
    (spool,) = spool_dir(tmp_path).glob("*.rec")
    copy = tmp_path / "copy.rec"
    shutil.copy(spool, copy)
    assert compact(tmp_path) == 5
    shutil.copy(copy, spool)  # as if a second reader had read it before the first deleted it
    assert compact(tmp_path) == 5
    assert served(tmp_path).num_rows == 5


def test_a_full_buffer_drops_and_counts(tmp_path: Path) -> None:
    log = ServedLog(tmp_path, 1.0, flush_seconds=60, max_buffer=3, compact_bytes=0)
    for i in range(5):
        log.log(_plan(), _Response({"id": [i], "seen": [None], "tags": [None]}), T0 + i)
    assert log.dropped == 2 and log.flush() == 3
    log.close()


def test_an_unreadable_spool_file_is_set_aside(tmp_path: Path) -> None:
    spool_dir(tmp_path).mkdir(parents=True)
    (spool_dir(tmp_path) / "1-1-1.rec").write_bytes(b"\x00\x00\x00\x00garbage")
    assert compact(tmp_path) == 0
    assert [p.name for p in spool_dir(tmp_path).iterdir()] == ["1-1-1.bad"]


def test_the_writer_starts_a_compactor_process(tmp_path: Path) -> None:
    log = ServedLog(tmp_path, 1.0, flush_seconds=0.05, compact_bytes=1)
    log.log(_plan(), _Response({"id": [7], "seen": [None], "tags": [["x"]]}), T0)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("date=*/*.parquet")) and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()  # waits for the child
    assert served(tmp_path)["id"].to_pylist() == [7]
    assert not list(spool_dir(tmp_path).glob("*.rec"))


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_sample_rate_bounds(tmp_path: Path, rate: float) -> None:
    log = ServedLog(tmp_path, rate, flush_seconds=60, compact_bytes=0)
    for i in range(50):
        log.log(_plan(), _Response({"id": [i], "seen": [None], "tags": [None]}), T0 + i)
    assert log.flush() == (50 if rate else 0)
    log.close()


def test_a_forked_child_logs_its_own_responses_once(tmp_path: Path) -> None:
    import os

    log = ServedLog(tmp_path, 1.0, flush_seconds=60, compact_bytes=0)
    plan = _plan()
    for i in range(2):  # buffered in the parent when it forks: written by the parent only
        log.log(plan, _Response({"id": [i], "seen": [None], "tags": [None]}), T0 + i)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            log.log(plan, _Response({"id": [100], "seen": [None], "tags": [None]}), T0 + 100)
            log.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.close()
    compact(tmp_path)
    assert served(tmp_path)["id"].to_pylist() == [0, 1, 100]
