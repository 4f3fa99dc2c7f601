"""The DuckDB training-set path against the brute-force oracle, on adversarial data.

Ties on event time, equal created times on different events, rows exactly on
``t - ttl`` and one microsecond before, rows exactly at ``t``, nulls in the
chosen row, duplicate and unknown entity rows, composite string keys that
collide when concatenated, entity frames in other time zones, empty views and
empty windows. Each case runs cold (raw files), then warm (compacted
history), then after a source file is added and another replaced.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quiver.testing.reference import point_in_time, window_aggregate
from tests.offline.harness import (
    AGGS,
    SEC,
    TS,
    as_reference_rows,
    at,
    compact_all,
    engine,
    make_views,
    training_set,
    write_rows,
)

SNAP_REFS = ["snap:value", "snap:label", "pairs:score"]
AGG_REFS = [f"agg:{a.name}" for a in AGGS]
KEYS = ["1", "12", "23", "3", ""]

ts_us = st.builds(lambda s, d: s * SEC + d, st.integers(0, 12), st.sampled_from([0, 0, 0, -1, 1]))
created_us = st.integers(0, 16).map(lambda s: s * SEC)
maybe_float = st.one_of(st.none(), st.integers(-5, 5).map(float),
                        st.sampled_from([0.1, 0.2, 1 / 3, -2.5e-9, 1e9 + 0.5]))


def unique(rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """Drop rows that repeat (keys, event time, created time): the rules leave such ties open."""
    seen, out = set(), []
    for r in rows:
        k = tuple(r[c] for c in keys) + (r["ts"], r["created"])
        if k not in seen:
            seen.add(k)
            out.append(r)
    return out


snap_rows = st.lists(st.fixed_dictionaries({
    "uid": st.integers(0, 3), "ts": ts_us, "created": created_us, "value": maybe_float,
    "label": st.one_of(st.none(), st.sampled_from(["a", "b"])),
}), max_size=14).map(lambda rs: unique(rs, ["uid"]))
pair_rows = st.lists(st.fixed_dictionaries({
    "k1": st.sampled_from(KEYS), "k2": st.sampled_from(KEYS), "ts": ts_us, "created": created_us, "score": maybe_float,
}), max_size=10).map(lambda rs: unique(rs, ["k1", "k2"]))
event_rows = st.lists(st.fixed_dictionaries({
    "uid": st.integers(0, 3), "ts": ts_us, "created": created_us, "amount": maybe_float,
}), max_size=16).map(lambda rs: unique(rs, ["uid"]))
entity_rows = st.lists(st.fixed_dictionaries({
    "uid": st.integers(0, 5), "k1": st.sampled_from(KEYS), "k2": st.sampled_from(KEYS),
    "ts": st.builds(lambda s, d: s * SEC + d, st.integers(0, 14), st.sampled_from([0, 0, -1, 1])),
    "payload": st.integers(-3, 3),
}), min_size=1, max_size=10)
zones = st.sampled_from([None, "UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"])


def entity_table(rows: list[dict[str, Any]], zone: str | None) -> pa.Table:
    ts = pa.array([at(r["ts"]) for r in rows], TS)
    ts = ts.cast(pa.timestamp("us")) if zone is None else ts.cast(pa.timestamp("us", tz=zone))
    return pa.table({
        "uid": pa.array([r["uid"] for r in rows], pa.int64()),
        "k1": [r["k1"] for r in rows], "k2": [r["k2"] for r in rows],
        "event_timestamp": ts, "payload": pa.array([r["payload"] for r in rows], pa.int64()),
    })


def expected(views: Any, ents: list[dict[str, Any]], snaps: list, pairs: list, events: list, as_known: bool) -> list[dict]:
    e = [{**r, "event_timestamp": at(r["ts"])} for r in ents]
    a = point_in_time(e, as_reference_rows(snaps), ["uid"], ["value", "label"], views["snap"].ttl, as_known=as_known)
    b = point_in_time(e, as_reference_rows(pairs), ["k1", "k2"], ["score"], None, as_known=as_known)
    aggs = [(x.column, x.function, x.window, x.name) for x in AGGS]
    c = window_aggregate(e, as_reference_rows(events), ["uid"], aggs, as_known=as_known)
    return [{**x, **y, **z} for x, y, z in zip(a, b, c, strict=True)]


def same(got: Any, want: Any) -> bool:
    return bool(got == want)  # exactly: sum, mean and stddev are exact sums, in any order


def assert_same(a: pa.Table, b: pa.Table) -> None:
    """Cold and warm results agree exactly, float aggregates included (exact sums do not
    depend on the order the engine adds values in)."""
    assert a.schema == b.schema and a.num_rows == b.num_rows
    for name in a.column_names:
        x, y = a[name].to_pylist(), b[name].to_pylist()
        assert x == y, (name, x, y)


def check(table: pa.Table, ents: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    assert table.num_rows == len(ents)
    assert table.schema.field("event_timestamp").type == TS
    got = table.to_pylist()
    for i, (g, w, e) in enumerate(zip(got, want, ents, strict=True)):
        assert (g["uid"], g["k1"], g["k2"], g["payload"]) == (e["uid"], e["k1"], e["k2"], e["payload"]), i
        assert g["event_timestamp"] == at(e["ts"]), i
        for name, value in w.items():
            if name not in g:
                continue
            assert same(g[name], value), (i, name, g[name], value, e)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snap_rows, pair_rows, event_rows, entity_rows, zones, st.booleans())
def test_engine_matches_reference(snaps, pairs, events, ents, zone, as_known) -> None:
    views = make_views()
    refs = SNAP_REFS + AGG_REFS
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        eng = engine(root)
        try:
            write_rows(root, "snap", snaps)
            write_rows(root, "pairs", pairs)
            write_rows(root, "events", events)
            frame = entity_table(ents, zone)
            want = expected(views, ents, snaps, pairs, events, as_known)
            cold = training_set(eng, views, refs, frame, as_known=as_known)
            check(cold, ents, want)
            compact_all(eng, views)
            warm = training_set(eng, views, refs, frame, as_known=as_known)
            assert_same(warm, cold)
        finally:
            eng.close()


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snap_rows, snap_rows, event_rows, event_rows, entity_rows)
def test_added_and_replaced_files_are_seen(snaps, more_snaps, events, more_events, ents) -> None:
    """A compacted history never serves stale data: a new file, then a rewritten one."""
    views = make_views()
    refs = ["snap:value", "snap:label"] + AGG_REFS
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        eng = engine(root)
        try:
            write_rows(root, "snap", snaps)
            write_rows(root, "pairs", [])
            write_rows(root, "events", events)
            compact_all(eng, views)
            frame = entity_table(ents, "UTC")
            write_rows(root, "snap", more_snaps, part="part-1")  # a new file in the folder
            write_rows(root, "events", more_events, part="part-1")
            allsnaps = unique(snaps + more_snaps, ["uid"])
            allevents = events + more_events
            if len(allsnaps) == len(snaps) + len(more_snaps) and not _dup_events(allevents):
                check(training_set(eng, views, refs, frame), ents, expected(views, ents, allsnaps, [], allevents, False))
                compact_all(eng, views)
                check(training_set(eng, views, refs, frame), ents, expected(views, ents, allsnaps, [], allevents, False))
            write_rows(root, "snap", more_snaps[:1], part="part-0")  # an existing file rewritten
            write_rows(root, "events", [], part="part-0")
            want = expected(views, ents, more_snaps, [], more_events, False)
            cold = training_set(eng, views, refs, frame)
            check(cold, ents, want)
            compact_all(eng, views)
            assert_same(training_set(eng, views, refs, frame), cold)
        finally:
            eng.close()


def _dup_events(rows: list[dict[str, Any]]) -> bool:
    return len(unique(rows, ["uid"])) != len(rows)
