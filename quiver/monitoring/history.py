"""``quiver monitor history VIEW[:FEATURE]``: the trend of checks and profiles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from quiver.monitoring.results import ResultStore

__all__ = ["history"]


def history(registry: Any, get_view: Callable[[str], Any], name: str) -> dict[str, Any]:
    """Checks of a view (or one feature) over time, its alerts and its latest profile."""
    view, _, feature = name.partition(":")
    fv = get_view(view)  # raises NotFoundError with a suggestion
    if feature and feature not in fv.feature_names and feature not in _inputs(fv):
        from quiver.errors import NotFoundError, closest

        raise NotFoundError(f"feature view {view!r} has no feature {feature!r}.{closest(feature, fv.feature_names)}")
    rs = ResultStore(registry)
    checks = rs.history(view, feature if feature else None)
    alerts = [a for a in rs.alerts(view) if not feature or a["feature"] == feature]
    profiles = rs.profiles(view)
    out: dict[str, Any] = {"name": name, "view": view, "feature": feature or None, "checks": checks, "alerts": alerts}
    if feature:
        out["profile"] = profiles.get(feature)
    return out


def _inputs(fv: Any) -> list[str]:
    return [a.column for a in getattr(fv, "aggregations", ())]
