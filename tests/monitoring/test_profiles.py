"""Profiles against a brute-force reference, drift statistics' properties, the CLI."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver.cli import cli
from quiver.monitoring import drift
from quiver.monitoring.tables import ViewData
from quiver.store import FeatureStore

values = st.lists(st.one_of(st.none(), st.integers(-50, 50).map(float)), min_size=1, max_size=80)


def _data(con: duckdb.DuckDBPyConnection, ref: list[float | None], cur: list[float | None]) -> ViewData:
    t = pa.table({"x": pa.array(ref + cur, pa.float64()), "w": pa.array([0] * len(ref) + [1] * len(cur))})
    con.register("t", t)
    return ViewData(None, "t", "w", {"x": "x"}, {"x": pa.float64()}, {}, [], [])  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(values, values)
def test_profile_matches_brute_force(ref: list[float | None], cur: list[float | None]) -> None:
    con = duckdb.connect()
    data = _data(con, ref, cur)
    r = drift.profile(con, data, None, 1)["x"]  # window column w: 0 = reference
    c = drift.profile(con, data, 1, None, {"x": r})["x"]
    for prof, xs in ((r, ref), (c, cur)):
        nn = [x for x in xs if x is not None]
        assert prof["count"] == len(xs) and prof["nulls"] == len(xs) - len(nn)
        if nn:
            assert prof["mean"] == pytest.approx(np.mean(nn)) and prof["min"] == min(nn) and prof["max"] == max(nn)
    # histograms on the reference's edges, bins (e_i-1, e_i]: counted by hand
    edges = r["edges"]
    for prof, xs in ((r, ref), (c, cur)):
        nn = [x for x in xs if x is not None]
        want = [sum(1 for x in nn if (i == 0 or x > edges[i - 1]) and (i == len(edges) or x <= edges[i]))
                for i in range(len(edges) + 1)]
        assert prof["hist"] == want
    # KS at the edges never exceeds the exact two-sample statistic
    rn, cn = [x for x in ref if x is not None], [x for x in cur if x is not None]
    if rn and cn:
        grid = sorted(set(rn + cn))
        exact = max(abs(sum(x <= g for x in rn) / len(rn) - sum(x <= g for x in cn) / len(cn)) for g in grid)
        assert drift.compare(r, c)["ks"] <= exact + 1e-12
        assert drift.compare(r, r)["psi"] == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e6, 1e6), st.integers(-5, 5).map(float)), min_size=1, max_size=200))
def test_reference_percentiles_are_duckdb_quantile_cont(xs: list[float]) -> None:
    """A reference's percentiles come from NumPy: they must be what DuckDB's exact quantile_cont gives."""
    got = drift._percentiles(np.array(xs, dtype=np.float64), drift.PERCENTILES)
    con = duckdb.connect()
    con.register("t", pa.table({"x": pa.array(xs, pa.float64())}))
    (want,) = con.execute(f"SELECT quantile_cont(x, {list(drift.PERCENTILES)}) FROM t").fetchall()[0]
    assert got == pytest.approx(want, rel=1e-12, abs=1e-9)


@given(st.lists(st.integers(0, 1000), min_size=3, max_size=12), st.lists(st.integers(0, 1000), min_size=3, max_size=12))
def test_psi_and_js_properties(a: list[int], b: list[int]) -> None:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    if sum(a) and sum(b):
        assert drift.psi(a, b) >= -1e-12 and drift.psi(a, a) == pytest.approx(0.0, abs=1e-12)
        assert -1e-12 <= drift.js(a, b) <= 1 + 1e-12 and drift.js(a, b) == pytest.approx(drift.js(b, a))


def test_cli_exit_codes_history_and_pinned_reference(mon_repo: Path, mon_now: datetime) -> None:
    with FeatureStore(mon_repo) as s:
        s.apply()
        s.materialize(mon_now - timedelta(days=9), mon_now)
    runner = CliRunner()
    ok = runner.invoke(cli, ["-r", str(mon_repo), "monitor", "--json", "--now", mon_now.isoformat()])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["ok"] is True
    late = (mon_now + timedelta(days=3)).isoformat()  # nothing new for three days: every SLA missed
    bad = runner.invoke(cli, ["-r", str(mon_repo), "monitor", "--views", "stats", "--now", late])
    assert bad.exit_code == 1 and "freshness_offline" in bad.output
    hist = runner.invoke(cli, ["-r", str(mon_repo), "monitor", "history", "stats", "--json"])
    assert hist.exit_code == 0
    assert [h["status"] for h in json.loads(hist.output)["checks"][":freshness_offline"]] == ["ok", "failing"]
    unknown = runner.invoke(cli, ["-r", str(mon_repo), "monitor", "history", "stats:rsk"])
    assert unknown.exit_code == 1 and "risk" in unknown.output
    # a pinned reference: the first day only; the profile is compared with it from now on
    start = (mon_now - timedelta(days=8)).isoformat()
    end = (mon_now - timedelta(days=7)).isoformat()
    pin = runner.invoke(cli, ["-r", str(mon_repo), "monitor", "pin", "profile", "--start", start, "--end", end])
    assert pin.exit_code == 0, pin.output
    with FeatureStore(mon_repo) as s:
        run = s.monitor(["profile"], now=mon_now)
        assert run.ok
        ref = s.monitor_history("profile:a")["profile"]["reference"]
        assert ref["count"] == 300  # one day of 300 users
    skew = runner.invoke(cli, ["-r", str(mon_repo), "monitor", "skew", "--json"])
    assert skew.exit_code == 0 and json.loads(skew.output)["rows"] == 0
