"""Exact sums: the one definition of ``sum``, ``mean`` and ``stddev`` that the online
tiles, the offline SQL and the reference oracle all compute, bit for bit.

Float addition depends on its order, and tiles merged online add in another order
than DuckDB. So a sum is taken over exact integers instead: a finite value ``v``
(integers and booleans as float64) contributes ``X(v) = trunc(v * 2**52)`` (the
product is exact in float64, so is the truncation), ``S`` is the exact integer
sum of the window's ``X(v)``, and

* ``sum    = float(S) / 2**52`` (correctly rounded, then an exact division);
* ``mean   = sum / n`` with ``n`` the number of finite values, as float64;
* ``stddev = sqrt(max((qs - sum * sum / n) / (n - 1), 0))`` where ``qs`` is the
  same exact sum over the squares ``fl(v * v)`` (the IEEE product); null below
  two values.

Digits below ``2**-52`` are dropped, so a sum is exact to that absolute grain
whatever the order of additions. Nulls and non-finite values (NaN, +-inf) are
skipped by these three functions: they add nothing and are not counted in ``n``.
``|X|`` and ``|S|`` must stay below ``2**127`` (DuckDB's HUGEINT): values up to
about 3.8e22 for ``sum``/``mean``, 1.9e11 for ``stddev``; a window holding a
value beyond that gives an ``InputError`` naming the feature, on both paths.

Online there is no 128-bit integer, but integer-valued float64 numbers below
``2**53`` add exactly in any order. So ``X`` is kept as ``LIMBS`` signed base
``2**26`` digits ("limbs"), each an integer-valued float64 of magnitude below
``2**26``: a tile adds them limb by limb (exact for up to ``2**27`` values per
window), and a read turns the limb sums back into the Python int ``S``. An
out-of-range value is kept as NaN limbs, so the window's read raises the error
instead of returning a wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from quiver.errors import InputError

__all__ = ["LIMBS", "SCALE", "combine", "finish", "limbs", "out_of_range", "sql_template"]

SCALE = 2**52  # X(v) = trunc(v * SCALE)
LIMB_BITS = 26
LIMBS = 5  # 5 x 26 bits hold |X| < 2**127, the HUGEINT range
LIMIT = 2**127
_UNITS = [float(2 ** (LIMB_BITS * k)) for k in range(LIMBS)]
_INVERSE = [1.0 / u for u in _UNITS]  # powers of two: multiplying by them divides exactly


def limbs(x: np.ndarray, finite: np.ndarray | None = None) -> np.ndarray:
    """The limbs of ``X(x)`` per value, shape ``(LIMBS, len(x))``: 0 where ``finite``
    (by default ``isfinite(x)``) is false, NaN where ``x`` is out of range."""
    x = np.asarray(x, dtype="float64")
    out = np.zeros((LIMBS, len(x)), dtype="float64")
    if not len(x):
        return out
    with np.errstate(invalid="ignore", over="ignore"):
        r = x * float(SCALE)  # exact: a power of two
        top = float(np.abs(r).max())  # NaN when a value is NaN
        clean = top < float(LIMIT) and (finite is None or bool(finite.all()))  # the usual case: every value in
        if not clean:
            ok = np.isfinite(x) if finite is None else finite
            fits = np.abs(r) < float(LIMIT)  # false for NaN and inf too
            r = np.where(fits & ok, r, 0.0)
            top = float(np.abs(r).max())
        for k in range(LIMBS - 1, 0, -1):  # each step exact: products by powers of two, truncations, differences
            if top < _UNITS[k]:
                continue  # every limb k is 0 (most values need 3 limbs)
            d = out[k]
            np.multiply(r, _INVERSE[k], out=d)
            np.trunc(d, out=d)
            r -= d * _UNITS[k]
        np.trunc(r, out=out[0])
    if not clean:
        out[:, ok & ~fits] = np.nan
    return out


def combine(sums: Sequence[float]) -> int | None:
    """The exact integer from limb sums (each an integer-valued float64 below 2**53);
    None when a limb is NaN (an out-of-range value) or the total leaves the range."""
    total = 0
    for k, s in enumerate(sums):
        if s != s:  # NaN
            return None
        total += int(s) << (LIMB_BITS * k)
    return total if -LIMIT < total < LIMIT else None


def out_of_range(feature: str, column: str) -> InputError:
    return InputError(
        f"feature {feature!r}: a value of column {column!r} in the window is too large for an exact sum "
        f"(|value| must stay below 3.8e22 for sum and mean, 1.9e11 for stddev, and so must the window's total); "
        f"scale the column down (e.g. to thousands) or use min/max"
    )


def finish(function: str, n: float, s: Sequence[float], q: Sequence[float] | None, feature: str,
           column: str) -> float | None:
    """``sum``, ``mean`` or ``stddev`` from the finite count ``n`` and the limb sums of
    the values ``s`` and of their squares ``q``; None for an empty window."""
    if n < (2 if function == "stddev" else 1):
        return None
    big = combine(s)
    if big is None:
        raise out_of_range(feature, column)
    sf = float(big) / SCALE
    if function == "sum":
        return sf
    m = float(n)
    if function == "mean":
        return sf / m
    qbig = None if q is None else combine(q)
    if qbig is None:
        raise out_of_range(feature, column)
    qf = float(qbig) / SCALE
    var = (qf - sf * sf / m) / (m - 1.0)
    return math.sqrt(var) if var > 0 else 0.0


# -- SQL (DuckDB) ------------------------------------------------------------------------
# Templates with {c} (the column), {w} (the rows' filter condition) and {err} (an SQL
# string literal: the error message). The same operations in the same order as above.

_K = "CAST(4503599627370496 AS DOUBLE)"  # 2**52
_D = "CAST({c} AS DOUBLE)"


def _exact_sql(x: str) -> str:
    """``X`` of the DOUBLE expression ``x`` as a HUGEINT, or the error when out of range
    (for a finite value: the FILTER may not keep DuckDB from evaluating the others)."""
    y = f"({x}) * {_K}"
    return (f"CASE WHEN abs({y}) < {float(LIMIT)!r} THEN CAST(trunc({y}) AS HUGEINT) "
            f"WHEN isfinite({_D}) THEN error({{err}}) END")


_FINITE = f"({{w}}) AND isfinite({_D})"
_N = f"CAST(count(*) FILTER (WHERE {_FINITE}) AS DOUBLE)"
_S = f"(CAST(sum({_exact_sql(_D)}) FILTER (WHERE {_FINITE}) AS DOUBLE) / {_K})"
_Q = f"(CAST(sum({_exact_sql(f'{_D} * {_D}')}) FILTER (WHERE {_FINITE}) AS DOUBLE) / {_K})"
_VAR = f"(({_Q} - {_S} * {_S} / {_N}) / ({_N} - 1))"

_SQL = {
    "sum": _S,
    "mean": f"({_S} / {_N})",
    "stddev": f"CASE WHEN {_N} > 1 THEN sqrt(CASE WHEN {_VAR} > 0 THEN {_VAR} ELSE CAST(0 AS DOUBLE) END) END",
}


def sql_template(function: str) -> str:
    """The DuckDB template of ``sum``, ``mean`` or ``stddev`` (placeholders {c}, {w}, {err})."""
    return _SQL[function]
