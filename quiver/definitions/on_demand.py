"""OnDemandFeatureView: a Python function over request values and stored features.

The same function runs at serving time (inside ``get_online_features``) and at
training time (inside ``get_historical_features``), so the two cannot drift.
Its source text is part of the view's version.

Two modes:

* ``"python"``: ``udf(row: dict) -> dict``, one row at a time; lowest latency.
* ``"pandas"``: ``udf(df: pandas.DataFrame) -> pandas.DataFrame``, vectorized.
"""

from __future__ import annotations

import inspect
import textwrap
from collections.abc import Callable
from typing import Any

from quiver.definitions._base import Definition, check_name
from quiver.definitions.feature_view import FeatureView, FeatureViewProjection
from quiver.definitions.field import Field, check_unique
from quiver.definitions.sources import RequestSource
from quiver.errors import DefinitionError

__all__ = ["MODES", "OnDemandFeatureView", "on_demand_feature_view"]

MODES = ("python", "pandas")
Input = RequestSource | FeatureView | FeatureViewProjection


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
