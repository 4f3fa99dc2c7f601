"""Profiles of feature values and the drift between two of them.

A profile is computed by the offline engine's DuckDB in one scan of a time
window for all monitored columns of a view: count, nulls, mean, std, min,
max, quantiles and a histogram for numbers; the counts of the top values for
strings and booleans. Histograms use the bin edges of the reference profile
(its percentiles), so the current window needs one pass. A reference needs
two and is computed once per window: the statistics in DuckDB, then its
numeric columns fetched once as Arrow for the 99 exact percentiles (NumPy
``partition`` at the 99 ranks: one selection per column, about 5x faster here
than DuckDB's ``quantile_cont`` with a list of 99) and the exact histogram
counts on those edges.

Drift: the population stability index (on the reference's deciles) and the
Kolmogorov-Smirnov statistic (the largest gap between the two cumulative
distributions at the reference's percentiles: exact at those points, a lower
bound of the exact statistic) for numbers; PSI and the Jensen-Shannon
divergence (base 2, in [0, 1]) over the reference's top values for categories.
"""

from __future__ import annotations

import math
from datetime import datetime
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from quiver.monitoring.tables import ViewData, quote, sql_list

__all__ = ["REPORT_QUANTILES", "profile", "compare", "psi", "ks", "js", "kind_of", "coarsen", "TOP_K", "OTHER"]

REPORT_QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
PERCENTILES = tuple(round(i / 100, 2) for i in range(1, 100))
DECILES = tuple(round(i / 10, 1) for i in range(1, 10))
TOP_K = 20
OTHER = "__other__"


def kind_of(t: pa.DataType) -> str | None:
    """``number``, ``category`` or None (not profiled: timestamps, lists, bytes)."""
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t) or pa.types.is_dictionary(t):
        return "category"
    return None


def _select(name: str, col: str, kind: str, i: int, ref: dict[str, Any] | None, quantiles: tuple[float, ...]) -> list[str]:
    c = quote(col)
    parts = [f"count({c}) AS nn_{i}"]
    if kind == "number":
        x = f"{c}::DOUBLE"
        parts += [f"avg({x}) AS mean_{i}", f"stddev_samp({x}) AS std_{i}", f"min({x}) AS min_{i}",
                  f"max({x}) AS max_{i}"]
        if quantiles:
            parts.append(f"quantile_cont({x}, {list(quantiles)}) AS q_{i}")
        if ref is not None and ref.get("edges"):
            parts.append(f"histogram({x}, {[float(e) for e in ref['edges']]}::DOUBLE[]) AS h_{i}")
    else:
        x = f"{c}::VARCHAR"
        if ref is not None and ref.get("top") is not None:
            cats = [v for v, _ in ref["top"]]
            expr = f"CASE WHEN {x} IN (SELECT unnest({sql_list(cats)})) THEN {x} WHEN {x} IS NOT NULL THEN '{OTHER}' END" \
                if cats else f"CASE WHEN {x} IS NOT NULL THEN '{OTHER}' END"
            parts.append(f"histogram({expr}) AS h_{i}")
        else:
            parts.append(f"histogram({x}) AS h_{i}")
    return parts


def profile(
    con: Any,
    data: ViewData,
    start: datetime | None,
    end: datetime | None,
    reference: dict[str, dict[str, Any]] | None = None,
    *,
    relation: str | None = None,
    timestamp: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Profile every monitored column of ``data`` over ``[start, end)`` of event time.

    With ``reference`` (profiles from an earlier call), histograms use its bins
    and the result can be compared with it; without, the result is a reference
    (exact percentiles as bin edges and its histogram on them, from a second
    scan that fetches the numeric columns).
    """
    cols = {n: c for n, c in data.columns.items() if kind_of(data.types[n])}
    kinds = {n: kind_of(data.types[n]) or "" for n in cols}
    relation = relation or data.relation
    ts = quote(timestamp or data.timestamp)
    where, params = [], []
    if start is not None:
        where.append(f"{ts} >= ?")
        params.append(start)
    if end is not None:
        where.append(f"{ts} < ?")
        params.append(end)
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    names = list(cols)
    is_ref = reference is None
    quantiles = () if is_ref else REPORT_QUANTILES  # a reference's come from _percentiles
    select = ["count(*) AS n"]
    for i, n in enumerate(names):
        select += _select(n, cols[n], kinds[n], i, (reference or {}).get(n), quantiles)
    row = _one(con, f"SELECT {', '.join(select)} FROM {relation}{cond}", params)
    n_rows = int(row["n"])
    numbers = [n for n in names if kinds[n] == "number"]
    values = _numbers(con, relation, {n: cols[n] for n in numbers}, cond, params) if is_ref and numbers else {}
    out: dict[str, dict[str, Any]] = {}
    for i, n in enumerate(names):
        nn = int(row[f"nn_{i}"] or 0)
        p: dict[str, Any] = {"kind": kinds[n], "count": n_rows, "nulls": n_rows - nn,
                             "null_rate": (n_rows - nn) / n_rows if n_rows else None}
        if kinds[n] == "number":
            q = _percentiles(values[n], PERCENTILES) if is_ref else (row[f"q_{i}"] or [])
            p.update(mean=row[f"mean_{i}"], std=row[f"std_{i}"], min=row[f"min_{i}"], max=row[f"max_{i}"])
            qmap = dict(zip(PERCENTILES if is_ref else quantiles, q, strict=False))
            p["quantiles"] = {f"p{round(k * 100):02d}": qmap.get(k) for k in REPORT_QUANTILES} if q else {}
            if is_ref:
                p["edges"] = sorted({float(v) for v in q if v is not None and math.isfinite(v)})
                p["decile_edges"] = sorted({float(qmap[k]) for k in DECILES if qmap.get(k) is not None})
                # bins (-inf, e0], (e0, e1], ..., (e_last, +inf): the first edge >= x (NaN sorts last)
                bins = np.searchsorted(np.asarray(p["edges"], dtype=np.float64), values[n], side="left")
                p["hist"] = np.bincount(bins, minlength=len(p["edges"]) + 1).tolist()
            else:
                ref = reference[n] if reference and n in reference else {}
                p["edges"], p["decile_edges"] = ref.get("edges", []), ref.get("decile_edges", [])
                p["hist"] = _hist_counts(row.get(f"h_{i}"), p["edges"], nn)
        else:
            counts = {str(k): int(v) for k, v in (row[f"h_{i}"] or {}).items()}
            if is_ref:
                top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_K]
                p["top"] = [[k, v] for k, v in top]
                p["other"] = nn - sum(v for _, v in top)
            else:
                ref_top = [v for v, _ in (reference or {}).get(n, {}).get("top", [])]
                p["top"] = [[k, counts.get(k, 0)] for k in ref_top]
                p["other"] = counts.get(OTHER, 0)
        out[n] = p
    return out


def _numbers(con: Any, relation: str, cols: dict[str, str], cond: str, params: list[Any]) -> dict[str, Any]:
    """The non-null values of numeric columns, as float64 NumPy arrays (one scan)."""
    sel = ", ".join(f"CAST({quote(c)} AS DOUBLE) AS {quote(n)}" for n, c in cols.items())
    table = con.sql(f"SELECT {sel} FROM {relation}{cond}", params=params or None).to_arrow_table()
    return {n: table.column(n).drop_null().to_numpy() for n in cols}


def _percentiles(values: Any, qs: tuple[float, ...]) -> list[float]:
    """Exact quantiles with linear interpolation between the closest ranks (what
    DuckDB's ``quantile_cont`` returns), from one ``partition`` at every rank needed."""
    n = len(values)
    if n == 0:
        return []
    pos = (n - 1) * np.asarray(qs, dtype=np.float64)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    part = np.partition(values, np.unique(np.concatenate([lo, hi])))
    a, b = part[lo], part[hi]
    with np.errstate(invalid="ignore"):
        return [float(x) for x in np.where(a == b, a, a + (pos - lo) * (b - a))]


def _one(con: Any, sql: str, params: list[Any]) -> dict[str, Any]:
    cur = con.execute(sql, params)
    cols = [d[0] for d in cur.description]
    (row,) = cur.fetchall()  # to the end, so the connection is free for the next query
    return dict(zip(cols, row, strict=True))


def _hist_counts(h: dict[float, int] | None, edges: list[float], nonnull: int) -> list[int]:
    """Counts of the bins (-inf, e0], (e0, e1], ..., (e_last, +inf)."""
    h = h or {}
    counts = [int(h.get(float(e), 0)) for e in edges]
    counts.append(max(0, nonnull - sum(counts)))
    return counts


# -- comparison -----------------------------------------------------------------


def _shares(counts: Sequence[float]) -> list[float]:
    """Shares with a half-count added to every bin, so an empty bin does not make PSI infinite."""
    total = sum(counts) + 0.5 * len(counts)
    return [(c + 0.5) / total for c in counts]


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    e, a = _shares(expected), _shares(actual)
    return float(sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a, strict=True)))


def js(expected: Sequence[float], actual: Sequence[float]) -> float:
    te, ta = sum(expected) or 1.0, sum(actual) or 1.0
    p, q = [x / te for x in expected], [x / ta for x in actual]
    m = [(x + y) / 2 for x, y in zip(p, q, strict=True)]

    def kl(x: list[float], y: list[float]) -> float:
        return sum(xi * math.log2(xi / yi) for xi, yi in zip(x, y, strict=True) if xi > 0)

    return float(0.5 * kl(p, m) + 0.5 * kl(q, m))


def ks(expected: Sequence[float], actual: Sequence[float]) -> float:
    te, ta = sum(expected), sum(actual)
    if not te or not ta:
        return 0.0
    ce = ca = gap = 0.0
    for x, y in zip(expected, actual, strict=True):
        ce, ca = ce + x / te, ca + y / ta
        gap = max(gap, abs(ce - ca))
    return gap


def coarsen(counts: list[int], edges: list[float], coarse: list[float]) -> list[int]:
    """Merge percentile bins into decile bins (decile edges are among the percentile edges)."""
    import bisect

    out = [0] * (len(coarse) + 1)
    for i, c in enumerate(counts):
        j = bisect.bisect_left(coarse, edges[i]) if i < len(edges) else len(coarse)
        out[j] += c
    return out


def compare(ref: dict[str, Any], cur: dict[str, Any]) -> dict[str, float]:
    """Drift statistics of ``cur`` against ``ref`` (both from ``profile``); empty when either has no values."""
    if ref.get("kind") != cur.get("kind"):
        return {}
    if cur["kind"] == "number":
        h_ref, h_cur = ref.get("hist") or [], cur.get("hist") or []
        if not sum(h_ref) or not sum(h_cur) or len(h_ref) != len(h_cur):
            return {}
        edges, dec = ref.get("edges", []), ref.get("decile_edges", [])
        return {"psi": psi(coarsen(h_ref, edges, dec), coarsen(h_cur, edges, dec)), "ks": ks(h_ref, h_cur)}
    e = [c for _, c in ref.get("top", [])] + [ref.get("other", 0)]
    a = [c for _, c in cur.get("top", [])] + [cur.get("other", 0)]
    if not sum(e) or not sum(a) or len(e) != len(a):
        return {}
    return {"psi": psi(e, a), "js": js(e, a)}
