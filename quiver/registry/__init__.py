"""Registry: versioned definitions, history, lineage, search and watermarks.

Reads go through an in-process cache of the latest definitions. The cache
checks the store's version counter at most once per ``cache_ttl_seconds``
(default 1 s; 0 checks on every read), so a lookup costs a dict access, and a
change applied by another process is seen within that time.
"""

from __future__ import annotations

import getpass
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from quiver.definitions import Entity, FeatureService, FeatureView, OnDemandFeatureView
from quiver.definitions._base import Definition
from quiver.errors import NotFoundError, closest
from quiver.plan.diff import Plan, make_plan
from quiver.protocols import StoredObject

__all__ = ["Registry", "current_user"]

_CLASSES: dict[str, Any] = {
    "entity": Entity,
    "feature_view": FeatureView,
    "on_demand_feature_view": OnDemandFeatureView,
    "feature_service": FeatureService,
}
_LABEL = {
    "entity": "entity",
    "feature_view": "feature view",
    "on_demand_feature_view": "on-demand feature view",
    "feature_service": "feature service",
}


def current_user() -> str:
    """Who applies: $QUIVER_USER, else the login name."""
    user = os.environ.get("QUIVER_USER")
    if user:
        return user
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"


class Registry:
    """Definitions by kind and name, over a ``RegistryStore``."""

    def __init__(self, store: Any, cache_ttl_seconds: float = 1.0) -> None:
        self.store = store
        self.cache_ttl = float(cache_ttl_seconds)
        self._lock = threading.Lock()
        self._version = -1
        self._checked = 0.0
        self._latest: dict[str, dict[str, tuple[StoredObject, Definition]]] = {}
        self._pinned: dict[tuple[str, str, int], Definition] = {}
        self._local: dict[tuple[str, str], Definition] = {}

    # -- cache ---------------------------------------------------------------------

    def _fresh(self) -> dict[str, dict[str, tuple[StoredObject, Definition]]]:
        now = time.monotonic()
        if now - self._checked < self.cache_ttl and self._version >= 0:
            return self._latest
        with self._lock:
            version = self.store.version()
            self._checked = time.monotonic()
            if version != self._version:
                latest: dict[str, dict[str, tuple[StoredObject, Definition]]] = {k: {} for k in _CLASSES}
                for obj in self.store.list():
                    latest.setdefault(obj.kind, {})[obj.name] = (obj, self._build(obj))
                self._latest, self._version = latest, version
        return self._latest

    def _build(self, obj: StoredObject) -> Definition:
        local = self._local.get((obj.kind, obj.name))
        if local is not None and local.version_hash == obj.version_hash:
            return local  # keep the in-process object (its function, not a re-exec'd copy)
        return _CLASSES[obj.kind].from_spec(obj.spec)  # type: ignore[no-any-return]

    def refresh(self) -> None:
        """Force the next read to check the store."""
        self._checked = 0.0

    @property
    def version(self) -> int:
        self._fresh()
        return self._version

    # -- reads ---------------------------------------------------------------------

    def get(self, kind: str, name: str, version: int | None = None) -> Definition:
        if version is None:
            hit = self._fresh().get(kind, {}).get(name)
            if hit is None:
                known = list(self._fresh().get(kind, {}))
                raise NotFoundError(
                    f"unknown {_LABEL[kind]} {name!r}.{closest(name, known)}"
                    + ("" if known else " The registry has none: run 'quiver apply' first.")
                )
            return hit[1]
        key = (kind, name, version)
        if key not in self._pinned:
            obj = self.store.get(kind, name, version)
            if obj is None:
                have = [o.version for o in self.store.list(kind, all_versions=True) if o.name == name]
                if not have:
                    raise NotFoundError(f"unknown {_LABEL[kind]} {name!r}.{closest(name, self.names(kind))}")
                raise NotFoundError(f"{_LABEL[kind]} {name!r} has no version {version}; it has versions {have}")
            self._pinned[key] = self._build(obj)
        return self._pinned[key]

    def stored(self, kind: str, name: str, version: int | None = None) -> StoredObject:
        if version is None:
            self.get(kind, name)
            return self._fresh()[kind][name][0]
        obj = self.store.get(kind, name, version)
        if obj is None:
            raise NotFoundError(f"{_LABEL[kind]} {name!r} has no version {version}")
        return obj  # type: ignore[no-any-return]

    def names(self, kind: str) -> list[str]:
        return sorted(self._fresh().get(kind, {}))

    def list(self, kind: str) -> list[Definition]:
        return [pair[1] for _, pair in sorted(self._fresh().get(kind, {}).items())]

    def list_stored(self, kind: str | None = None) -> list[StoredObject]:
        fresh = self._fresh()
        kinds = [kind] if kind else list(_CLASSES)
        return [obj for k in kinds for _, (obj, _) in sorted(fresh.get(k, {}).items())]

    def get_view(self, name: str, version: int | None = None) -> FeatureView | OnDemandFeatureView:
        """A feature view or on-demand view by name (for ``view:feature`` references)."""
        fresh = self._fresh()
        kind = "on_demand_feature_view" if name in fresh.get("on_demand_feature_view", {}) else "feature_view"
        if version is None and name not in fresh.get(kind, {}):
            known = self.names("feature_view") + self.names("on_demand_feature_view")
            raise NotFoundError(f"unknown feature view {name!r}.{closest(name, known)}")
        return self.get(kind, name, version)  # type: ignore[return-value]

    def history(self, name: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        return self.store.history(kind, name)  # type: ignore[no-any-return]

    # -- plan and apply --------------------------------------------------------------

    def plan(self, desired: list[Definition], *, remove_missing: bool = True) -> Plan:
        self.refresh()
        base = self.store.version()
        current = {(o.kind, o.name): (o.version, o.spec) for o in self.store.list()}
        return make_plan(base, current, desired, remove_missing=remove_missing)

    def apply(
        self,
        plan: Plan,
        desired: list[Definition] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Plan:
        """Carry out ``plan`` in one transaction; fails if the registry moved since."""
        pending = plan.pending
        with self.store.transaction(plan.base_version, current_user()) as txn:
            for i, ch in enumerate(pending, 1):
                if ch.action in ("add", "new_version"):
                    d = next(x for x in desired or [] if (x.kind, x.name) == (ch.kind, ch.name))
                    ch.new_version = txn.put_version(ch.kind, ch.name, ch.spec, d.version_hash, ch.diff)
                elif ch.action == "update_metadata":
                    txn.update_metadata(ch.kind, ch.name, ch.spec, ch.diff)
                elif ch.action == "remove":
                    txn.remove(ch.kind, ch.name)
                if progress:
                    progress(i, len(pending))
        for d in desired or []:
            self._local[(d.kind, d.name)] = d
        self.refresh()
        return plan

    # -- discovery -----------------------------------------------------------------

    def search(self, text: str) -> list[StoredObject]:
        """Objects whose name, description, tags, owner or features mention ``text``."""
        t = text.lower()
        out = []
        for obj in self.list_stored():
            s = obj.spec
            hay = [obj.name, s.get("description", ""), s.get("owner", "")]
            hay += [f"{k}={v}" for k, v in (s.get("tags") or {}).items()]
            hay += [f.get("name", "") + " " + f.get("description", "") for f in s.get("schema") or []]
            hay += [a["name"] for a in s.get("aggregations") or []]
            if any(t in h.lower() for h in hay):
                out.append(obj)
        return out

    def lineage(self, name: str) -> dict[str, Any]:
        """Source -> views -> services around ``name`` (a source, view, feature or service)."""
        views = {v.name: v for v in self.list("feature_view")}
        odfvs = {v.name: v for v in self.list("on_demand_feature_view")}
        services = {s.name: s for s in self.list("feature_service")}
        edges: list[tuple[str, str]] = []
        for v in views.values():
            src = v.source
            if src.batch is not None and src.batch is not src:
                edges.append((f"file:{src.batch.path}", f"source:{src.name}"))
            edges.append((f"source:{src.name}", f"view:{v.name}"))
        for o in odfvs.values():
            for ref in o.input_refs():
                edges.append((f"view:{ref.split(':')[0]}", f"view:{o.name}"))
            for r in o.request_sources:
                edges.append((f"request:{r.name}", f"view:{o.name}"))
        for s in services.values():
            for ref in s.features:
                edges.append((f"view:{ref.split(':')[0].split('@')[0]}", f"service:{s.name}"))
        edges = sorted(set(edges))
        nodes = {n for e in edges for n in e}
        start = [n for n in nodes if n.split(":", 1)[1] == name or n == name]
        if ":" in name and not start:  # view:feature
            start = [f"view:{name.split(':')[0]}"] if f"view:{name.split(':')[0]}" in nodes else []
        if not start:
            raise NotFoundError(f"nothing named {name!r} in the registry.{closest(name, [n.split(':', 1)[1] for n in nodes])}")
        keep = set(start)
        for direction in (0, 1):  # walk upstream, then downstream
            frontier = set(start)
            while frontier:
                nxt = {e[direction] for e in edges if e[1 - direction] in frontier} - keep
                keep |= nxt
                frontier = nxt
        return {"name": name, "nodes": sorted(keep), "edges": [list(e) for e in edges if e[0] in keep and e[1] in keep]}

    # -- values (watermarks, datasets, monitor results) --------------------------------

    def get_value(self, namespace: str, key: str) -> Any:
        return self.store.get_value(namespace, key)

    def set_value(self, namespace: str, key: str, value: Any) -> None:
        self.store.set_value(namespace, key, value)

    def list_values(self, namespace: str) -> dict[str, Any]:
        return self.store.list_values(namespace)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.store.close()
