"""Tile arithmetic: how a window ``[t - w, t)`` is covered by stored pieces.

A window is covered by tiles at three levels (1 minute, 1 hour, 1 day;
integer microseconds since the epoch, aligned to the epoch) holding partial
aggregates, and the raw events are kept too, in 10-second buckets, because a
window's edges rarely fall on a minute: the partial minute at each edge is read
from raw events and filtered to the exact bounds, and everything between comes
from the largest whole tiles that fit. A 30-day window for an entity then costs
about 30 day tiles, 2 x 23 hour tiles, 2 x 59 minute tiles and the raw buckets
of two partial minutes, however busy the entity is. A state keeps only the
levels shorter than its longest window (``levels_for``): a view of windows up
to a day writes no day tiles, which it could use only at midnight exactly.

Stats that add (counts, exact sums) can also be read from the other side of an
edge: the whole minute's tile less the raw events of the minute outside the
window (``cover(..., invertible=True)``). A read takes whichever side has fewer
raw buckets at the window's start (a third of a minute on average, against a
half), and at its end the minute up to its close, whose events after ``t``
(none, for a read at now) are subtracted: the edge minute of a busy entity is
then read from a tile and a few seconds of events.

Tiles of one level are stored in groups (``GROUP``: 10 minutes, 6 hours, 8
days), small enough that a store can rewrite a group whole when a batch adds
to it, few enough that a 1-day read touches about 20 of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timedelta

__all__ = ["LEVELS", "RAW_BUCKET", "GROUP", "Cover", "cover", "levels_for", "to_us", "window_bounds"]

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
LEVELS: tuple[int, ...] = (MINUTE, HOUR, DAY)  # tile sizes, each divides the next
RAW_BUCKET = 10 * SECOND  # raw events are kept per 10 seconds (it divides a minute)
# tiles of one level are stored together in groups of this span (a Redis hash, a key range)
GROUP: tuple[int, ...] = (10 * MINUTE, 6 * HOUR, 8 * DAY)


def to_us(t: datetime | int) -> int:
    """Microseconds since the epoch of an aware datetime (or pass an int through)."""
    if isinstance(t, int):
        return t
    return (t - datetime(1970, 1, 1, tzinfo=t.tzinfo)) // timedelta(microseconds=1)


def window_bounds(t: datetime | int, window: timedelta) -> tuple[int, int]:
    """``[t - w, t)`` in microseconds: the rule of DESIGN §2."""
    end = to_us(t)
    return end - window // timedelta(microseconds=1), end


@dataclass
class Cover:
    """What to read for ``[start, end)``: whole tiles by level over ``aligned``, the raw
    pieces ``(bucket, lo, hi)`` of the window outside them (``raw``: added) and, when
    read from the other side of an edge, of the tiles outside the window (``less``:
    subtracted)."""

    start: int
    end: int
    tiles: Sequence[tuple[int, int]] = ()  # (level index, tile index)
    raw: list[tuple[int, int, int]] = field(default_factory=list)  # (bucket index, lo, hi)
    aligned: tuple[int, int] = (0, 0)  # the minute-aligned part [a, b) that the tiles cover
    top: int = len(LEVELS)  # the tile levels used: LEVELS[:top]
    less: list[tuple[int, int, int]] = field(default_factory=list)  # (bucket index, lo, hi)

    def runs(self) -> tuple[tuple[int, int, int], ...]:
        """The tiles as (level, first, last) runs of consecutive indices."""
        return runs_between(*self.aligned, self.top)


def _ceil(x: int, s: int) -> int:
    return -((-x) // s) * s


def levels_for(longest_window_us: int) -> int:
    """How many tile levels a state whose longest window is this long keeps: those
    smaller than the window (a tile as long as the window would fit it only when
    the window is aligned to it, so it would cost a write per event for nearly nothing)."""
    return sum(1 for size in LEVELS if size < longest_window_us)


def pieces(lo: int, hi: int) -> list[tuple[int, int, int]]:
    """``[lo, hi)`` split at the raw buckets: ``(bucket, lo, hi)`` each."""
    return [(b, max(lo, b * RAW_BUCKET), min(hi, (b + 1) * RAW_BUCKET))
            for b in range(lo // RAW_BUCKET, (hi - 1) // RAW_BUCKET + 1)] if hi > lo else []


def cover(start: int, end: int, top: int = len(LEVELS), invertible: bool = False) -> Cover:
    """Decompose ``[start, end)`` into raw edge pieces and the largest whole tiles of the
    levels ``LEVELS[:top]`` (none: raw events only). ``invertible`` (stats that add):
    an edge may be read as its whole minute less the raw events outside the window."""
    out = Cover(start, end, top=top)
    if end <= start:
        return out
    m = LEVELS[0]
    a, b = _ceil(start, m), (end // m) * m
    if a >= b or top == 0:  # within a minute or two, or no tiles kept
        out.raw = pieces(start, end)
        return out
    if invertible:
        down = (start // m) * m  # the start's minute read whole, less [down, start)
        if len(pieces(down, start)) < len(pieces(start, a)):
            a = down
        b = _ceil(end, m)  # the end's minute read whole, less [end, b): events after t, none at now
    out.raw = pieces(start, a) + pieces(b, end)
    out.less = pieces(a, start) + pieces(end, b)
    out.tiles = tiles_between(a, b, top)
    out.aligned = (a, b)
    return out


@lru_cache(maxsize=4096)
def tiles_between(a: int, b: int, top: int = len(LEVELS)) -> tuple[tuple[int, int], ...]:
    """The tiles covering aligned ``[a, b)`` (cached: reads at nearby times share them)."""
    acc: list[tuple[int, int]] = []
    if a < b:
        _tiles(a, b, 0, top, acc)
    return tuple(acc)


@lru_cache(maxsize=4096)
def runs_between(a: int, b: int, top: int = len(LEVELS)) -> tuple[tuple[int, int, int], ...]:
    out: list[tuple[int, int, int]] = []
    for lv, t in sorted(tiles_between(a, b, top)):
        if out and out[-1][0] == lv and out[-1][2] == t - 1:
            out[-1] = (lv, out[-1][1], t)
        else:
            out.append((lv, t, t))
    return tuple(out)


def _tiles(a: int, b: int, level: int, top: int, acc: list[tuple[int, int]]) -> None:
    """Cover aligned ``[a, b)`` with tiles of ``level`` and above (below ``top``)."""
    size = LEVELS[level]
    if level + 1 < top:
        nxt = LEVELS[level + 1]
        a2, b2 = _ceil(a, nxt), (b // nxt) * nxt
        if a2 < b2:
            acc.extend((level, i) for i in range(a // size, a2 // size))
            _tiles(a2, b2, level + 1, top, acc)
            acc.extend((level, i) for i in range(b2 // size, b // size))
            return
    acc.extend((level, i) for i in range(a // size, b // size))


def group_of(level: int, tile: int) -> int:
    """The storage group a tile belongs to."""
    return tile * LEVELS[level] // GROUP[level]

