"""Completeness and schema: null rates against a baseline and a limit, and
source columns that disappeared or changed type.

Thresholds come, most specific first, from ``Field(..., monitoring={...})``,
the view's ``monitoring={...}``, ``quiver.yaml`` ``monitoring: {thresholds: {...}}``
and ``DEFAULTS``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pyarrow as pa

from quiver.definitions import FeatureView
from quiver.monitoring.results import FAILING, INFO, OK, CheckResult
from quiver.monitoring.tables import ViewData

__all__ = ["DEFAULTS", "thresholds", "schema_checks", "null_rate_check"]

DEFAULTS: dict[str, float] = {
    "psi": 0.2,  # population stability index: above 0.2 is commonly read as a significant shift
    "ks": 0.2,  # Kolmogorov-Smirnov statistic (largest gap between the two CDFs)
    "js": 0.1,  # Jensen-Shannon divergence of categories (base 2)
    "null_rate": 0.5,  # absolute limit of the share of nulls in the window
    "null_rate_increase": 0.1,  # allowed rise over the reference window's null rate
    "min_count": 30,  # fewer values than this: drift is reported, not checked
    "skew": 0.0,  # share of served values that may differ from the recomputed ones
}


def thresholds(config: dict[str, Any], view: FeatureView, feature: str | None = None) -> dict[str, float]:
    """The thresholds that apply to ``view`` (and ``feature``)."""
    out = dict(DEFAULTS)
    out.update({k: float(v) for k, v in (config.get("thresholds") or {}).items()})
    out.update({k: float(v) for k, v in view.monitoring.items() if isinstance(v, int | float)})
    if feature is not None:
        for f in view.schema:
            if f.name == feature:
                out.update({k: float(v) for k, v in f.monitoring.items() if isinstance(v, int | float)})
    return out


def _family(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "bytes"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list"
    return str(t)


_COMPATIBLE = {("integer", "float")}  # an integer column read as a float feature loses nothing


def schema_checks(data: ViewData, now: datetime) -> list[CheckResult]:
    """One ``schema`` result per monitored column: failing when it is missing or of another type."""
    out = []
    src = f"the data of view {data.view.name!r}"
    for name in data.missing:
        out.append(CheckResult(now, data.view.name, name, "schema", 1.0, 0.0, FAILING,
                               f"column {name!r} is missing from {src}; expected a "
                               f"{getattr(data.expected.get(name), 'name', 'value')} column"))
    for name, t in data.types.items():
        expected = data.expected.get(name)
        if expected is None:
            out.append(CheckResult(now, data.view.name, name, "schema", 0.0, 0.0, OK, str(t)))
            continue
        want, got = _family(expected.arrow), _family(t)
        if want == got or (got, want) in _COMPATIBLE:
            out.append(CheckResult(now, data.view.name, name, "schema", 0.0, 0.0, OK, str(t)))
        else:
            out.append(CheckResult(now, data.view.name, name, "schema", 1.0, 0.0, FAILING,
                                   f"column {name!r} changed type: {expected.name} expected, the data has {t}"))
    return out


def null_rate_check(
    view: str, feature: str, cur: dict[str, Any], ref: dict[str, Any] | None, th: dict[str, float], now: datetime,
    check: str = "null_rate",
) -> CheckResult:
    """Failing when the window's null rate exceeds the absolute limit or the
    reference's rate plus the allowed increase."""
    rate = cur.get("null_rate")
    limit = th["null_rate"]
    base = ref.get("null_rate") if ref else None
    if base is not None:
        limit = min(limit, base + th["null_rate_increase"])
    if rate is None:
        return CheckResult(now, view, feature, check, None, limit, INFO, "no rows in the window")
    status = FAILING if rate > limit else OK
    base_txt = f", reference {base:.2%}" if base is not None else ""
    return CheckResult(now, view, feature, check, rate, limit, status,
                       f"{rate:.2%} nulls over {cur['count']} rows (limit {limit:.2%}{base_txt})",
                       {"count": cur["count"], "nulls": cur["nulls"], "reference": base})
