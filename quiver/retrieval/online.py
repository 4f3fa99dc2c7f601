"""The online read path: resolve -> batched reads per view -> TTL -> statuses
-> on-demand views -> response.

``OnlineReader.get`` is what ``FeatureStore.get_online_features`` and the HTTP
server call. Everything that depends only on the feature list (views, columns
to read, output order, key types) is compiled once into an ``OnlinePlan`` and
cached until the registry changes, so a call does: check the key columns, one
``lookup`` on the store (one query per view, one Redis round trip), and a few
list comprehensions. No pandas or Arrow on that path unless an aggregate or
on-demand view needs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pyarrow as pa

from quiver import types
from quiver.definitions import FeatureView, OnDemandFeatureView
from quiver.errors import InputError, UnsupportedError
from quiver.plan.features import FeatureSelection
from quiver.retrieval.response import OnlineResponse

__all__ = ["OnlinePlan", "OnlineReader", "entity_columns"]


@dataclass
class _ViewRead:
    view: FeatureView
    features: list[str]  # read from the store: requested ones, then inputs of on-demand views
    key_index: list[int]  # positions of the view's join keys in OnlinePlan.join_keys
    ttl_us: int | None
    aggregate: bool


@dataclass
class _OdfvRun:
    odfv: OnDemandFeatureView
    inputs: list[tuple[str, int, int, pa.DataType]]  # (input name, view read index, feature index, type)
    request: list[str]


@dataclass
class OnlinePlan:
    """Everything about a feature list that does not depend on the entity keys."""

    join_keys: list[str]
    key_types: list[types.ValueType]
    reads: list[_ViewRead]
    odfvs: list[_OdfvRun]
    # output column -> ("v", read index, feature index) or ("o", odfv index, output name)
    outputs: list[tuple[str, str, int, Any]]
    arrow_types: dict[str, pa.DataType] = field(default_factory=dict)
    status_of: dict[str, str | None] = field(default_factory=dict)


def compile_plan(sel: FeatureSelection, get_view: Callable[[str], Any], full_feature_names: bool) -> OnlinePlan:
    names = sel.output_names(full_feature_names)
    reads: list[_ViewRead] = []
    by_view: dict[str, int] = {}
    join_keys: list[str] = []
    key_types: list[types.ValueType] = []

    def read_of(view: FeatureView) -> int:
        if view.name in by_view:
            return by_view[view.name]
        for e in view.entities:
            for k in e.join_keys:
                if k not in join_keys:
                    join_keys.append(k)
                    key_types.append(e.dtypes[k])
        ttl = None if view.ttl is None else view.ttl // timedelta(microseconds=1)
        reads.append(_ViewRead(view, [], [join_keys.index(k) for k in view.join_keys], ttl, view.is_aggregate))
        by_view[view.name] = len(reads) - 1
        return len(reads) - 1

    def column(view: FeatureView, feature: str) -> tuple[int, int]:
        j = read_of(view)
        feats = reads[j].features
        if feature not in feats:
            feats.append(feature)
        return j, feats.index(feature)

    for vs in sel.stored:
        for f in vs.features:
            column(vs.view, f)  # type: ignore[arg-type]
    odfvs: list[_OdfvRun] = []
    odfv_index: dict[str, int] = {}
    for vs in sel.on_demand:
        odfv: OnDemandFeatureView = vs.view  # type: ignore[assignment]
        inputs = []
        for ref in odfv.input_refs():
            vname, _, feat = ref.partition(":")
            src = get_view(vname)
            j, i = column(src, feat)
            inputs.append((feat, j, i, src.feature(feat).dtype.arrow))
        odfv_index[odfv.name] = len(odfvs)
        odfvs.append(_OdfvRun(odfv, inputs, list(odfv.request_dtypes)))
    plan = OnlinePlan(join_keys, key_types, reads, odfvs, [])
    for ref, name in zip(sel.refs, names, strict=True):
        view = sel_view(sel, ref.view, ref.version)
        if isinstance(view, OnDemandFeatureView):
            plan.outputs.append((name, "o", odfv_index[view.name], ref.feature))
            plan.status_of[name] = None
        else:
            j, i = column(view, ref.feature)
            plan.outputs.append((name, "v", j, i))
            plan.status_of[name] = view.name
        plan.arrow_types[name] = next(f.dtype.arrow for f in view.features if f.name == ref.feature)
    for k, t in zip(join_keys, key_types, strict=True):
        plan.arrow_types[k] = t.arrow
    return plan


def sel_view(sel: FeatureSelection, name: str, version: int | None) -> Any:
    for vs in sel.views:
        if vs.view.name == name and vs.version == version:
            return vs.view
    raise KeyError(name)  # pragma: no cover - the selection holds every ref's view


# -- entity rows -------------------------------------------------------------------


def entity_columns(entity_rows: Any, join_keys: Sequence[str]) -> tuple[dict[str, list[Any]], int]:
    """Entity rows (a list of dicts, a dict of columns, a pandas/Arrow table) ->
    the join key columns as lists, and the number of rows."""
    if entity_rows is None:
        raise InputError(f"entity_rows is required: e.g. [{{{', '.join(repr(k) + ': ...' for k in join_keys)}}}]")
    if isinstance(entity_rows, list | tuple):
        rows = entity_rows
        cols: dict[str, list[Any]] = {}
        for k in join_keys:
            try:
                cols[k] = [r[k] for r in rows]
            except KeyError:
                i = next(i for i, r in enumerate(rows) if k not in r)
                raise InputError(
                    f"entity row {i} has no join key {k!r}; each row needs {list(join_keys)}, got {sorted(rows[i])}"
                ) from None
            except TypeError:
                raise InputError("entity_rows must be a list of dicts like [{'user_id': 1}] or columns "
                                 "like {'user_id': [1, 2]}") from None
        return cols, len(rows)
    if isinstance(entity_rows, pa.Table):
        entity_rows = entity_rows.to_pydict()
    elif hasattr(entity_rows, "to_dict") and hasattr(entity_rows, "columns"):  # pandas
        entity_rows = {c: entity_rows[c].tolist() for c in entity_rows.columns}
    if isinstance(entity_rows, dict):
        missing = [k for k in join_keys if k not in entity_rows]
        if missing:
            raise InputError(f"entity rows lack join keys {missing}; they have {sorted(entity_rows)}")
        cols = {}
        n = -1
        for k in join_keys:
            col = entity_rows[k]
            col = [col] if isinstance(col, str | int | float | bytes) else list(col)
            if n >= 0 and len(col) != n:
                raise InputError(f"entity columns have different lengths ({list(join_keys)[0]!r}: {n}, {k!r}: {len(col)})")
            n = len(col)
            cols[k] = col
        return cols, max(n, 0)
    raise InputError(f"entity_rows must be a list of dicts or a dict of columns, got {type(entity_rows).__name__}")


_PY = {"Int32": int, "Int64": int, "String": str, "Float32": float, "Float64": float, "Bool": bool, "Bytes": bytes}


def _coerce_value(key: str, dtype: types.ValueType, v: Any) -> Any:
    if v is None:
        raise InputError(f"join key {key!r} is null; give a {dtype.name} value")
    name = dtype.name
    try:
        if name in ("Int32", "Int64"):
            if isinstance(v, bool):
                raise ValueError
            if isinstance(v, float) or hasattr(v, "is_integer"):
                if not float(v).is_integer():
                    raise ValueError
                return int(v)
            if isinstance(v, str | bytes):
                return int(v.strip())
            return int(v)  # numpy integers
        if name == "String":
            if isinstance(v, bytes):
                return v.decode()
            if isinstance(v, bool) or not isinstance(v, str | int):
                raise ValueError
            return str(v)
        if name in ("Float32", "Float64"):
            return float(v)
        if name == "Bytes":
            return v.encode() if isinstance(v, str) else bytes(v)
        if name == "Bool":
            if isinstance(v, str):
                if v.lower() in ("true", "1"):
                    return True
                if v.lower() in ("false", "0"):
                    return False
                raise ValueError
            return bool(v)
    except (ValueError, TypeError, UnicodeDecodeError):
        pass
    raise InputError(f"join key {key!r}: cannot read {v!r} ({type(v).__name__}) as {name}; send a {name} value")


def coerce_keys(name: str, dtype: types.ValueType, col: list[Any]) -> list[Any]:
    """Keys as the store holds them: ``"12"`` or ``12.0`` for an Int64 key is 12."""
    py = _PY.get(dtype.name)
    if py is not None:
        for v in col:
            if type(v) is not py:
                break
        else:
            return col
    return [_coerce_value(name, dtype, v) for v in col]


# -- the reader --------------------------------------------------------------------


class OnlineReader:
    """Compiles and caches plans, and runs them against the online store."""

    served_log: Any = None  # a quiver.monitoring.served_log.ServedLog, set by the facade when logging is on

    def __init__(
        self,
        registry: Any,
        online: Any,
        resolve: Callable[[Sequence[str] | None, Any], FeatureSelection],
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.registry = registry
        self.online = online
        self.resolve = resolve
        self.clock = clock or (lambda: time.time_ns() // 1000)  # now, in epoch microseconds
        self._plans: dict[Any, OnlinePlan] = {}
        self._version = -1

    def plan(self, features: Sequence[str] | None, feature_service: Any, full_feature_names: bool) -> OnlinePlan:
        version = self.registry.version
        if version != self._version:
            self._plans.clear()
            self._version = version
        svc = feature_service if feature_service is None or isinstance(feature_service, str) else feature_service.name
        key = (tuple(features) if features is not None and not isinstance(features, str) else features, svc,
               full_feature_names)
        plan = self._plans.get(key)
        if plan is None:
            sel = self.resolve(features, feature_service)
            plan = compile_plan(sel, lambda n: self.registry.get_view(n), full_feature_names)
            if len(self._plans) > 1024:
                self._plans.clear()
            self._plans[key] = plan
        return plan

    def get(
        self,
        features: Sequence[str] | None = None,
        feature_service: Any = None,
        entity_rows: Any = None,
        request_context: dict[str, Any] | None = None,
        full_feature_names: bool = False,
    ) -> OnlineResponse:
        plan = self.plan(features, feature_service, full_feature_names)
        cols, n = entity_columns(entity_rows, plan.join_keys)
        key_cols = [coerce_keys(k, t, cols[k]) for k, t in zip(plan.join_keys, plan.key_types, strict=True)]
        now = self.clock()
        lookups = []
        for r in plan.reads:
            if r.aggregate:
                continue
            lookups.append((r.view, _key_rows(r, key_cols), r.features))
        found = iter(self.online.lookup(lookups) if lookups else [])
        view_cols: list[list[Any]] = []  # per read: its columns (features..., event time), TTL applied
        views: dict[str, tuple[list[tuple[Any, ...] | None] | None, int | None]] = {}
        for r in plan.reads:
            if r.aggregate:
                rows = self._aggregates(r, key_cols, n, now)
                views[r.view.name] = (None, None)
            else:
                rows = next(found)
                views[r.view.name] = (rows, r.ttl_us)
                if r.ttl_us is not None:  # TTL at read time: a row older than the ttl is served as null
                    oldest = now - r.ttl_us
                    rows = [None if row is None or row[-1] < oldest else row for row in rows]
            view_cols.append(_columns(rows, len(r.features) + 1))
        req_cols: dict[str, list[Any]] = {}  # the request values on-demand views read (logged for the skew check)
        odfv_out = [self._on_demand(o, view_cols, cols, entity_rows, request_context, n, req_cols) for o in plan.odfvs]
        values: dict[str, list[Any]] = {}
        for name, kind, j, i in plan.outputs:
            values[name] = list(view_cols[j][i]) if kind == "v" else odfv_out[j][i]
        keys_out = dict(zip(plan.join_keys, key_cols, strict=True))
        resp = OnlineResponse(keys_out, values, plan.arrow_types, plan.status_of, views, now, n)
        if self.served_log is not None:  # monitoring: sampled and buffered, written off the request path
            self.served_log.log(plan, resp, now, req_cols or None)
        return resp

    # -- parts -------------------------------------------------------------------------

    def _aggregates(
        self, r: _ViewRead, key_cols: list[list[Any]], n: int, now: int
    ) -> list[tuple[Any, ...] | None]:
        read = getattr(self.online, "read_aggregate_rows", None)
        if read is None:
            raise UnsupportedError(
                f"feature view {r.view.name!r} is an aggregate view, and the {type(self.online).__name__} "
                "online store keeps no aggregation state yet; ask for its features offline, or run the stream"
            )
        return [(*row, now) for row in read(r.view, _key_rows(r, key_cols), r.features, now)]

    def _on_demand(
        self,
        run: _OdfvRun,
        view_cols: list[list[Any]],
        key_cols: dict[str, list[Any]],
        entity_rows: Any,
        request_context: dict[str, Any] | None,
        n: int,
        req_cols: dict[str, list[Any]],
    ) -> dict[str, list[Any]]:
        # plain Python columns, no Arrow round trip: the same function and coercion as at training
        # time (transform_arrow), at a fraction of the cost for the few rows of a request
        odfv = run.odfv
        data: dict[str, list[Any]] = {}
        for feat, j, i, _arrow_type in run.inputs:
            data[feat] = list(view_cols[j][i])
        for name in run.request:
            data[name] = req_cols[name] = _request_values(name, odfv.name, entity_rows, request_context, n)
        for k, col in key_cols.items():
            data.setdefault(k, list(col))
        return odfv.transform_columns(data, n)


def _key_rows(r: _ViewRead, key_cols: list[list[Any]]) -> Sequence[tuple[Any, ...]]:
    """A view's join key values as one tuple per entity row."""
    if len(r.key_index) == 1:
        return [(v,) for v in key_cols[r.key_index[0]]]
    return list(zip(*(key_cols[i] for i in r.key_index), strict=True))


def _request_values(name: str, odfv: str, entity_rows: Any, ctx: dict[str, Any] | None, n: int) -> list[Any]:
    if ctx and name in ctx:
        v = ctx[name]
        if isinstance(v, list | tuple):
            if len(v) != n:
                raise InputError(f"request_context[{name!r}] has {len(v)} values for {n} entity rows")
            return list(v)
        return [v] * n
    if isinstance(entity_rows, list | tuple) and all(isinstance(r, dict) and name in r for r in entity_rows):
        return [r[name] for r in entity_rows]
    if isinstance(entity_rows, dict) and name in entity_rows:
        return list(entity_rows[name])
    raise InputError(
        f"on-demand feature view {odfv!r} needs request field {name!r}: pass request_context={{{name!r}: ...}}"
        " or put it in each entity row"
    )


def _columns(rows: list[tuple[Any, ...] | None], width: int) -> list[Any]:
    """Rows (None for a missing one) -> ``width`` columns, transposed in C by ``zip``."""
    if not rows:
        return [()] * width
    if None in rows:
        empty = (None,) * width
        rows = [empty if r is None else r for r in rows]
    return list(zip(*rows))
