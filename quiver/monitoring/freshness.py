"""Freshness: how old the newest value of each view is, online and offline,
against its ``freshness_sla``; for stream views also the consumer lag and the
event-to-online latency the stream worker reports.

A view without an SLA is reported (``info``), not checked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quiver.definitions import FeatureView
from quiver.monitoring.results import FAILING, INFO, OK, CheckResult
from quiver.monitoring.tables import ViewData

__all__ = ["freshness_checks", "newest_offline", "newest_online"]


def _aware(v: Any) -> datetime | None:
    if v is None:
        return None
    if isinstance(v, int | float):
        from datetime import UTC

        return datetime.fromtimestamp(v / 1e6 if v > 1e11 else v, UTC)
    if isinstance(v, str):
        v = datetime.fromisoformat(v)
    if isinstance(v, datetime):
        from datetime import UTC

        return v.replace(tzinfo=UTC) if v.tzinfo is None else v
    return None


def newest_offline(con: Any, data: ViewData, now: datetime) -> datetime | None:
    """The newest event time in the view's offline data (not after ``now``)."""
    row = con.execute(f"SELECT max(event_timestamp) FROM {data.relation} WHERE event_timestamp <= ?", [now]).fetchone()
    return _aware(row[0]) if row else None


def newest_online(registry: Any, view: FeatureView) -> datetime | None:
    """The event time up to which the online store holds the view: the
    materialization watermark (registry namespace ``watermark``, its ``event``)
    and the stream worker's (None when nothing was written)."""
    found: list[datetime] = []
    for ns in ("watermark", "stream.watermark"):
        try:
            v = registry.get_value(ns, view.name)
        except Exception:  # a namespace nobody writes: nothing to learn
            continue
        if isinstance(v, dict):
            for key in ("event", "newest_event"):
                t = _aware(v.get(key))
                if t is not None:
                    found.append(t)
                    break
        elif v is not None:
            t = _aware(v)
            if t is not None:
                found.append(t)
    return max(found) if found else None


def _age_check(view: FeatureView, check: str, newest: datetime | None, now: datetime, where: str) -> CheckResult:
    sla = view.freshness_sla.total_seconds() if view.freshness_sla else None
    if newest is None:
        streamed = view.source.batch is not view.source  # fed by a stream worker or pushes
        status = FAILING if sla is not None and not (streamed and where == "online") else INFO
        return CheckResult(now, view.name, "", check, None, sla, status, f"nothing written to the {where} store yet")
    age = max(0.0, (now - newest).total_seconds())
    if sla is None:
        return CheckResult(now, view.name, "", check, age, None, INFO,
                           f"newest {where} value is {_fmt(age)} old (no freshness_sla: reported, not checked)",
                           {"newest": newest.isoformat()})
    status = FAILING if age > sla else OK
    return CheckResult(now, view.name, "", check, age, sla, status,
                       f"newest {where} value is {_fmt(age)} old, SLA {_fmt(sla)}", {"newest": newest.isoformat()})


def _fmt(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def freshness_checks(
    view: FeatureView,
    now: datetime,
    *,
    offline_newest: datetime | None,
    online_newest: datetime | None,
    stream: dict[str, Any] | None = None,
    thresholds: dict[str, float] | None = None,
) -> list[CheckResult]:
    out = [_age_check(view, "freshness_offline", offline_newest, now, "offline")]
    if view.online:
        out.append(_age_check(view, "freshness_online", online_newest, now, "online"))
    th = thresholds or {}
    for key, check, unit in (("lag", "consumer_lag", "messages"), ("latency_seconds", "stream_latency", "s")):
        if stream and stream.get(key) is not None:
            value = float(stream[key])
            limit = th.get(check)
            if limit is None and check == "stream_latency" and view.freshness_sla:
                limit = view.freshness_sla.total_seconds()
            status = INFO if limit is None else (FAILING if value > limit else OK)
            out.append(CheckResult(now, view.name, "", check, value, limit, status, f"{value:g} {unit}"))
    return out


def stream_status(registry: Any, view: FeatureView) -> dict[str, Any] | None:
    """What the stream workers report for the view's source (registry namespace
    ``stream_status``): newest event, total consumer lag, p99 event-to-online latency."""
    name = view.source.name
    found = [w["sources"][name] for w in (registry.list_values("stream_status") or {}).values()
             if isinstance(w, dict) and name in (w.get("sources") or {})]
    if not found:
        return None
    newest = max((t for t in (_aware(f.get("last_event")) for f in found) if t is not None), default=None)
    lats = [f["latency_ms_p99"] for f in found if f.get("latency_ms_p99") is not None]
    return {"newest": newest, "lag": sum(sum((f.get("lag") or {}).values()) for f in found),
            "latency_seconds": max(lats) / 1000 if lats else None}
