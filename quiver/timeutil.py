"""Time in one place: UTC instants, window names and the ``[t - w, t)`` rule.

Every timestamp is an instant; naive values given by users are UTC; results
carry ``timestamp[us, tz=UTC]`` (DESIGN §2).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from quiver.errors import InputError

__all__ = [
    "TIMESTAMP",
    "format_window",
    "in_window",
    "parse_duration",
    "to_timestamp_array",
    "to_utc",
    "utcnow",
]

TIMESTAMP = pa.timestamp("us", tz="UTC")
_UNITS = (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1_000))
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d|w)\s*$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_utc(value: Any, what: str = "timestamp") -> datetime:
    """A datetime, ISO string, date or epoch number as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return to_utc(datetime.fromisoformat(value.replace("Z", "+00:00")), what)
        except ValueError:
            pass
    if hasattr(value, "to_pydatetime"):  # pandas Timestamp
        return to_utc(value.to_pydatetime(), what)
    if hasattr(value, "year") and hasattr(value, "month"):  # date
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    raise InputError(f"{what}: cannot read {value!r} as a timestamp; give a datetime, an ISO-8601 string or epoch seconds")


def to_timestamp_array(arr: pa.Array | pa.ChunkedArray, what: str) -> pa.ChunkedArray | pa.Array:
    """Cast a timestamp/date column to ``timestamp[us, tz=UTC]``; naive means UTC."""
    t = arr.type
    if pa.types.is_timestamp(t):
        # a naive timestamp is UTC; an aware one in any zone is the same instant
        return arr.cast(pa.timestamp("us", tz=t.tz or "UTC")).cast(TIMESTAMP)
    if pa.types.is_date(t):
        return arr.cast(pa.timestamp("us")).cast(TIMESTAMP)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            parsed = pc.cast(arr, pa.timestamp("us", tz="UTC"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise InputError(f"column {what!r}: cannot parse strings as timestamps ({e}); use ISO-8601") from None
        return parsed
    raise InputError(
        f"column {what!r} has type {t}, not a timestamp; convert it (e.g. pandas.to_datetime) before passing it"
    )


def parse_duration(value: Any, what: str = "duration") -> timedelta:
    """A timedelta, seconds, or a string like ``10m``/``7d`` as a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            n, unit = int(m.group(1)), m.group(2)
            return {
                "ms": timedelta(milliseconds=n),
                "s": timedelta(seconds=n),
                "m": timedelta(minutes=n),
                "h": timedelta(hours=n),
                "d": timedelta(days=n),
                "w": timedelta(weeks=n),
            }[unit]
    raise ValueError(f"{what}: cannot read {value!r} as a duration; use a timedelta or a string like '10m', '2h', '7d'")


def format_window(w: timedelta) -> str:
    """The shortest exact name of a window: 10 minutes -> '10m', 36 hours -> '36h'."""
    us = w // timedelta(microseconds=1)
    for suffix, size in _UNITS:
        if us % size == 0:
            return f"{us // size}{suffix}"
    return f"{us}us"


def in_window(event: datetime, t: datetime, window: timedelta) -> bool:
    """The window rule of DESIGN §2, written once: ``t - w <= event < t``."""
    return t - window <= event < t
