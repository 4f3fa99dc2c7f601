"""One monitor run: for each view, read its data once, run every check, store
the results, and raise one alert per ok <-> failing transition.

Windows: the current window is ``[now - window, now)`` (``monitoring.window``
in ``quiver.yaml`` or ``window`` seconds in a view's ``monitoring=``, default
one day). The reference is, in order: the one pinned for the view
(``pin_reference``: a time window or a saved dataset), ``monitoring.reference``
in ``quiver.yaml`` (``{start, end}`` or ``{dataset}``), else the
``reference_window`` (default 7 days) just before the current window.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from quiver.definitions import FeatureView
from quiver.errors import InputError, NotFoundError, closest
from quiver.monitoring import drift, freshness, quality
from quiver.monitoring.alerts import WebhookNotifier, make_alerts, parse_webhooks
from quiver.monitoring.results import FAILING, INFO, OK, CheckResult, ResultStore, now_utc
from quiver.monitoring.tables import ViewData, connection, view_data
from quiver.timeutil import parse_duration, to_utc

__all__ = ["Monitor", "MonitorRun", "NS_REFERENCE"]

log = logging.getLogger("quiver.monitoring")
NS_REFERENCE, NS_REFPROFILE = "monitor.reference", "monitor.refprofile"


@dataclass
class MonitorRun:
    """What one run found: every check result and the alerts it raised."""

    time: datetime
    results: list[CheckResult]
    alerts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failing

    @property
    def failing(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAILING]

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "ok": self.ok, "failing": len(self.failing),
                "results": [r.to_dict() for r in self.results], "alerts": self.alerts}


class Monitor:
    """Runs checks over a registry and an offline engine (handed in by the facade)."""

    def __init__(
        self,
        config: Any,
        registry: Any,
        offline: Any,
        *,
        load_dataset: Callable[[str], Any] | None = None,
        stream_stats: Callable[[FeatureView], dict[str, Any] | None] | None = None,
        notifier: WebhookNotifier | None = None,
    ) -> None:
        self.config = config
        self.settings: dict[str, Any] = dict(config.monitoring or {})
        self.registry, self.offline = registry, offline
        self.results = ResultStore(registry, int(self.settings.get("history", 500)))
        self.load_dataset = load_dataset
        self.stream_stats = stream_stats
        self.notifier = notifier or WebhookNotifier(parse_webhooks(self.settings))

    # -- windows -------------------------------------------------------------------

    def window(self, view: FeatureView) -> timedelta:
        w = view.monitoring.get("window")
        if isinstance(w, int | float):
            return timedelta(seconds=float(w))
        return parse_duration(self.settings.get("window", "1d"), "monitoring.window")

    def reference_spec(self, view: FeatureView, now: datetime, override: dict[str, Any] | None = None) -> dict[str, Any]:
        spec = override or self.registry.get_value(NS_REFERENCE, view.name) or self.settings.get("reference")
        if spec:
            if "dataset" in spec:
                return {"dataset": str(spec["dataset"])}
            return {"start": to_utc(spec["start"], "reference start").isoformat(),
                    "end": to_utc(spec["end"], "reference end").isoformat()}
        end = now - self.window(view)
        span = parse_duration(self.settings.get("reference_window", "7d"), "monitoring.reference_window")
        return {"start": (end - span).isoformat(), "end": end.isoformat()}

    def pin_reference(self, view: str, *, start: Any = None, end: Any = None, dataset: str | None = None) -> dict[str, Any]:
        """Pin the reference of ``view`` to a time window or a saved dataset (None unpins)."""
        self._view(view)
        if dataset:
            spec: dict[str, Any] | None = {"dataset": dataset}
        elif start is not None and end is not None:
            spec = {"start": to_utc(start, "start").isoformat(), "end": to_utc(end, "end").isoformat()}
        elif start is None and end is None:
            spec = None
        else:
            raise InputError("pin a reference with both start and end, or with dataset=")
        self.registry.set_value(NS_REFERENCE, view, spec)
        return spec or {}

    # -- the run ---------------------------------------------------------------------

    def _view(self, name: str) -> FeatureView:
        try:
            return self.registry.get("feature_view", name)  # type: ignore[no-any-return]
        except NotFoundError:
            known = self.registry.names("feature_view")
            raise NotFoundError(f"unknown feature view {name!r}.{closest(name, known)}") from None

    def run(
        self,
        views: Sequence[str] | None = None,
        *,
        now: Any = None,
        reference: dict[str, Any] | None = None,
        record: bool = True,
    ) -> MonitorRun:
        now = to_utc(now, "now") if now is not None else now_utc()
        fvs = [self._view(v) for v in views] if views else self.registry.list("feature_view")
        results: list[CheckResult] = []
        for fv in fvs:
            results += self.check_view(fv, now, reference)
        run = MonitorRun(now, results)
        if record:
            transitions = self.results.record(results)
            run.alerts = make_alerts(self.config.project, transitions)
            if run.alerts:
                for a in run.alerts:
                    (log.warning if a["state"] == "firing" else log.info)("alert: %s", a["message"])
                self.results.add_alerts(run.alerts)
                self.notifier.send(run.alerts)
        return run

    def check_view(self, fv: FeatureView, now: datetime, reference: dict[str, Any] | None = None) -> list[CheckResult]:
        try:
            data = view_data(self.offline, fv)
        except InputError as e:
            online = freshness.newest_online(self.registry, fv)
            return [CheckResult(now, fv.name, "", "data", None, None, FAILING if fv.freshness_sla else INFO, str(e)),
                    *freshness.freshness_checks(fv, now, offline_newest=None, online_newest=online)[1:]]
        out = quality.schema_checks(data, now)
        con = connection(self.offline)
        stream = self.stream_stats(fv) if self.stream_stats else freshness.stream_status(self.registry, fv)
        online = freshness.newest_online(self.registry, fv)
        if stream and stream.get("newest") and (online is None or stream["newest"] > online):
            online = stream["newest"]
        try:
            out += freshness.freshness_checks(
                fv, now,
                offline_newest=freshness.newest_offline(con, data, now),
                online_newest=online,
                stream=stream,
                thresholds=quality.thresholds(self.settings, fv),
            )
            ref_spec = self.reference_spec(fv, now, reference)
            ref = self._reference_profiles(con, data, ref_spec)
            start = now - self.window(fv)
            cur = drift.profile(con, data, start, now, ref)
        finally:
            con.close()
        saved: dict[str, Any] = {}
        for name, p in cur.items():
            th = quality.thresholds(self.settings, fv, name)
            r = ref.get(name)
            out.append(quality.null_rate_check(fv.name, name, p, r, th, now))
            out += self._drift_checks(fv.name, name, p, r, th, now)
            saved[name] = {"current": p, "reference": r, "window": [start.isoformat(), now.isoformat()],
                           "reference_spec": ref_spec}
        self.results.save_profiles(fv.name, saved)
        return out

    def _drift_checks(
        self, view: str, name: str, cur: dict[str, Any], ref: dict[str, Any] | None, th: dict[str, float], now: datetime
    ) -> list[CheckResult]:
        stats = {"count": cur["count"], "null_rate": cur["null_rate"]}
        if cur["kind"] == "number":
            stats.update(mean=cur.get("mean"), std=cur.get("std"), p50=(cur.get("quantiles") or {}).get("p50"))
        names = ("psi", "ks") if cur["kind"] == "number" else ("psi", "js")
        if ref is None:
            return [CheckResult(now, view, name, c, None, th[c], INFO, "no reference data", stats) for c in names]
        n_cur, n_ref = cur["count"] - cur["nulls"], ref["count"] - ref["nulls"]
        values = drift.compare(ref, cur)
        out = []
        for c in names:
            v = values.get(c)
            if v is None or min(n_cur, n_ref) < th["min_count"]:
                out.append(CheckResult(now, view, name, c, v, th[c], INFO,
                                       f"too few values to check drift ({n_cur} now, {n_ref} in the reference; "
                                       f"min_count {th['min_count']:g})", stats))
                continue
            status = FAILING if v > th[c] else OK
            out.append(CheckResult(now, view, name, c, v, th[c], status,
                                   f"{c.upper()} {v:.3f} against the reference (threshold {th[c]:g})", stats))
        return out

    def _reference_profiles(self, con: Any, data: ViewData, spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The reference's profiles, cached in the registry while its inputs are unchanged."""
        key = hashlib.sha256(json.dumps([spec, data.view.version_hash, _stat(data.files), sorted(data.columns)],
                                        default=str).encode()).hexdigest()[:24]
        cached = self.registry.get_value(NS_REFPROFILE, data.view.name)
        if cached and cached.get("key") == key:
            return dict(cached["profiles"])
        if "dataset" in spec:
            profiles = self._dataset_profiles(con, data, spec["dataset"])
        else:
            profiles = drift.profile(con, data, datetime.fromisoformat(spec["start"]), datetime.fromisoformat(spec["end"]))
        profiles = {n: p for n, p in profiles.items() if p["count"] > 0}
        self.registry.set_value(NS_REFPROFILE, data.view.name, {"key": key, "spec": spec, "profiles": profiles})
        return profiles

    def _dataset_profiles(self, con: Any, data: ViewData, name: str) -> dict[str, dict[str, Any]]:
        if self.load_dataset is None:
            raise InputError(f"reference dataset {name!r}: saved datasets are not available here")
        table = self.load_dataset(name)
        cols = set(table.column_names)
        rename = {}
        for n in data.columns:
            for c in (n, f"{data.view.name}__{n}"):
                if c in cols:
                    rename[n] = c
                    break
        if not rename:
            raise InputError(f"saved dataset {name!r} has none of view {data.view.name!r}'s features")
        con.register("__quiver_reference", table)
        try:
            sel = ", ".join(f'"{c}" AS "{n}"' for n, c in rename.items())
            sub = ViewData(data.view, f"(SELECT {sel} FROM __quiver_reference)", "", {n: n for n in rename},
                           {n: data.types[n] for n in rename}, data.expected, [], [])
            return drift.profile(con, sub, None, None)
        finally:
            con.unregister("__quiver_reference")

    def close(self, timeout: float = 5.0) -> None:
        self.notifier.close(timeout)


def _stat(files: list[str]) -> list[Any]:
    import os

    out = []
    for f in files:
        try:
            st = os.stat(f)
            out.append([f, st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([f, None])
    return out



