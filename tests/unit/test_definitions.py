"""Every definition validates itself when built, and its error names the object."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quiver import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    KafkaSource,
    OnDemandFeatureView,
    PushSource,
    RequestSource,
    types,
)
from quiver.definitions import FeatureRef
from quiver.definitions.aggregation import FUNCTIONS
from quiver.definitions.loader import load_repo
from quiver.errors import DefinitionError, InputError, QuiverError, RepoLoadError, UnknownTypeError
from quiver.plan.diff import make_plan

user = Entity(name="user", join_keys=["user_id"])
src = FileSource(path="data/p.parquet", timestamp_field="event_timestamp")


def view(**kw: object) -> FeatureView:
    args: dict[str, object] = {"name": "profile", "entities": [user], "source": src,
                               "schema": [Field("credit_limit", types.Float64)]}
    args.update(kw)
    return FeatureView(**args)  # type: ignore[arg-type]


# -- the happy path ---------------------------------------------------------------------


def test_snapshot_view_holds_what_it_was_given() -> None:
    v = view(ttl=timedelta(days=2), owner="risk@x", description="d", tags={"team": "risk"},
             freshness_sla="1d")
    assert v.feature_names == ["credit_limit"]
    assert v.join_keys == ["user_id"]
    assert v.ttl == timedelta(days=2) and v.freshness_sla == timedelta(days=1)
    assert not v.is_aggregate
    spec = v.to_spec()
    assert spec["owner"] == "risk@x" and spec["tags"] == {"team": "risk"} and spec["ttl"] == 172800
    assert FeatureView.from_spec(spec) == v


def test_aggregate_view_names_its_features() -> None:
    tx = KafkaSource(name="transactions", topic="tx", batch_source=FileSource(path="data/tx.parquet"))
    v = FeatureView(name="user_tx", entities=[user], source=tx, aggregations=[
        Aggregation("amount", "sum", window=timedelta(minutes=10)),
        Aggregation("tx_id", "count", window=timedelta(hours=1)),
        Aggregation("amount", "mean", window="7d", name="avg_week"),
    ])
    assert v.feature_names == ["amount_sum_10m", "tx_id_count_1h", "avg_week"]
    assert [f.dtype for f in v.features] == [types.Float64, types.Int64, types.Float64]
    assert v.is_aggregate and v.max_window == timedelta(days=7)
    assert v.source.batch is tx.batch_source
    assert FeatureView.from_spec(v.to_spec()) == v


def test_definitions_are_frozen() -> None:
    v = view()
    with pytest.raises(AttributeError, match="frozen"):
        v.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Field("a", types.Int64).name = "b"  # type: ignore[misc]


def test_metadata_is_not_part_of_the_version() -> None:
    a, b = view(owner="a", description="x", tags={"t": "1"}), view(owner="b", description="y")
    assert a.version_hash == b.version_hash
    assert view(ttl="1d").version_hash != view(ttl="2d").version_hash
    # nor is the metadata of the sources a view reads
    def kafka(desc: str) -> KafkaSource:
        return KafkaSource(name="tx", topic="tx", description=desc,
                           batch_source=FileSource(path="data/tx.parquet", description=desc))

    assert view(source=kafka("a")).version_hash == view(source=kafka("b")).version_hash
    assert view(source=kafka("a")).version_hash != view(source=FileSource(path="data/tx.parquet")).version_hash


def test_feature_service_expands_views_and_projections() -> None:
    v = view(schema=[Field("a", types.Int64), Field("b", types.String)])
    svc = FeatureService("model", features=[v[["b"]], "other@2:x"])
    assert svc.features == ("profile:b", "other@2:x")
    assert FeatureService("m2", features=[v]).features == ("profile:a", "profile:b")


def test_sources_round_trip() -> None:
    push = PushSource(name="clicks", batch_source=FileSource(path="data/c.parquet"), schema=[Field("n", types.Int64)])
    req = RequestSource(name="req", schema=[Field("amount", types.Float64)])
    assert push.batch is push.batch_source and req.batch is None
    fs = FileSource(path="data/user_profile.parquet", created_timestamp_column="created", field_mapping={"a": "b"})
    assert fs.name == "user_profile" and fs.field_mapping == {"a": "b"}


def test_on_demand_view_declares_inputs_and_output() -> None:
    v = view(schema=[Field("avg", types.Float64)])
    req = RequestSource(name="tx", schema=[Field("amount", types.Float64)])

    def ratio(row: dict) -> dict:  # type: ignore[type-arg]
        return {"ratio": row["amount"] / row["avg"]}

    odfv = OnDemandFeatureView("ratio_view", sources=[req, v], schema=[Field("ratio", types.Float64)], udf=ratio)
    assert odfv.input_refs() == ["profile:avg"]
    assert odfv.feature_names == ["ratio"]
    assert "def ratio" in odfv.to_spec()["udf_source"]


def test_feature_refs_parse_and_pin() -> None:
    assert FeatureRef.parse("user_profile@2:credit_limit") == FeatureRef("user_profile", "credit_limit", 2)
    assert str(FeatureRef.parse(" v:f ")) == "v:f"
    with pytest.raises(InputError, match="view:feature"):
        FeatureRef.parse("no_colon")


# -- every error names the object ---------------------------------------------------------

BAD = [
    # (builder, error type, words the message must hold)
    (lambda: view(schema=[Field("a", types.Int64), Field("a", types.String)]), DefinitionError,
     ["'profile'", "duplicate", "'a'"]),
    (lambda: view(schema=None, aggregations=[Aggregation("x", "sum", "1h"), Aggregation("x", "sum", "60m")]),
     DefinitionError, ["'profile'", "duplicate", "x_sum_1h"]),
    (lambda: Field("credit", "Flaot64"), UnknownTypeError, ["'credit'", "Flaot64", "Float64"]),
    (lambda: Field("credit", float), UnknownTypeError, ["'credit'"]),
    (lambda: Aggregation("amount", "summ", "10m"), DefinitionError, ["amount", "summ", "'sum'"]),
    (lambda: Aggregation("amount", "count", "10m", dtype="Float64"), DefinitionError, ["amount", "Int64"]),
    (lambda: Aggregation("amount", "sum", timedelta(0)), DefinitionError, ["amount", "window", "positive"]),
    (lambda: Aggregation("amount", "sum", "-5m"), DefinitionError, ["amount", "window"]),
    (lambda: Aggregation("amount", "sum", None), DefinitionError, ["amount", "window"]),  # type: ignore[arg-type]
    (lambda: view(ttl=timedelta(seconds=-1)), DefinitionError, ["'profile'", "ttl", "positive"]),
    (lambda: view(ttl="soon"), DefinitionError, ["'profile'", "ttl"]),
    (lambda: view(freshness_sla=timedelta(0)), DefinitionError, ["'profile'", "freshness_sla"]),
    (lambda: view(name="user profile"), DefinitionError, ["'user profile'", "identifier"]),
    (lambda: view(name="1st"), DefinitionError, ["'1st'", "identifier"]),
    (lambda: view(name="café"), DefinitionError, ["'café'", "identifier"]),
    (lambda: Field("credit-limit", types.Float64), DefinitionError, ["'credit-limit'", "identifier"]),
    (lambda: Entity(name="user", join_keys=["user id"]), DefinitionError, ["'user'", "'user id'"]),
    (lambda: Entity(name="user", join_keys="user_id"), DefinitionError, ["'user'", "list"]),  # type: ignore[arg-type]
    (lambda: Entity(name="user", join_keys=[]), DefinitionError, ["'user'", "join key"]),
    (lambda: Entity(name="user", join_keys=["a", "a"]), DefinitionError, ["'user'", "duplicate"]),
    (lambda: Entity(name="user", join_keys=["a"], dtypes={"a": "Int65"}), UnknownTypeError, ["'user'", "Int65"]),
    (lambda: Entity(name="user", join_keys=["a"], dtypes={"b": "Int64"}), DefinitionError, ["'user'", "'b'"]),
    (lambda: view(entities=[]), DefinitionError, ["'profile'", "entity"]),
    (lambda: view(entities=["user"]), DefinitionError, ["'profile'", "Entity"]),
    (lambda: view(source=RequestSource("r", [Field("a", types.Int64)])), DefinitionError, ["'profile'", "source"]),
    (lambda: view(schema=None), DefinitionError, ["'profile'", "schema"]),
    (lambda: view(aggregations=[Aggregation("a", "sum", "1h")]), DefinitionError, ["'profile'", "not both"]),
    (lambda: view(schema=[Field("user_id", types.Int64)]), DefinitionError, ["'profile'", "join key"]),
    (lambda: view(schema=Field("a", types.Int64)), DefinitionError, ["'profile'", "list"]),
    (lambda: view(tags={"team": 1}), DefinitionError, ["'profile'", "tags"]),
    (lambda: view(owner=None), DefinitionError, ["'profile'", "owner"]),  # type: ignore[arg-type]
    (lambda: FileSource(path=""), DefinitionError, ["FileSource", "path"]),
    (lambda: FileSource(path="p.parquet", name="my src"), DefinitionError, ["'my src'", "identifier"]),
    (lambda: FileSource(path="p.parquet", timestamp_field=""), DefinitionError, ["FileSource 'p'", "timestamp_field"]),
    (lambda: FileSource(path="p.parquet", field_mapping={"a": 1}), DefinitionError, ["FileSource 'p'", "field_mapping"]),
    (lambda: KafkaSource(name="tx", topic=""), DefinitionError, ["'tx'", "topic"]),
    (lambda: KafkaSource(name="tx", topic="t", message_format="avro"), DefinitionError, ["'tx'", "avro"]),
    (lambda: KafkaSource(name="tx", topic="t", batch_source="x.parquet"), DefinitionError, ["'tx'", "batch_source"]),  # type: ignore[arg-type]
    (lambda: PushSource(name="p", schema=[Field("a", types.Int64), Field("a", types.Int64)]), DefinitionError,
     ["'p'", "duplicate"]),
    (lambda: RequestSource(name="req", schema=[]), DefinitionError, ["'req'", "schema"]),
    (lambda: FeatureService("svc", features=[]), DefinitionError, ["'svc'", "no features"]),
    (lambda: FeatureService("svc", features=["bad ref"]), DefinitionError, ["'svc'", "bad ref"]),
    (lambda: FeatureService("svc", features=[42]), DefinitionError, ["'svc'", "42"]),
    (lambda: FeatureService("svc", features=["v:a", "v:a"]), DefinitionError, ["'svc'", "more than once"]),
    (lambda: view()[["nope"]], DefinitionError, ["'profile'", "'nope'"]),
    (lambda: OnDemandFeatureView("o", sources=[], schema=[Field("x", types.Int64)], udf=lambda r: r),
     DefinitionError, ["'o'", "sources"]),
    (lambda: OnDemandFeatureView("o", sources=[src], schema=[Field("x", types.Int64)], udf=lambda r: r),
     DefinitionError, ["'o'", "input"]),
    (lambda: OnDemandFeatureView("o", sources=[RequestSource("r", [Field("a", types.Int64)])], schema=[],
                                 udf=lambda r: r), DefinitionError, ["'o'", "schema"]),
    (lambda: OnDemandFeatureView("o", sources=[RequestSource("r", [Field("a", types.Int64)])],
                                 schema=[Field("x", types.Int64)], udf=lambda r: r, mode="spark"),
     DefinitionError, ["'o'", "mode"]),
]


@pytest.mark.parametrize(("build", "error", "words"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_invalid_definitions_raise_a_named_error(build, error, words) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error) as info:
        build()
    assert isinstance(info.value, QuiverError) and isinstance(info.value, ValueError)
    for w in words:
        assert w in str(info.value), f"{w!r} not in {str(info.value)!r}"


# -- the repository loader ----------------------------------------------------------------

DEFS = """
from datetime import timedelta
from quiver import Entity, FeatureView, Field, FileSource, types
user = Entity(name="user", join_keys=["user_id"])
profile = FeatureView(name="profile", entities=[user], source=FileSource(path="data/p.parquet"),
                      schema=[Field("{feature}", types.Float64)])
"""


def test_loader_collects_definitions_and_reloads_fresh(tmp_path: Path) -> None:
    (tmp_path / "defs.py").write_text(DEFS.format(feature="a"))
    (tmp_path / "_private.py").write_text("raise SystemExit('must not be imported')")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "gen.py").write_text("raise SystemExit('must not be imported')")
    got = load_repo(tmp_path)
    assert list(got.feature_views) == ["profile"] and list(got.entities) == ["user"]
    (tmp_path / "defs.py").write_text(DEFS.format(feature="b"))
    assert load_repo(tmp_path).feature_views["profile"].feature_names == ["b"]


def test_loader_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import nonexistent_module_xyz\n")
    with pytest.raises(RepoLoadError, match="broken.py"):
        load_repo(tmp_path)
    (tmp_path / "broken.py").write_text("from quiver import Field\nf = Field('x', 'Nope')\n")
    with pytest.raises(UnknownTypeError, match=r"broken.py: field 'x'"):
        load_repo(tmp_path)


def test_loader_rejects_two_objects_with_one_name(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text(DEFS.format(feature="a"))
    (tmp_path / "b.py").write_text(DEFS.format(feature="b"))
    with pytest.raises(DefinitionError, match=r"a.py \(profile\).*b.py \(profile\)"):
        load_repo(tmp_path)


# -- properties: specs round-trip, and the plan's verdict matches a direct comparison ------


names = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
dtypes = st.sampled_from([*types.PRIMITIVES.values(), types.Array(types.Int64)])
windows = st.integers(1, 10_000).map(lambda s: timedelta(seconds=s))


@st.composite
def views(draw: st.DrawFn) -> FeatureView:
    meta = {"owner": draw(st.sampled_from(["", "a@x", "b@x"])), "description": draw(st.sampled_from(["", "d"])),
            "tags": draw(st.dictionaries(st.sampled_from(["team", "tier"]), st.sampled_from(["1", "2"])))}
    ttl = draw(st.none() | windows)
    if draw(st.booleans()):
        feats = draw(st.lists(names.filter(lambda n: n != "user_id"), min_size=1, max_size=4, unique=True))
        return FeatureView(name="v", entities=[user], source=src, ttl=ttl,
                           schema=[Field(n, draw(dtypes)) for n in feats], **meta)
    aggs = draw(st.lists(st.tuples(names, st.sampled_from(FUNCTIONS), windows), min_size=1, max_size=4,
                         unique_by=lambda a: (a[0], a[1], a[2])))
    return FeatureView(name="v", entities=[user], source=src, ttl=ttl,
                       aggregations=[Aggregation(c, f, w) for c, f, w in aggs], **meta)


@settings(max_examples=60, deadline=None)
@given(views())
def test_spec_round_trips(v: FeatureView) -> None:
    again = FeatureView.from_spec(v.to_spec())
    assert again == v and again.version_hash == v.version_hash and again.features == v.features


@settings(max_examples=80, deadline=None)
@given(views(), views())
def test_plan_verdict_matches_the_specs(old: FeatureView, new: FeatureView) -> None:
    import json

    stored = json.loads(json.dumps(old.to_spec()))  # as the registry hands it back
    (change,) = make_plan(7, {("feature_view", "v"): (3, stored)}, [new]).changes
    core = {k: v for k, v in new.to_spec().items() if k not in ("owner", "description", "tags")}
    old_core = {k: v for k, v in old.to_spec().items() if k not in ("owner", "description", "tags")}
    if new.to_spec() == old.to_spec():
        assert change.action == "unchanged" and change.diff == {}
    elif core == old_core:
        assert change.action == "update_metadata" and change.new_version == 3
    else:
        assert change.action == "new_version" and change.new_version == 4 and change.diff
    for path, (a, b) in change.diff.items():
        assert a != b, path
