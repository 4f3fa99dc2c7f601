"""OnlineResponse: what ``get_online_features`` returns.

Built from plain Python lists on the hot path; statuses, event times and the
Arrow/pandas forms are computed only when asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa


__all__ = ["NOT_FOUND", "OUTSIDE_TTL", "PRESENT", "OnlineResponse", "iso_z"]

PRESENT = "present"
NOT_FOUND = "not_found"
OUTSIDE_TTL = "outside_ttl"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def _dt(us: int | None) -> datetime | None:
    return None if us is None else _EPOCH + timedelta(microseconds=us)


def iso_z(us: int) -> str:
    """Epoch microseconds -> ISO-8601 UTC text ending in ``Z`` (``2026-01-02T03:04:05.000006Z``;
    no fraction when it is zero), without building an aware datetime; the text of each
    second is kept (rows served repeat their event times, and the evaluation times of a
    busy server share their seconds)."""
    second, fraction = divmod(us, 1_000_000)
    return f"{_iso_second(second)}.{fraction:06d}Z" if fraction else _iso_second(second) + "Z"


@functools.lru_cache(maxsize=16_384)
def _iso_second(second: int) -> str:
    return (_NAIVE_EPOCH + timedelta(seconds=second)).isoformat()


class OnlineResponse:
    """Feature vectors for entity keys.

    * ``to_dict()``: ``{"user_id": [1], "credit_limit": [...], ...}``: join keys, then features.
    * ``statuses``: per output column, one of ``present``, ``not_found``, ``outside_ttl`` per row.
    * ``event_timestamps``: per view, the event time of the row served (the
      evaluation time for aggregate views; None when not found).

    Statuses and event times are derived, when asked for, from the rows the
    store returned (``views``: view -> (rows as stored, ttl in microseconds);
    rows None for an aggregate view) and the read time ``now`` (epoch microseconds).
    """

    __slots__ = ("_keys", "_values", "_types", "_status_of", "_views", "_now", "_n", "_rendered")

    def __init__(
        self,
        keys: dict[str, list[Any]],
        values: dict[str, list[Any]],
        types: dict[str, pa.DataType],
        status_of: dict[str, str | None],
        views: dict[str, tuple[list[tuple[Any, ...] | None] | None, int | None]],
        now: int,
        n: int,
    ) -> None:
        self._keys = keys
        self._values = values
        self._types = types
        self._status_of = status_of  # output column -> view whose status it has (None: computed, always present)
        self._views = views
        self._now = now
        self._n = n
        self._rendered: tuple[tuple[str, ...], list[str], list[dict[str, Any]], str] | None = None

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"OnlineResponse({len(self)} rows, features={list(self._values)})"

    @property
    def feature_names(self) -> list[str]:
        return list(self._values)

    @property
    def join_keys(self) -> list[str]:
        return list(self._keys)

    @property
    def evaluated_at(self) -> datetime:
        """The read time: TTLs and windows were evaluated at this instant."""
        return _EPOCH + timedelta(microseconds=self._now)

    def columns(self) -> tuple[list[Any], ...]:
        """The join key columns, then the feature columns (``join_keys + feature_names``),
        without building the merged ``to_dict()``: what the served-vector log records."""
        return (*self._keys.values(), *self._values.values())

    def to_dict(self) -> dict[str, list[Any]]:
        """Join keys, then features (full names ``view__feature`` when asked for)."""
        return {**self._keys, **self._values}

    def _view_status(self, view: str) -> list[str]:
        rows, ttl = self._views[view]
        if rows is None:
            return [PRESENT] * self._n
        oldest = None if ttl is None else self._now - ttl
        return [NOT_FOUND if r is None else OUTSIDE_TTL if oldest is not None and r[-1] < oldest else PRESENT
                for r in rows]

    def _status_columns(self) -> dict[str, list[str]]:
        """Per output column its statuses (the columns of one view share one list)."""
        by_view = {view: self._view_status(view) for view in set(self._status_of.values()) if view is not None}
        present = [PRESENT] * self._n
        return {name: present if view is None else by_view[view] for name, view in self._status_of.items()}

    @property
    def statuses(self) -> dict[str, list[str]]:
        return {name: list(col) for name, col in self._status_columns().items()}

    def _view_events(self) -> dict[str, list[int | None]]:
        out: dict[str, list[int | None]] = {}
        for view, (rows, _) in self._views.items():
            out[view] = [self._now] * self._n if rows is None else [None if r is None else r[-1] for r in rows]
        return out

    @property
    def event_timestamps(self) -> dict[str, list[datetime | None]]:
        return {v: [_dt(us) for us in col] for v, col in self._view_events().items()}

    def results(self, names: Sequence[str], start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Per entity row from ``start`` to ``stop``, in order: ``{"values", "statuses",
        "event_timestamps"}`` of the output columns ``names`` (values and statuses per
        column, ISO-8601 event times per view): the rows of the feature server's answer,
        in one pass over the stored rows."""
        stop = self._n if stop is None else stop
        data = self.to_dict()
        statuses = self._status_columns()
        present = [PRESENT] * self._n
        columns = [data[c][start:stop] for c in names]
        status_cols = [statuses.get(c, present)[start:stop] for c in names]
        times = {view: [None if us is None else iso_z(us) for us in col[start:stop]]
                 for view, col in self._view_events().items()}
        return [
            {"values": [col[i] for col in columns], "statuses": [col[i] for col in status_cols],
             "event_timestamps": {v: t[i] for v, t in times.items()}}
            for i in range(stop - start)
        ]

    def rendered(self, keys: Sequence[str]) -> tuple[list[str], list[dict[str, Any]], str]:
        """What the feature server sends, worked out once per response (a joined call's
        requests each take their rows): the output columns other than ``keys``, every
        row's ``results`` and the evaluation time as ISO-8601 text."""
        memo = self._rendered
        if memo is None or memo[0] != tuple(keys):
            names = [c for c in self.to_dict() if c not in keys]
            memo = self._rendered = (tuple(keys), names, self.results(names), iso_z(self._now))
        return memo[1], memo[2], memo[3]

    def to_arrow(self) -> pa.Table:
        cols: dict[str, pa.Array] = {}
        for name, col in self.to_dict().items():
            cols[name] = pa.array(col, type=self._types.get(name))
        return pa.table(cols)

    def to_pandas(self) -> Any:
        """A DataFrame: join keys, then features (nulls as None/NaN as pandas does)."""
        return self.to_arrow().to_pandas()

    def to_json_dict(self) -> dict[str, Any]:
        """The whole response (values, statuses, event times) as JSON-ready data."""
        return {
            "features": self.to_dict(),
            "statuses": self.statuses,
            "event_timestamps": {
                v: [None if us is None else _dt(us).isoformat() for us in col]  # type: ignore[union-attr]
                for v, col in self._view_events().items()
            },
        }
