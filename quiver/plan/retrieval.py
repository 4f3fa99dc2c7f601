"""A ``get_historical_features`` request -> an engine-neutral ``RetrievalPlan``.

The plan says, per view, which keys to join on, the ttl, which features (or
window aggregations) to compute and under which internal column names, and
which on-demand views run afterwards on which inputs. Engines (DuckDB now,
Spark later) only execute plans; they never see feature references, services
or registry versions, so a new engine needs no change above it.

Internal column names are ``{alias}__{feature}`` (``alias`` = ``v0``, ``v1``...,
one per view and version), so two views with a feature of the same name, or
one view at two versions, never collide inside the engine; the job renames
them to the output names at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from quiver.definitions import Aggregation, FeatureRef, FeatureView, OnDemandFeatureView
from quiver.errors import InputError, closest
from quiver.plan.features import FeatureSelection

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "ENTITY_TS",
    "ROW_ID",
    "EntityInput",
    "OnDemandStep",
    "RetrievalPlan",
    "ViewPlan",
    "build_plan",
    "row_numbers",
]

ENTITY_TS = "event_timestamp"
ROW_ID = "__quiver_row"


def row_numbers(n: int) -> pa.Array:
    """0..n-1 as an int64 Arrow array, built from a NumPy buffer (``pa.array`` on
    NumPy input would import pandas, a second of start-up for nothing)."""
    import numpy as np
    import pyarrow as pa

    return pa.Array.from_buffers(pa.int64(), n, [None, pa.py_buffer(np.arange(n, dtype=np.int64))])


@dataclass(frozen=True)
class EntityInput:
    """The entity rows handed to an engine: an Arrow table whose ``event_timestamp``
    is ``timestamp[us, tz=UTC]`` and whose ``__quiver_row`` numbers the rows 0..n-1
    (the output comes back in that order)."""

    table: pa.Table
    timestamp_column: str = ENTITY_TS
    row_column: str = ROW_ID


@dataclass(frozen=True)
class ViewPlan:
    """One stored view to join: a snapshot view (``features``) or an aggregate view
    (``aggregations``); each value goes to ``columns[feature]``."""

    view: FeatureView
    version: int | None
    alias: str
    join_keys: list[str]
    ttl: timedelta | None
    features: list[str]
    aggregations: list[Aggregation]
    columns: dict[str, str]

    @property
    def is_aggregate(self) -> bool:
        return bool(self.aggregations)


@dataclass(frozen=True)
class OnDemandStep:
    """Run ``view.transform_arrow`` on a table of ``inputs`` (input name -> internal
    column) and keep ``outputs`` (feature -> internal column)."""

    view: OnDemandFeatureView
    inputs: dict[str, str]
    outputs: dict[str, str]


@dataclass(frozen=True)
class RetrievalPlan:
    views: list[ViewPlan]
    on_demand: list[OnDemandStep]
    entity_columns: list[str]
    output: dict[str, str]  # internal column -> output name, in output order (after the entity columns)
    as_known: bool = False
    refs: list[str] = field(default_factory=list)

    @property
    def internal_columns(self) -> list[str]:
        """Every column the engine adds (asked-for features and on-demand inputs)."""
        return [c for v in self.views for c in v.columns.values()]


def build_plan(
    selection: FeatureSelection,
    entity_columns: Sequence[str],
    get_view: Callable[[str, int | None], FeatureView | OnDemandFeatureView],
    *,
    full_feature_names: bool = False,
    as_known: bool = False,
) -> RetrievalPlan:
    """Compile a resolved selection against the entity frame's columns.

    Checks what needs the entity frame: every view's join keys and every
    on-demand view's request fields must be columns of it.
    """
    cols = list(entity_columns)
    views: dict[tuple[str, int | None], ViewPlan] = {}

    def view_plan(view: FeatureView, version: int | None) -> ViewPlan:
        key = (view.name, version)
        if key not in views:
            missing = [k for k in view.join_keys if k not in cols]
            if missing:
                raise InputError(
                    f"the entity rows have no column {missing[0]!r}, a join key of feature view {view.name!r} "
                    f"(keys {view.join_keys}).{closest(missing[0], cols)} Their columns: {', '.join(cols)}"
                )
            views[key] = ViewPlan(view, version, f"v{len(views)}", view.join_keys, view.ttl, [], [], {})
        return views[key]

    def want(vp: ViewPlan, feature: str) -> str:
        if feature not in vp.columns:
            vp.columns[feature] = f"{vp.alias}__{feature}"
            if vp.view.is_aggregate:
                vp.aggregations.append(next(a for a in vp.view.aggregations if a.name == feature))
            else:
                vp.features.append(feature)
        return vp.columns[feature]

    names = selection.output_names(full_feature_names)
    internal_for_ref: dict[FeatureRef, str] = {}
    steps: list[OnDemandStep] = []
    for sel in selection.views:
        if isinstance(sel.view, FeatureView):
            vp = view_plan(sel.view, sel.version)
            for f in sel.features:
                internal_for_ref[FeatureRef(sel.view.name, f, sel.version)] = want(vp, f)
    for sel in selection.views:
        if not isinstance(sel.view, OnDemandFeatureView):
            continue
        odfv = sel.view
        inputs: dict[str, str] = {}
        for rs in odfv.request_sources:
            for fld in rs.schema:
                if fld.name not in cols:
                    raise InputError(
                        f"on-demand feature view {odfv.name!r} needs request field {fld.name!r} "
                        f"(request source {rs.name!r}); add it as a column of the entity rows."
                        f"{closest(fld.name, cols)}"
                    )
                inputs[fld.name] = fld.name
        for ref in odfv.input_refs():
            vname, _, feat = ref.partition(":")
            v = get_view(vname, None)
            if not isinstance(v, FeatureView):
                raise InputError(f"on-demand feature view {odfv.name!r}: input {ref!r} is not a stored feature view")
            inputs[feat] = want(view_plan(v, None), feat)
        outputs = {f: f"od{len(steps)}__{f}" for f in sel.features}
        for f in sel.features:
            internal_for_ref[FeatureRef(odfv.name, f, sel.version)] = outputs[f]
        steps.append(OnDemandStep(odfv, inputs, outputs))
    output = {internal_for_ref[r]: n for r, n in zip(selection.refs, names, strict=True)}
    clash = sorted(set(output.values()) & set(cols))
    if clash:
        raise InputError(
            f"the entity rows already have columns named {clash}, like the features asked for; "
            "rename them or pass full_feature_names=True"
        )
    return RetrievalPlan(list(views.values()), steps, cols, output, as_known, [str(r) for r in selection.refs])
