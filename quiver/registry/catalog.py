"""Read-only views of the registry for people: catalog, describe, search results."""

from __future__ import annotations

from typing import Any

from quiver.definitions import Aggregation
from quiver.errors import NotFoundError, closest
from quiver.protocols import StoredObject
from quiver.registry import Registry
from quiver.timeutil import format_window

__all__ = ["catalog", "describe", "summary"]


def _features(spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = [dict(f) for f in spec.get("schema") or []]
    for a in spec.get("aggregations") or []:
        agg = Aggregation.from_spec(a)
        out.append({"name": agg.name, "dtype": agg.output_dtype().name,
                    "aggregation": f"{agg.function}({agg.column}) over {format_window(agg.window)}"})
    return out


def summary(obj: StoredObject) -> dict[str, Any]:
    s = obj.spec
    out: dict[str, Any] = {
        "kind": obj.kind,
        "name": obj.name,
        "version": obj.version,
        "owner": s.get("owner", ""),
        "description": s.get("description", ""),
        "tags": s.get("tags") or {},
        "created_at": obj.created_at.isoformat(),
        "updated_at": obj.updated_at.isoformat(),
        "applied_by": obj.applied_by,
    }
    if obj.kind in ("feature_view", "on_demand_feature_view"):
        out["features"] = _features(s)
        out["freshness_sla_seconds"] = s.get("freshness_sla")
        out["ttl_seconds"] = s.get("ttl")
        out["entities"] = s.get("entities", [])
        out["type"] = "on_demand" if obj.kind == "on_demand_feature_view" else ("aggregate" if s.get("aggregations") else "snapshot")
    elif obj.kind == "feature_service":
        out["features"] = s.get("features", [])
    elif obj.kind == "entity":
        out["join_keys"] = s.get("join_keys", [])
    return out


def catalog(registry: Registry) -> dict[str, Any]:
    groups: dict[str, list[dict[str, Any]]] = {"entities": [], "feature_views": [], "on_demand_feature_views": [], "feature_services": []}
    key = {"entity": "entities", "feature_view": "feature_views", "on_demand_feature_view": "on_demand_feature_views",
           "feature_service": "feature_services"}
    for obj in registry.list_stored():
        groups[key[obj.kind]].append(summary(obj))
    return {"registry_version": registry.version, **groups}


def describe(registry: Registry, name: str) -> dict[str, Any]:
    """A view (``name``), a feature (``view:feature``) or a service, with its versions."""
    view, _, feature = name.partition(":")
    for kind in ("feature_view", "on_demand_feature_view", "feature_service", "entity"):
        if view in registry.names(kind):
            obj = registry.stored(kind, view)
            out = summary(obj)
            out["versions"] = [
                {"version": h["version"], "action": h["action"], "at": h["at"].isoformat(), "applied_by": h["applied_by"]}
                for h in registry.history(view, kind)
            ]
            if kind == "feature_service":
                out["features"] = [_served(registry, ref) for ref in obj.spec["features"]]
            if feature:
                match = [f for f in out.get("features", []) if f.get("name") == feature]
                if not match:
                    names = [f["name"] for f in out.get("features", [])]
                    raise NotFoundError(f"{kind.replace('_', ' ')} {view!r} has no feature {feature!r}.{closest(feature, names)}")
                out = {**out, "feature": match[0]}
            out["lineage"] = registry.lineage(view)
            return out
    known = [n for k in ("feature_view", "on_demand_feature_view", "feature_service", "entity") for n in registry.names(k)]
    raise NotFoundError(f"nothing named {view!r} in the registry.{closest(view, known)}")


def _served(registry: Registry, ref: str) -> dict[str, Any]:
    view, _, feature = ref.partition(":")
    name, _, pinned = view.partition("@")
    kind = "on_demand_feature_view" if name in registry.names("on_demand_feature_view") else "feature_view"
    obj = registry.stored(kind, name, int(pinned) if pinned else None)
    dtype = next((f["dtype"] for f in _features(obj.spec) if f["name"] == feature), None)
    return {"ref": ref, "view": name, "feature": feature, "version": obj.version, "dtype": dtype}
