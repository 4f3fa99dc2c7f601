"""Packed tiles: the additive stats (n, f and the limbs of exact sums) of one storage
group as float64 slots.

A store can keep the tiles of one group (``windows.GROUP``: the minutes of an
hour, the hours of a day, the days of 32) for one entity as a single byte
string of little-endian float64 slots, ``slot = tile_in_group * width + stat``
(``width`` = the number of additive stats), zero where nothing was added. Reading
a window is then one multi-key fetch of a few short strings, and the fold is a
few slice sums: no per-tile field names, no text numbers. Merging a batch adds
its deltas slot by slot (order does not matter: every slot holds integer-valued
sums below 2**53, see ``exact``), which is what the stores' merge script does.

``slots`` gives a batch's deltas per group key in that layout; ``PackedReader``
turns a read plan into the keys to fetch and folds what comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quiver.aggregation import exact as E
from quiver.aggregation import functions as F
from quiver.aggregation import windows as W

__all__ = ["ADDITIVE", "PackedReader", "Slots", "slots"]

ADDITIVE = F.ADDITIVE  # stats that merge by adding: packed
_ADDITIVE_FUNCTIONS = frozenset({"count", "sum", "mean", "stddev"})


@dataclass(frozen=True, slots=True)
class Slots:
    """A batch's additive deltas, grouped by (entity, level, group) in key order.

    ``entity``, ``level``, ``group``: one entry per group key; ``count``: how many
    (slot, value) records of ``slot``/``value`` belong to each key, in order."""

    entity: pa.Array
    level: np.ndarray
    group: np.ndarray
    count: np.ndarray
    slot: np.ndarray
    value: np.ndarray


def slots(cells: pa.Table, positions: dict[int, int]) -> Slots:
    """The additive cells of a ``StateWrite`` table (``op == '+'``) as packed slots;
    ``positions`` maps a stat index to its place among the additive stats."""
    add = cells.filter(pc.equal(cells.column("op"), "+")) if cells.num_rows else cells
    width = len(positions)
    level = add.column("level").to_numpy()
    group = add.column("group").to_numpy()
    tile = add.column("tile").to_numpy()
    per = np.asarray([g // s for g, s in zip(W.GROUP, W.LEVELS)], dtype="int64")
    stat_pos = np.zeros(max(positions, default=0) + 1, dtype="int64")
    for i, p in positions.items():
        stat_pos[i] = p
    slot = (tile - group * per[level]) * width + stat_pos[add.column("stat").to_numpy()]
    ent = pc.dictionary_encode(add.column("entity")).combine_chunks()
    codes = ent.indices.to_numpy(zero_copy_only=False).astype("int64")
    # one key per (entity, level, group): sort by it, then count the records of each
    order = np.lexsort((slot, group, level, codes))
    codes, level, group, slot = codes[order], level[order], group[order], slot[order]
    value = add.column("val").to_numpy(zero_copy_only=False)[order]
    n = len(order)
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = (codes[1:] != codes[:-1]) | (level[1:] != level[:-1]) | (group[1:] != group[:-1])
    heads = np.flatnonzero(new)
    count = np.diff(np.append(heads, n))
    return Slots(ent.dictionary.take(pa.array(codes[heads])), level[heads], group[heads], count,
                 slot.astype("int32"), value.astype("float64"))


class PackedReader:
    """Reads of additive aggregates (count, sum, mean, stddev) from packed tiles
    and the raw events of the window edges; ``fold`` gives one value per feature."""

    def __init__(self, layout: object) -> None:
        self.layout = layout
        stats = layout.stats  # type: ignore[attr-defined]
        self.positions = {i: p for p, i in enumerate(i for i, st in enumerate(stats) if st.kind in ADDITIVE)}
        self.width = len(self.positions)
        self._stat_pos = {st.name: self.positions[i] for i, st in enumerate(stats) if st.kind in ADDITIVE}
        self._columns = {c: j for j, c in enumerate(layout.columns)}  # type: ignore[attr-defined]
        # per column: the slots of its finite count and of the limbs of its sum and sum of squares
        self._exact: dict[str, tuple[int, list[int], list[int]]] = {}
        for c in self._columns:
            pos = self._stat_pos
            self._exact[c] = (pos.get(f"{c}.f", -1), [pos.get(f"{c}.{k}", -1) for k in F.SUM_LIMBS],
                              [pos.get(f"{c}.{k}", -1) for k in F.SQUARE_LIMBS])
        self._cache: dict[tuple[Any, ...], Any] = {}

    @staticmethod
    def handles(plan: object) -> bool:
        return all(a.function in _ADDITIVE_FUNCTIONS for a in plan.aggregations)  # type: ignore[attr-defined]

    def groups(self, plan: object) -> list[tuple[int, int]]:
        """The (level, group) keys a plan reads, in the order ``fold`` takes them."""
        groups: list[tuple[int, int]] = self._selection(plan)[0]
        return groups

    def _selection(self, plan: object) -> tuple[Any, ...]:
        """The groups a plan reads, each one's length in bytes, per aggregation its window's
        place, and which of the groups' tiles (laid end to end) each window sums, as a 0/1
        matrix windows x tile rows; cached per tile alignment (it changes once a minute) and
        features."""
        covers = plan.covers  # type: ignore[attr-defined]
        key = (tuple((size, c.aligned) for size, c in covers.items()),
               tuple(a.name for a in plan.aggregations))  # type: ignore[attr-defined]
        got: tuple[Any, ...] | None = self._cache.get(key)
        if got is not None:
            return got
        start: dict[tuple[int, int], int] = {}
        row = 0
        for cov in covers.values():
            for lv, lo, hi in cov.runs():
                per = W.GROUP[lv] // W.LEVELS[lv]
                for g in range(lo // per, hi // per + 1):
                    if (lv, g) not in start:
                        start[(lv, g)] = row
                        row += per
        select = np.zeros((len(covers), row))
        for i, cov in enumerate(covers.values()):
            for lv, lo, hi in cov.runs():
                per = W.GROUP[lv] // W.LEVELS[lv]
                select[i, [start[(lv, t // per)] + t % per for t in range(lo, hi + 1)]] = 1.0
        sizes = [W.GROUP[lv] // W.LEVELS[lv] * self.width * 8 for lv, _ in start]
        if len(self._cache) > 64:
            self._cache.clear()
        place = {size: i for i, size in enumerate(covers)}
        picks = [(place[int(agg.window.total_seconds() * 1_000_000)], agg)
                 for agg in plan.aggregations]  # type: ignore[attr-defined]
        got = self._cache[key] = (list(start), sizes, picks, select)
        return got

    def fold(self, plan: object, packed: Sequence[bytes | None], raw: bytes) -> list[object]:
        """Feature values of one entity, in the order of ``plan.aggregations``, from its
        packed group strings (in the order of ``groups(plan)``, None when absent) and its
        raw edge records (concatenated).

        One matrix product: windows x (tile rows, raw events) (0/1) by the tiles' slot sums
        and the events' slot deltas (their ``d``, stored with them). Every term is an
        integer-valued float64 and every sum stays below 2**53, so any order of additions
        gives the same exact sums. The one exception is an out-of-range value (NaN limbs
        in a tile, ``functions.LIMB_NAN`` in a record): a 0 times NaN would spread it to
        windows that do not hold the value, so then each window sums only its own rows."""
        _, sizes, picks, select = self._selection(plan)
        tiles = np.frombuffer(b"".join([(d or b"").ljust(n, b"\0") for d, n in zip(packed, sizes)]),
                              dtype="<f8").reshape(-1, self.width)
        rec: Any = None
        keep = None
        if raw:
            rec = np.frombuffer(raw, dtype=self.layout._raw_dtype)  # type: ignore[attr-defined]
            covers = list(plan.covers.values())  # type: ignore[attr-defined]
            # rows 0..k-1: each window's [start, end); rows k..2k-1: the part [a, b) its tiles hold
            # (a == b: none); each test one unsigned comparison of ts - lower bound with the length
            k = len(covers)
            b = np.array([[c.start for c in covers] + [c.aligned[0] for c in covers],
                          [c.end - c.start for c in covers] + [c.aligned[1] - c.aligned[0] for c in covers]],
                         dtype="int64").view("uint64")
            inside = (rec["ts"].view("uint64") - b[0][:, None]) < b[1][:, None]
            keep = inside[:k] > inside[k:]  # in the window, not under its tiles
            d = rec["d"]
            sums = (np.concatenate((select, keep), axis=1) @ np.concatenate((tiles, d))).tolist()
            bad = d.min() == F.LIMB_NAN
        else:
            sums = (select @ tiles).tolist()
            bad = False
        if bad or any(x != x for row in sums for x in row):  # an out-of-range value somewhere
            sums = self._apart(tiles, select, None if keep is None else (self.deltas(rec), keep))
        return [self._finalize(agg, sums[i]) for i, agg in picks]

    @staticmethod
    def _apart(tiles: np.ndarray, select: np.ndarray, edges: tuple[np.ndarray, np.ndarray] | None) -> list[list[float]]:
        """Each window's sums from its own tile rows and raw events (``edges``: the events'
        ``deltas`` and the windows x events keep mask) only, so that an out-of-range value
        fails just the windows that hold it."""
        out = []
        for i, tile_rows in enumerate(select == 1):
            acc = tiles[tile_rows].sum(axis=0)
            if edges is not None:
                acc = acc + edges[0][edges[1][i]].sum(axis=0)
            out.append(acc.tolist())
        return out

    def deltas(self, rec: np.ndarray) -> np.ndarray:
        """What raw records add to the slots, shape (events, width): their ``d`` as float64,
        NaN where a value is out of range (``functions.LIMB_NAN``)."""
        d = rec["d"]
        out = d.astype("float64")
        bad = d == F.LIMB_NAN
        if bad.any():
            out[bad] = np.nan
        return out

    def _finalize(self, agg: object, acc: list[float]) -> object:
        """``functions.finalize`` for one entity from its slot sums: empty window -> count 0,
        others null."""
        c, f = agg.column, agg.function  # type: ignore[attr-defined]
        if f == "count":
            return int(round(acc[self._stat_pos[f"{c}.n"]]))
        n, s, q = self._exact[c]
        return E.finish(f, acc[n], [acc[k] for k in s], [acc[k] for k in q] if f == "stddev" else None,
                        agg.name, c)  # type: ignore[attr-defined]
