"""Prometheus gauges of the latest check results (text exposition format).

``render(registry)`` is what the HTTP server's and the stream worker's
``/metrics`` append to their own output (``FeatureStore.monitor_metrics()``).
Gauges, each labelled ``view``, ``feature`` (empty for view-level checks) and
``check``:

* ``quiver_monitor_check_value``: the measured value (age in seconds, null share, PSI, ...)
* ``quiver_monitor_check_threshold``: its threshold (absent when the check has none)
* ``quiver_monitor_check_failing``: 1 while the check fails, else 0
* ``quiver_monitor_last_run_timestamp_seconds``: when the monitor last ran
"""

from __future__ import annotations

from typing import Any

from quiver.monitoring.results import FAILING, ResultStore

__all__ = ["render"]

_HELP = {
    "quiver_monitor_check_value": "Latest value measured by a monitor check",
    "quiver_monitor_check_threshold": "Threshold of a monitor check",
    "quiver_monitor_check_failing": "1 while a monitor check fails, else 0",
}


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(registry: Any) -> str:
    rs = ResultStore(registry)
    results = rs.current()
    lines: list[str] = []
    series: dict[str, list[str]] = {k: [] for k in _HELP}
    for r in results:
        labels = f'view="{_label(r.view)}",feature="{_label(r.feature)}",check="{_label(r.check)}"'
        if r.value is not None:
            series["quiver_monitor_check_value"].append(f"quiver_monitor_check_value{{{labels}}} {float(r.value)!r}")
        if r.threshold is not None:
            series["quiver_monitor_check_threshold"].append(
                f"quiver_monitor_check_threshold{{{labels}}} {float(r.threshold)!r}")
        series["quiver_monitor_check_failing"].append(
            f"quiver_monitor_check_failing{{{labels}}} {1 if r.status == FAILING else 0}")
    for name, rows in series.items():
        lines += [f"# HELP {name} {_HELP[name]}", f"# TYPE {name} gauge", *rows]
    last = rs.last_run()
    if last is not None:
        lines += ["# HELP quiver_monitor_last_run_timestamp_seconds When the monitor last ran",
                  "# TYPE quiver_monitor_last_run_timestamp_seconds gauge",
                  f"quiver_monitor_last_run_timestamp_seconds {last.timestamp()!r}"]
    return "\n".join(lines) + "\n"


class CheckCollector:
    """The same gauges for a ``prometheus_client`` registry (the stream worker's ``/metrics``)."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        families = {name: GaugeMetricFamily(name, help_, labels=["view", "feature", "check"])
                    for name, help_ in _HELP.items()}
        for r in ResultStore(self.registry).current():
            labels = [r.view, r.feature or "", r.check]
            if r.value is not None:
                families["quiver_monitor_check_value"].add_metric(labels, float(r.value))
            if r.threshold is not None:
                families["quiver_monitor_check_threshold"].add_metric(labels, float(r.threshold))
            families["quiver_monitor_check_failing"].add_metric(labels, 1.0 if r.status == FAILING else 0.0)
        yield from families.values()
