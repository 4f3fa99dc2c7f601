"""Packed tiles: the additive stats (n, f and the limbs of exact sums) of one storage
group as float64 slots.

A store can keep the tiles of one group (``windows.GROUP``: 10 minute tiles, 6
hour tiles, 8 day tiles) for one entity as a single byte
string of little-endian float64 slots, ``slot = tile_in_group * width + stat``
(``width`` = the number of additive stats), zero where nothing was added. Reading
a window is then one multi-key fetch of a few short strings, and the fold is a
few slice sums: no per-tile field names, no text numbers. Merging a batch adds
its deltas slot by slot (order does not matter: every slot holds integer-valued
sums below 2**53, see ``exact``), which is what the stores' merge script does.

``slots`` gives a batch's deltas per group key in that layout. ``PackedReader.program``
turns features and a read time into the keys to fetch and the matrix that folds them
(cached per tile alignment, so a request computes only its window bounds), and
``PackedReader.fold`` folds what comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from quiver.aggregation import exact as E
from quiver.aggregation import functions as F
from quiver.aggregation import windows as W

__all__ = ["ADDITIVE", "PackedReader", "Program", "Slots", "group_blobs", "slots"]

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


def group_blobs(sl: Slots, width: int) -> list[bytes]:
    """Each key's deltas as its group string up to the last tile the batch adds to (zero
    where it adds nothing), for stores that merge a group by adding two strings slot by
    slot, the shorter read as zeros past its end. Not padding to the whole group keeps
    stored groups short while their later tiles are empty (SQLite rewrites fewer pages)."""
    per = np.asarray([g // s * width for g, s in zip(W.GROUP, W.LEVELS)], dtype="int64")[sl.level]
    if not len(per):
        return []
    dense = np.zeros((len(per), int(per.max())))
    dense[np.repeat(np.arange(len(per)), sl.count), sl.slot] = sl.value
    last = sl.slot[np.cumsum(sl.count) - 1] // width + 1  # per key: its tiles up to the last one written
    return [dense[i, :n].tobytes() for i, n in enumerate((last * width).tolist())]


class Program(NamedTuple):
    """A packed read of some features at one tile alignment (``PackedReader.program``)."""

    suffixes: tuple[str, ...]  # the keys under an entity's prefix: its packed groups, then its raw buckets
    groups: int  # how many of ``suffixes`` are packed groups
    buckets: tuple[int, ...]  # the raw buckets of the other suffixes
    sizes: tuple[int, ...]  # each group's full length in bytes
    select: np.ndarray  # windows x tile rows (the groups' tiles laid end to end), 0/1
    windows: tuple[int, ...]  # the windows (us), in the order of ``select``'s rows
    tiled: list[int]  # per window the start a of the part [a, b) its tiles hold
    span: np.ndarray  # (2 x windows, 1) uint64: the window lengths, then each b - a (0: no tiles)
    outputs: tuple[tuple[Any, ...], ...]  # per feature: window row, function, slots, name, column


class PackedReader:
    """Reads of additive aggregates (count, sum, mean, stddev) from packed tiles
    and the raw events of the window edges; ``fold`` gives one value per feature."""

    def __init__(self, layout: object) -> None:
        self.layout = layout
        stats = layout.stats  # type: ignore[attr-defined]
        self.positions = {i: p for p, i in enumerate(i for i, st in enumerate(stats) if st.kind in ADDITIVE)}
        self.width = len(self.positions)
        self._stat_pos = {st.name: self.positions[i] for i, st in enumerate(stats) if st.kind in ADDITIVE}
        # per column: the slots of its finite count and of the limbs of its sum and sum of squares
        pos = self._stat_pos
        self._exact: dict[str, tuple[int, list[int], list[int]]] = {
            c: (pos.get(f"{c}.f", -1), [pos.get(f"{c}.{k}", -1) for k in F.SUM_LIMBS],
                [pos.get(f"{c}.{k}", -1) for k in F.SQUARE_LIMBS])
            for c in layout.columns  # type: ignore[attr-defined]
        }
        aggs = layout.view.aggregations  # type: ignore[attr-defined]
        windows = {int(a.window.total_seconds() * 1_000_000) for a in aggs}
        self._offsets = sorted({w % W.RAW_BUCKET for w in windows} - {0})  # windows not of whole raw buckets
        self._programs: dict[tuple[Any, ...], Program | None] = {}

    def program(self, features: Sequence[str], t: int, raw_tag: str) -> Program | None:
        """The packed read of ``features`` at ``t`` (epoch us), with raw bucket keys tagged
        ``raw_tag``; None unless every feature is a count, sum, mean or stddev of numbers.
        Cached per features and tile alignment: a read at another time of the same minute
        only moves the window bounds."""
        rb = W.RAW_BUCKET
        # a window's cover depends on where t and t - w fall among the raw buckets: for
        # w = q * rb + o, on the bucket of t - o and whether t - o is its first microsecond
        key = (tuple(features or ()), raw_tag, t // rb, t % rb == 0,
               *[((t - o) // rb, (t - o) % rb == 0) for o in self._offsets])
        if key in self._programs:
            return self._programs[key]
        plan = self.layout.plan(features, t, invertible=True)  # type: ignore[attr-defined]
        prog = None
        if self.layout.numeric and all(a.function in _ADDITIVE_FUNCTIONS for a in plan.aggregations):  # type: ignore
            prog = self._compile(plan, raw_tag)
        if len(self._programs) > 256:
            self._programs.clear()
        self._programs[key] = prog
        return prog

    def _compile(self, plan: Any, raw_tag: str) -> Program:
        """A plan's groups and buckets as keys, and which of the groups' tiles (laid end to
        end) each window sums, as a 0/1 matrix windows x tile rows."""
        covers = list(plan.covers.values())
        start: dict[tuple[int, int], int] = {}
        row = 0
        for cov in covers:
            for lv, lo, hi in cov.runs():
                per = W.GROUP[lv] // W.LEVELS[lv]
                for g in range(lo // per, hi // per + 1):
                    if (lv, g) not in start:
                        start[(lv, g)] = row
                        row += per
        select = np.zeros((len(covers), row))
        for i, cov in enumerate(covers):
            for lv, lo, hi in cov.runs():
                per = W.GROUP[lv] // W.LEVELS[lv]
                select[i, [start[(lv, t // per)] + t % per for t in range(lo, hi + 1)]] = 1.0
        place = {size: i for i, size in enumerate(plan.covers)}
        outputs = []
        for agg in plan.aggregations:
            c, f = agg.column, agg.function
            n, s, q = self._exact[c]
            outputs.append((place[int(agg.window.total_seconds() * 1_000_000)], f,
                            self._stat_pos[f"{c}.n"] if f == "count" else n, s, q if f == "stddev" else None,
                            agg.name, c))
        return Program(
            suffixes=tuple([f"p{lv}:{g}" for lv, g in start] + [f"{raw_tag}:{b}" for b in plan.raw_buckets]),
            groups=len(start),
            buckets=tuple(plan.raw_buckets),
            sizes=tuple(W.GROUP[lv] // W.LEVELS[lv] * self.width * 8 for lv, _ in start),
            select=select,
            windows=tuple(plan.covers),
            tiled=[c.aligned[0] for c in covers],
            span=np.array([c.end - c.start for c in covers] + [c.aligned[1] - c.aligned[0] for c in covers],
                          dtype="uint64")[:, None],
            outputs=tuple(outputs),
        )

    def fold(self, prog: Program, t: int, got: Sequence[bytes | None]) -> tuple[Any, ...] | None:
        """Feature values of one entity at ``t``, in the order of the program's features,
        from what its keys held (None when absent).

        One matrix product: windows x (tile rows, raw events) by the tiles' slot sums and
        the events' slot deltas (their ``d``, stored with them). A window's row holds 1 for
        its tiles, and per event +1 when it is in the window but not under the tiles, -1
        when it is under the tiles (an edge minute read whole) but not in the window.
        Every term is an integer-valued float64 and every sum stays below 2**53, so any
        order of additions gives the same exact sums. None where a value out of range
        (NaN limbs in a tile, ``functions.LIMB_NAN`` in a record) is read, inside the
        window or not: 0 x NaN would spread it to every window, and an edge tile may
        hold it outside the window, so the caller folds those cells window by window
        (``StateLayout.fold``)."""
        n = prog.groups
        tiles = np.frombuffer(b"".join([(d or b"").ljust(m, b"\0") for d, m in zip(got, prog.sizes)]),
                              dtype="<f8").reshape(-1, self.width)
        raw = b"".join([x for x in got[n:] if x])
        if raw:
            rec: Any = np.frombuffer(raw, dtype=self.layout._raw_dtype)  # type: ignore[attr-defined]
            # rows 0..k-1: each window's [t - w, t); rows k..2k-1: the part [a, b) its tiles hold
            # (a == b: none); each test one unsigned comparison of ts - lower bound with the length
            k = len(prog.windows)
            lower = np.array([t - w for w in prog.windows] + prog.tiled, dtype="int64").view("uint64")
            inside = (rec["ts"].view("uint64") - lower[:, None]) < prog.span
            v = np.concatenate((tiles, rec["d"]))
            sums = (np.concatenate((prog.select, inside[:k].astype("<f8") - inside[k:]), axis=1) @ v).tolist()
            if v[len(tiles):].min() == F.LIMB_NAN:
                return None
        else:
            sums = (prog.select @ tiles).tolist()
        if any(x != x for row in sums for x in row):
            return None
        out: list[Any] = []
        for row, f, ni, si, qi, name, column in prog.outputs:
            acc = sums[row]
            if f == "count":
                out.append(int(round(acc[ni])))
            else:
                out.append(E.finish(f, acc[ni], [acc[k] for k in si], None if qi is None else [acc[k] for k in qi],
                                    name, column))
        return tuple(out)

    def cells(self, level: int, group: int, tiles: Sequence[int], blob: bytes | None,
              stats: Sequence[int]) -> list[tuple[int, int, int, None, float]]:
        """The nonzero ``stats`` (layout stat indices) of ``tiles`` in one packed group, as
        cells ``(level, tile, stat, None, value)`` for ``StateLayout.fold``."""
        packed = np.frombuffer(blob or b"", dtype="<f8")
        first = group * (W.GROUP[level] // W.LEVELS[level])
        out = []
        for tl in tiles:
            for i in stats:
                k = (tl - first) * self.width + self.positions[i]
                if k < len(packed) and packed[k] != 0:
                    out.append((level, tl, i, None, float(packed[k])))
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
