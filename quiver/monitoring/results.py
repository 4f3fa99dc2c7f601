"""Check results and their history, kept in the registry's namespaced values.

Nothing here needs a table of its own: the generic ``RegistryStore``
key/value interface holds, per view, one value for the current state of each
check (to detect ok -> failing transitions), one capped list per check for the
history, the alerts raised, and the latest profiles (for the report). A run
reads and writes each of its views once, whatever the number of checks.

Namespaces: ``monitor.state``, ``monitor.history``, ``monitor.alerts``,
``monitor.profiles`` (key: the view name); ``monitor.meta`` (key ``last_run``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["OK", "FAILING", "INFO", "CheckResult", "ResultStore", "Transition"]

OK, FAILING, INFO = "ok", "failing", "info"
NS_STATE, NS_HISTORY, NS_ALERTS, NS_PROFILES, NS_META = (
    "monitor.state", "monitor.history", "monitor.alerts", "monitor.profiles", "monitor.meta")


@dataclass(frozen=True)
class CheckResult:
    """One check of one view (and feature) at one time.

    ``status`` is ``ok``, ``failing`` or ``info`` (reported, no threshold);
    ``value`` and ``threshold`` are numbers in the unit the check names
    (seconds for freshness, a share for null rates, PSI/KS for drift).
    """

    time: datetime
    view: str
    feature: str
    check: str
    value: float | None
    threshold: float | None
    status: str
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def series(self) -> str:
        """``view:feature:check`` (feature empty for view-level checks)."""
        return f"{self.view}:{self.feature}:{self.check}"

    @property
    def failing(self) -> bool:
        return self.status == FAILING

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["time"] = self.time.isoformat()
        d["value"] = _num(self.value)
        d["threshold"] = _num(self.threshold)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CheckResult:
        return cls(
            time=datetime.fromisoformat(d["time"]), view=d["view"], feature=d.get("feature", ""),
            check=d["check"], value=d.get("value"), threshold=d.get("threshold"), status=d["status"],
            detail=d.get("detail", ""), data=d.get("data") or {},
        )


def _num(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


@dataclass(frozen=True)
class Transition:
    """A check whose status moved between ok and failing: the cause of one alert."""

    result: CheckResult
    previous: str
    since: str | None  # when the previous status started (ISO time)


class ResultStore:
    """Reads and writes monitor results through a ``Registry`` (or any object
    with ``get_value``/``set_value``/``list_values``)."""

    def __init__(self, registry: Any, history_limit: int = 500) -> None:
        self.registry = registry
        self.history_limit = int(history_limit)

    def record(self, results: Sequence[CheckResult]) -> list[Transition]:
        """Store ``results`` (state and history) and return the ok<->failing transitions.

        A check seen for the first time that fails counts as a transition from
        ok; ``info`` (reported, not checked) counts as ok.
        """
        by_view: dict[str, list[CheckResult]] = {}
        for r in results:
            by_view.setdefault(r.view, []).append(r)
        transitions: list[Transition] = []
        for view, rs in by_view.items():
            state: dict[str, Any] = self.registry.get_value(NS_STATE, view) or {}
            hist: dict[str, list[list[Any]]] = self.registry.get_value(NS_HISTORY, view) or {}
            for r in rs:
                prev = state.get(r.series)
                prev_status = prev["status"] if prev else OK
                since = prev.get("since") if prev else None
                if (r.status == FAILING) != (prev_status == FAILING):  # info counts as ok
                    transitions.append(Transition(r, prev_status, since))
                    since = r.time.isoformat()
                elif prev is None or prev_status != r.status:
                    since = r.time.isoformat()
                state[r.series] = {**r.to_dict(), "since": since}
                rows = hist.setdefault(r.series, [])
                rows.append([r.time.isoformat(), _num(r.value), _num(r.threshold), r.status])
                del rows[: max(0, len(rows) - self.history_limit)]
            self.registry.set_value(NS_STATE, view, state)
            self.registry.set_value(NS_HISTORY, view, hist)
        if results:
            self.registry.set_value(NS_META, "last_run", max(r.time for r in results).isoformat())
        return transitions

    def current(self, views: Iterable[str] | None = None) -> list[CheckResult]:
        """The latest result of every check (of ``views``)."""
        states = self.registry.list_values(NS_STATE)
        wanted = set(views) if views is not None else None
        out = []
        for view, state in sorted(states.items()):
            if wanted is not None and view not in wanted:
                continue
            for _, d in sorted(state.items()):
                out.append(CheckResult.from_dict(d))
        return out

    def history(self, view: str, feature: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """``check -> [{time, value, threshold, status}]`` of one view (and feature), oldest first.

        ``feature=None`` returns the view-level checks and every feature's
        checks, keyed ``feature:check``.
        """
        hist = self.registry.get_value(NS_HISTORY, view) or {}
        out: dict[str, list[dict[str, Any]]] = {}
        for series, rows in sorted(hist.items()):
            _, feat, check = series.split(":", 2)
            if feature is not None and feat != feature:
                continue
            key = check if feature is not None else f"{feat}:{check}"
            out[key] = [{"time": t, "value": v, "threshold": th, "status": s} for t, v, th, s in rows]
        return out

    # -- alerts and profiles ----------------------------------------------------

    def add_alerts(self, alerts: Sequence[dict[str, Any]]) -> None:
        by_view: dict[str, list[dict[str, Any]]] = {}
        for a in alerts:
            by_view.setdefault(a["view"], []).append(a)
        for view, items in by_view.items():
            stored = self.registry.get_value(NS_ALERTS, view) or []
            stored.extend(items)
            self.registry.set_value(NS_ALERTS, view, stored[-self.history_limit:])

    def alerts(self, view: str | None = None) -> list[dict[str, Any]]:
        if view is not None:
            return list(self.registry.get_value(NS_ALERTS, view) or [])
        return sorted((a for v in self.registry.list_values(NS_ALERTS).values() for a in v), key=lambda a: a["time"])

    def save_profiles(self, view: str, profiles: dict[str, Any]) -> None:
        """The latest profile of each feature of ``view`` and its reference (for reports)."""
        self.registry.set_value(NS_PROFILES, view, profiles)

    def profiles(self, view: str) -> dict[str, Any]:
        return dict(self.registry.get_value(NS_PROFILES, view) or {})

    def last_run(self) -> datetime | None:
        v = self.registry.get_value(NS_META, "last_run")
        return datetime.fromisoformat(v) if v else None


def now_utc() -> datetime:
    return datetime.now(UTC)
