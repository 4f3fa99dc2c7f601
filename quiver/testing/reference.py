"""The brute-force oracle of DESIGN §2, written straight from the rules.

Plain Python over lists of dicts, no cleverness and no speed: every engine
(DuckDB, Spark, the online aggregation state) is tested against these
functions on adversarial data. Timestamps are aware ``datetime``s (or any
values that compare like instants, e.g. integer microseconds, as long as one
call uses one kind).

Rules, as implemented here:

* **Point-in-time join.** Candidates for an entity row (keys ``k``, time ``t``)
  are the view's rows with keys equal to ``k`` (a null key matches nothing)
  and ``t - ttl <= event_timestamp <= t`` (no lower bound without a ttl); with
  ``as_known`` also ``created_timestamp <= t``. The chosen row has the greatest
  event time, then the greatest created time; its values are the features,
  nulls included. No candidate: every feature is null.
* **Window aggregation** at ``t`` over ``t - w <= event_timestamp < t`` (with
  ``as_known`` also ``created_timestamp <= t``). Null values are skipped by every
  function. ``count``: number of non-null values (0 for an empty window);
  ``count_distinct``: distinct non-null values; ``min``/``max``: null when no
  value, a NaN ordered above every number (``max`` is NaN once the window holds
  one, ``min`` only when it holds nothing else); ``last``: the value of the event
  with the greatest event time, then created time, then value, among those with
  a value.
* **Exact sums.** ``sum``, ``mean`` and ``stddev`` also skip non-finite values and
  add the exact integers ``trunc(v * 2**52)`` (``S``, and ``Q`` over the squares
  ``v * v``): ``sum = float(S) / 2**52``, ``mean = sum / n``, ``stddev =
  sqrt(max((q - sum * sum / n) / (n - 1), 0))`` with ``q = float(Q) / 2**52`` and
  ``n`` the number of finite values (null below one value, two for ``stddev``);
  a value or total beyond ``2**127 / 2**52`` raises ``InputError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from quiver.errors import InputError

__all__ = ["aggregate", "point_in_time", "window_aggregate", "window_events"]

EVENT_TS = "event_timestamp"
CREATED_TS = "created_timestamp"


def _same_keys(a: dict[str, Any], b: dict[str, Any], keys: Sequence[str]) -> bool:
    return all(a[k] is not None and b[k] is not None and a[k] == b[k] for k in keys)


def _created(row: dict[str, Any]) -> Any:
    c = row.get(CREATED_TS)
    return row[EVENT_TS] if c is None else c


def point_in_time(
    entity_rows: Iterable[dict[str, Any]],
    view_rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    features: Sequence[str],
    ttl: timedelta | None = None,
    *,
    as_known: bool = False,
    timestamp: str = EVENT_TS,
) -> list[dict[str, Any]]:
    """For each entity row, the features of the row DESIGN §2 chooses (or nulls)."""
    out = []
    for e in entity_rows:
        t = e[timestamp]
        best = None
        for r in view_rows:
            if not _same_keys(e, r, keys):
                continue
            ts = r[EVENT_TS]
            if ts > t or (ttl is not None and ts < t - ttl):
                continue
            if as_known and _created(r) > t:
                continue
            if best is None or (ts, _created(r)) > (best[EVENT_TS], _created(best)):
                best = r
        out.append({f: (best[f] if best is not None else None) for f in features})
    return out


def window_events(
    events: Sequence[dict[str, Any]], entity: dict[str, Any], keys: Sequence[str], t: Any, window: timedelta,
    *, as_known: bool = False,
) -> list[dict[str, Any]]:
    """The entity's events with ``t - window <= event_timestamp < t``."""
    return [
        ev for ev in events
        if _same_keys(entity, ev, keys) and t - window <= ev[EVENT_TS] < t and (not as_known or _created(ev) <= t)
    ]


def aggregate(function: str, rows: Sequence[dict[str, Any]], column: str) -> Any:
    """One aggregation function over the rows of a window (nulls skipped)."""
    with_value = [r for r in rows if r.get(column) is not None]
    vals = [r[column] for r in with_value]
    if function == "count":
        return len(vals)
    if function == "count_distinct":
        return len(set(vals))
    if not vals:
        return None
    if function in ("sum", "mean", "stddev"):
        return _exact(function, vals, column)
    if function == "min":
        return min(vals, key=_order)
    if function == "max":
        return max(vals, key=_order)
    if function == "last":
        return max(with_value, key=lambda r: (r[EVENT_TS], _created(r), _order(r[column])))[column]
    raise ValueError(f"unknown aggregation function {function!r}")


def _order(v: Any) -> tuple[bool, Any]:
    """Values in order, a NaN above every number (as DuckDB and Spark order them)."""
    nan = isinstance(v, float) and math.isnan(v)
    return nan, 0.0 if nan else v


def _exact(function: str, vals: list[Any], column: str) -> float | None:
    """sum, mean or stddev by the exact-integer rule (see the module docstring)."""
    finite = [float(v) for v in vals if math.isfinite(v)]
    n = len(finite)
    if n < (2 if function == "stddev" else 1):
        return None

    def total(xs: Iterable[float]) -> float:
        big = 0
        for x in xs:
            if not abs(x * 2**52) < 2**127:
                raise InputError(f"column {column!r}: {x} is too large for an exact sum")
            big += math.trunc(x * 2**52)
        if not abs(big) < 2**127:
            raise InputError(f"column {column!r}: the total is too large for an exact sum")
        return float(big) / 2**52

    s = total(finite)
    if function == "sum":
        return s
    if function == "mean":
        return s / float(n)
    q = total(v * v for v in finite)
    var = (q - s * s / float(n)) / (float(n) - 1.0)
    return math.sqrt(var) if var > 0 else 0.0


def window_aggregate(
    entity_rows: Iterable[dict[str, Any]],
    events: Sequence[dict[str, Any]],
    keys: Sequence[str],
    aggregations: Sequence[tuple[str, str, timedelta, str]],
    *,
    as_known: bool = False,
    timestamp: str = EVENT_TS,
) -> list[dict[str, Any]]:
    """For each entity row, each ``(column, function, window, name)`` evaluated at its time."""
    out = []
    for e in entity_rows:
        t = e[timestamp]
        out.append({
            name: aggregate(fn, window_events(events, e, keys, t, w, as_known=as_known), col)
            for col, fn, w, name in aggregations
        })
    return out
