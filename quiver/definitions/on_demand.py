"""OnDemandFeatureView: a Python function over request values and stored features.

The same function runs at serving time (inside ``get_online_features``) and at
training time (inside ``get_historical_features``), so the two cannot drift:
both call ``transform_arrow``. Its source text is part of the view's version.

Inputs are named by feature name (the stored features the view reads) and by
field name (the ``RequestSource`` fields: ``request_context`` when serving, the
entity frame's columns when training). Request values are coerced to their
declared types before the function sees them, and outputs to the view's schema.

Two modes:

* ``"python"``: ``udf(row: dict) -> dict``, one row at a time; lowest latency.
* ``"pandas"``: ``udf(df: pandas.DataFrame) -> pandas.DataFrame``, vectorized.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from quiver import types

from quiver.definitions._base import Definition, check_name
from quiver.definitions.feature_view import FeatureView, FeatureViewProjection
from quiver.definitions.field import Field, check_unique
from quiver.definitions.sources import RequestSource
from quiver.errors import DefinitionError, InputError, QuiverError

__all__ = ["MODES", "OnDemandError", "OnDemandFeatureView", "on_demand_feature_view"]

MODES = ("python", "pandas")
Input = RequestSource | FeatureView | FeatureViewProjection


class OnDemandError(QuiverError, RuntimeError):
    """The user's function of an on-demand view raised or returned the wrong shape."""


class OnDemandFeatureView(Definition):
    kind = "on_demand_feature_view"
    sources: tuple[Input, ...]
    schema: tuple[Field, ...]
    udf: Callable[[Any], Any]
    mode: str
    udf_source: str

    def __init__(
        self,
        name: str,
        sources: list[Input],
        schema: list[Field],
        udf: Callable[[Any], Any],
        mode: str = "python",
        *,
        owner: str = "",
        description: str = "",
        tags: dict[str, str] | None = None,
        udf_source: str | None = None,
    ) -> None:
        object.__setattr__(self, "name", check_name("on-demand feature view", name))
        label = f"on-demand feature view {name!r}"
        srcs = tuple(sources or ())
        if not srcs:
            raise DefinitionError(f"{label}: sources must list its inputs (RequestSource, FeatureView or view[[...]])")
        for s in srcs:
            if not isinstance(s, Input):
                raise DefinitionError(f"{label}: unsupported input {s!r}; use RequestSource, FeatureView or view[[...]]")
        fields = tuple(schema or ())
        if not fields:
            raise DefinitionError(f"{label}: schema must declare its output fields")
        check_unique(label, [f.name for f in fields])
        if mode not in MODES:
            raise DefinitionError(f"{label}: mode must be one of {MODES}, got {mode!r}")
        if not callable(udf):
            raise DefinitionError(f"{label}: udf must be a function")
        if udf_source is None:
            try:
                udf_source = textwrap.dedent(inspect.getsource(udf))
            except (OSError, TypeError):
                udf_source = getattr(udf, "__qualname__", repr(udf))
        object.__setattr__(self, "sources", srcs)
        object.__setattr__(self, "schema", fields)
        object.__setattr__(self, "udf", udf)
        object.__setattr__(self, "mode", mode)
        object.__setattr__(self, "udf_source", udf_source)
        self._init_meta(owner, description, tags)
        names = [r.partition(":")[2] for r in self.input_refs()]
        names += [f.name for s in self.request_sources for f in s.schema]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise DefinitionError(f"{label}: inputs {dups} come from more than one source; inputs are passed by name")
        # what the runner needs on every call, computed once
        object.__setattr__(self, "_inputs", names)
        object.__setattr__(self, "_request", {f.name: f.dtype for s in self.request_sources for f in s.schema})
        object.__setattr__(self, "_outputs", [(f.name, f.dtype) for f in fields])
        object.__setattr__(self, "_schema", pa.schema([pa.field(f.name, f.dtype.arrow) for f in fields]))

    @property
    def features(self) -> list[Field]:
        return list(self.schema)

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.schema]

    @property
    def request_sources(self) -> list[RequestSource]:
        return [s for s in self.sources if isinstance(s, RequestSource)]

    def input_refs(self) -> list[str]:
        """The stored features this view reads, as ``view:feature``."""
        refs: list[str] = []
        for s in self.sources:
            if isinstance(s, FeatureView):
                refs += [f"{s.name}:{f}" for f in s.feature_names]
            elif isinstance(s, FeatureViewProjection):
                refs += s.refs()
        return refs

    # -- the runner: one code path for training and serving --------------------------

    @property
    def input_names(self) -> list[str]:
        """Names the function reads: stored features by feature name, then request fields."""
        return list(self._inputs)

    @property
    def request_dtypes(self) -> dict[str, types.ValueType]:
        return dict(self._request)

    @property
    def output_schema(self) -> pa.Schema:
        return self._schema  # type: ignore[no-any-return]

    def transform_arrow(self, table: pa.Table) -> pa.Table:
        """The view's features for each row of ``table``, in order.

        ``table`` holds the inputs as columns named by ``input_names`` (other
        columns are ignored). Returns a table of the view's schema with one row
        per input row. A failure of the function raises ``OnDemandError``
        naming this view; a missing or mistyped input raises ``InputError``.
        """
        self._check_inputs(table.column_names)
        if table.num_rows == 0:
            return self._schema.empty_table()
        req = self._request
        cols = []
        for k in self._inputs:
            c = table.column(k)
            cols.append(types.to_array(c, req[k], k) if k in req and c.type != req[k].arrow else c)
        if self.mode == "pandas":
            return self._run_pandas(pa.Table.from_arrays(cols, names=self._inputs))
        out = self._run_python([c.to_pylist() for c in cols], table.num_rows)
        return pa.Table.from_arrays([pa.array(out[name], dtype.arrow) for name, dtype in self._outputs],
                                    schema=self._schema)

    def transform_columns(self, columns: dict[str, list[Any]], n: int) -> dict[str, list[Any]]:
        """The same as ``transform_arrow`` on plain Python columns (the serving path for
        a few rows: no Arrow round trip in mode "python"). ``n`` is the number of rows."""
        self._check_inputs(columns)
        if n == 0:
            return {name: [] for name, _ in self._outputs}
        if self.mode == "pandas":
            table = pa.table({k: types.to_array(columns[k], self._request[k], k) if k in self._request
                              else pa.array(columns[k]) for k in self._inputs})
            return self._run_pandas(table).to_pydict()  # type: ignore[no-any-return]
        req = self._request
        cols = [[types.coerce_value(v, req[k], k) for v in columns[k]] if k in req else columns[k]
                for k in self._inputs]
        return self._run_python(cols, n)

    def transform_row(self, row: dict[str, Any]) -> dict[str, Any]:
        """One row in, one row out (any mode). ``row`` holds the inputs by name; the
        result holds the view's features in their declared types."""
        out = self.transform_columns({k: [row[k]] for k in self._inputs if k in row}, 1)
        return {k: v[0] for k, v in out.items()}

    def _check_inputs(self, present: Any) -> None:
        missing = [n for n in self._inputs if n not in present]
        if missing:
            req = [n for n in missing if n in self._request]
            hint = (
                f" Request fields {req} come from request_context when serving and from the entity frame's"
                " columns when training." if req else ""
            )
            raise InputError(f"on-demand feature view {self.name!r} needs inputs {missing}.{hint}")

    def _run_python(self, cols: list[list[Any]], n: int) -> dict[str, list[Any]]:
        names = self._inputs
        outs = [self._call(dict(zip(names, vals, strict=True))) for vals in zip(*cols, strict=True)]
        result: dict[str, list[Any]] = {}
        for name, dtype in self._outputs:
            try:
                result[name] = [types.coerce_value(o[name], dtype, name) for o in outs]
            except InputError as e:
                raise OnDemandError(f"on-demand feature view {self.name!r}: output {e}") from None
        return result

    def _call(self, arg: Any) -> Any:
        try:
            out = self.udf(arg)
        except QuiverError:
            raise
        except Exception as e:
            raise OnDemandError(f"on-demand feature view {self.name!r}: its function raised {type(e).__name__}: {e}") from e
        if self.mode == "python":
            if not isinstance(out, dict):
                raise OnDemandError(f"on-demand feature view {self.name!r}: its function must return a dict, got {type(out).__name__}")
            absent = [name for name, _ in self._outputs if name not in out]
            if absent:
                raise OnDemandError(f"on-demand feature view {self.name!r}: its function returned no {absent}")
        return out

    def _run_pandas(self, inputs: pa.Table) -> pa.Table:
        import pandas as pd

        df = inputs.to_pandas()
        out = self._call(df)
        if not isinstance(out, pd.DataFrame) or len(out) != len(df):
            got = f"a DataFrame of {len(out)} rows" if isinstance(out, pd.DataFrame) else type(out).__name__
            raise OnDemandError(f"on-demand feature view {self.name!r}: its function must return a DataFrame of "
                                f"{len(df)} rows, got {got}")
        absent = [name for name, _ in self._outputs if name not in out.columns]
        if absent:
            raise OnDemandError(f"on-demand feature view {self.name!r}: its function returned no columns {absent}")
        cols = []
        for name, dtype in self._outputs:
            try:
                cols.append(types.to_array(pa.array(out[name], from_pandas=True), dtype, name))
            except InputError as e:
                raise OnDemandError(f"on-demand feature view {self.name!r}: output {e}") from None
        return pa.Table.from_arrays(cols, schema=self._schema)

    def to_spec(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "mode": self.mode,
            "request_sources": [s.version_spec() for s in self.request_sources],
            "inputs": self.input_refs(),
            "schema": [f.to_spec() for f in self.schema],
            "udf_name": getattr(self.udf, "__name__", "udf"),
            "udf_source": self.udf_source,
            **self._meta_spec(),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> OnDemandFeatureView:
        """Rebuild from the registry: the function is re-created from its stored source."""
        from quiver.definitions.sources import source_from_spec

        namespace: dict[str, Any] = {"__name__": f"quiver_odfv_{spec['name']}"}
        exec("import math\nimport numpy as np\nimport pandas as pd\n", namespace)  # noqa: S102
        lines = spec["udf_source"].splitlines()
        start = next((i for i, ln in enumerate(lines) if ln.startswith("def ")), 0)  # drop decorators
        src = "\n".join(lines[start:])
        exec(compile(src, f"<registry:{spec['name']}>", "exec"), namespace)  # noqa: S102
        udf = namespace[spec["udf_name"]]
        by_view: dict[str, list[str]] = {}
        for ref in spec["inputs"]:
            view, _, feat = ref.partition(":")
            by_view.setdefault(view, []).append(feat)
        sources: list[Input] = [source_from_spec(s) for s in spec["request_sources"]]  # type: ignore[misc]
        sources += [FeatureViewProjection(v, tuple(fs)) for v, fs in by_view.items()]
        return cls(
            spec["name"],
            sources,
            [Field.from_spec(f) for f in spec["schema"]],
            udf,
            spec["mode"],
            owner=spec.get("owner", ""),
            description=spec.get("description", ""),
            tags=spec.get("tags"),
            udf_source=spec["udf_source"],
        )


def on_demand_feature_view(
    *, sources: list[Input], schema: list[Field], mode: str = "python", name: str | None = None, **meta: Any
) -> Callable[[Callable[[Any], Any]], OnDemandFeatureView]:
    """Decorator form: ``@on_demand_feature_view(sources=[...], schema=[...])``."""

    def wrap(fn: Callable[[Any], Any]) -> OnDemandFeatureView:
        return OnDemandFeatureView(name or fn.__name__, sources, schema, fn, mode, **meta)

    return wrap
