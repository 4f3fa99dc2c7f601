"""Alerts: one per ok <-> failing transition, to a real webhook on loopback;
a webhook that is down never holds up a check run."""

from __future__ import annotations

import socket
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quiver.store import FeatureStore
from tests.monitoring.conftest import profile_table, write_repo


def _break_and_fix(repo: Path, now: datetime, broken: bool) -> None:
    t = profile_table(now)
    pq.write_table(t.drop_columns(["c"]) if broken else t, repo / "data" / "profile.parquet")


def test_one_alert_per_transition(tmp_path: Path, mon_now: datetime, webhook_receiver) -> None:
    repo = write_repo(tmp_path / "repo", mon_now, webhooks=[webhook_receiver.url])
    with FeatureStore(repo) as s:
        s.apply()
        s.materialize(mon_now - timedelta(days=9), mon_now)
        assert s.monitor(now=mon_now).alerts == []  # clean: nothing
        _break_and_fix(repo, mon_now, broken=True)
        run = s.monitor(now=mon_now)
        assert [(a["view"], a["feature"], a["check"], a["state"]) for a in run.alerts] == [
            ("profile", "c", "schema", "firing")]
        assert s.monitor(now=mon_now).alerts == []  # still failing: no new alert
        assert s.monitor(now=mon_now + timedelta(seconds=1)).alerts == []
        _break_and_fix(repo, mon_now, broken=False)
        run = s.monitor(now=mon_now + timedelta(seconds=2))
        assert [(a["check"], a["state"]) for a in run.alerts] == [("schema", "resolved")]
        assert s.monitor(now=mon_now + timedelta(seconds=3)).alerts == []
        s.monitoring.notifier.flush(10)
        got = webhook_receiver.wait_for(2)
        assert [(a["check"], a["state"], a["project"]) for a in got] == [
            ("schema", "firing", "montest"), ("schema", "resolved", "montest")]
        assert "missing" in got[0]["message"]
        stored = s.monitor_history("profile:c")["alerts"]
        assert [a["state"] for a in stored] == ["firing", "resolved"]
        s.monitoring.close()
    assert len(webhook_receiver.received) == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nothing listens there


def test_webhook_down_does_not_block_the_run(tmp_path: Path, mon_now: datetime) -> None:
    repo = write_repo(tmp_path / "repo", mon_now, webhooks=[f"http://127.0.0.1:{_closed_port()}/hook"])
    with FeatureStore(repo) as s:
        s.apply()
        s.materialize(mon_now - timedelta(days=9), mon_now)
        _break_and_fix(repo, mon_now, broken=True)
        run = s.monitor(now=mon_now)
        # the run returned with its alert stored while the delivery still waits for a retry
        assert [a["check"] for a in run.alerts] == ["schema"]
        assert s.monitor_history("profile:c")["alerts"][0]["state"] == "firing"
        notifier = s.monitoring.notifier
        assert notifier.delivered == 0
        assert notifier.flush(0.05) is False  # still pending: backing off, not blocking anyone
        notifier.close(0.05)


def test_metrics_and_report(tmp_path: Path, mon_now: datetime) -> None:
    repo = write_repo(tmp_path / "repo", mon_now)
    with FeatureStore(repo) as s:
        s.apply()
        s.materialize(mon_now - timedelta(days=9), mon_now)
        s.monitor(now=mon_now - timedelta(hours=2))
        t = profile_table(mon_now)
        last = pc.greater_equal(t["event_timestamp"], pa.scalar(mon_now - timedelta(days=1), t["event_timestamp"].type))
        pq.write_table(t.set_column(3, "a", pc.if_else(last, pc.add(t["a"], 30.0), t["a"])),
                       repo / "data" / "profile.parquet")
        s.monitor(now=mon_now)
        text = s.monitor_metrics()
        assert 'quiver_monitor_check_failing{view="profile",feature="a",check="psi"} 1' in text
        assert 'quiver_monitor_check_failing{view="stats",feature="risk",check="psi"} 0' in text
        assert 'quiver_monitor_check_threshold{view="stats",feature="risk",check="psi"} 0.25' in text
        assert "# TYPE quiver_monitor_check_value gauge" in text
        # the same gauges on the stream worker's prometheus registry and on the server's /metrics
        from prometheus_client import CollectorRegistry, generate_latest
        from starlette.testclient import TestClient

        from quiver.monitoring.metrics import CheckCollector
        from quiver.serving.app import create_app

        prom = CollectorRegistry()
        prom.register(CheckCollector(s.registry))
        assert 'quiver_monitor_check_failing{check="psi",feature="a",view="profile"} 1.0' in generate_latest(prom).decode()
        with TestClient(create_app(s)) as client:
            served = client.get("/metrics").text
        assert 'quiver_monitor_check_failing{view="profile",feature="a",check="psi"} 1' in served
        assert "quiver_http_requests_total" in served
        out = s.monitor_report(tmp_path / "report.html")
        page = out.read_text()
        assert page.count("<svg") >= 4 and "<h3>a (KS" in page and "PSI 4" in page
        assert "http://" not in page and "https://" not in page and "<script" not in page
        hist = s.monitor_history("profile:a")
        assert [h["status"] for h in hist["checks"]["psi"]] == ["ok", "failing"]
        assert hist["profile"]["current"]["count"] == 300
