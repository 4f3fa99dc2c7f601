"""Registry: versioned definitions, history, lineage, search and watermarks.

Reads go through an in-process cache of the latest definitions. The cache
checks the store's version counter at most once per ``cache_ttl_seconds``
(default 1 s; 0 checks on every read), so a lookup costs a dict access, and a
change applied by another process is seen within that time.
"""

from __future__ import annotations

import builtins

import getpass
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from quiver.definitions import Entity, FeatureService, FeatureView, OnDemandFeatureView
from quiver.definitions._base import METADATA_KEYS, Definition, fingerprint
from quiver.errors import NotFoundError, TransientError, closest
from quiver.plan.diff import Plan, make_plan
from quiver.protocols import NewVersion, StoredObject

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


_BATCH = 50  # new versions written per statement group during an apply


def _version_hash(spec: dict[str, Any]) -> str:
    """What ``Definition.version_hash`` gives for the definition of this spec."""
    return fingerprint({k: v for k, v in spec.items() if k not in METADATA_KEYS})


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
        self._checked = float("-inf")
        self._latest: dict[str, dict[str, tuple[StoredObject, Definition]]] = {}
        self._pinned: dict[tuple[str, str, int], Definition] = {}
        self._local: dict[tuple[str, str], Definition] = {}

    # -- cache ---------------------------------------------------------------------

    def _fresh(self) -> dict[str, dict[str, tuple[StoredObject, Definition]]]:
        if time.monotonic() - self._checked < self.cache_ttl and self._version >= 0:
            return self._latest
        with self._lock:
            if time.monotonic() - self._checked < self.cache_ttl and self._version >= 0:
                return self._latest  # another thread checked while we waited
            try:
                version = self.store.version()
                if version != self._version:
                    self._load()
            except TransientError:
                if self._version < 0:
                    raise
                # the registry is unreachable: keep serving the definitions we have, look again later
            self._checked = time.monotonic()
        return self._latest

    def _load(self) -> None:
        """Read every latest definition; the counter is read first, so a concurrent apply
        at worst makes the next check reload again."""
        version = self.store.version()
        latest: dict[str, dict[str, tuple[StoredObject, Definition]]] = {k: {} for k in _CLASSES}
        for obj in self.store.list():
            latest.setdefault(obj.kind, {})[obj.name] = (obj, self._build(obj))
        self._latest, self._version = latest, version
        self._pinned.clear()  # a metadata update rewrites a stored version in place

    def _build(self, obj: StoredObject) -> Definition:
        local = self._local.get((obj.kind, obj.name))
        if local is not None and fingerprint(local.to_spec()) == fingerprint(obj.spec):
            return local  # keep the in-process object (its function, not a re-exec'd copy)
        return _CLASSES[obj.kind].from_spec(obj.spec)  # type: ignore[no-any-return]

    def refresh(self) -> None:
        """Force the next read to check the store."""
        self._checked = float("-inf")

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

    def names(self, kind: str) -> builtins.list[str]:
        return sorted(self._fresh().get(kind, {}))

    def list(self, kind: str) -> builtins.list[Definition]:
        return [pair[1] for _, pair in sorted(self._fresh().get(kind, {}).items())]

    def list_stored(self, kind: str | None = None) -> builtins.list[StoredObject]:
        fresh = self._fresh()
        kinds = [kind] if kind else list(_CLASSES)
        return [obj for k in kinds for _, (obj, _) in sorted(fresh.get(k, {}).items())]

    def get_view(self, name: str, version: int | None = None) -> FeatureView | OnDemandFeatureView:
        """A feature view or on-demand view by name (for ``view:feature`` references)."""
        fresh = self._fresh()
        kind = "on_demand_feature_view" if name in fresh.get("on_demand_feature_view", {}) else "feature_view"
        if name not in fresh.get(kind, {}):
            if version is not None:  # a removed view's old versions stay readable
                try:
                    return self.get("feature_view", name, version)  # type: ignore[return-value]
                except NotFoundError:
                    if not self.store.get("on_demand_feature_view", name, version):
                        raise
                    return self.get("on_demand_feature_view", name, version)  # type: ignore[return-value]
            known = self.names("feature_view") + self.names("on_demand_feature_view")
            raise NotFoundError(f"unknown feature view {name!r}.{closest(name, known)}")
        return self.get(kind, name, version)  # type: ignore[return-value]

    def history(self, name: str | None = None, kind: str | None = None) -> builtins.list[dict[str, Any]]:
        return self.store.history(kind, name)  # type: ignore[no-any-return]

    # -- plan and apply --------------------------------------------------------------

    def plan(self, desired: builtins.list[Definition], *, remove_missing: bool = True) -> Plan:
        self.refresh()
        base = self.store.version()
        current = {(o.kind, o.name): (o.version, o.spec) for o in self.store.list()}
        plan = make_plan(base, current, desired, remove_missing=remove_missing)
        adds = [c for c in plan.changes if c.action == "add"]
        if adds:  # an object removed earlier and defined again continues its version numbers
            ever = self.store.max_versions()
            for c in adds:
                c.new_version = ever.get((c.kind, c.name), 0) + 1
        return plan

    def apply(self, plan: Plan, progress: Callable[[int, int], None] | None = None) -> Plan:
        """Carry out ``plan`` in one transaction; ``ConcurrentApplyError`` if the
        registry moved since the plan was made. An empty plan writes nothing."""
        pending = plan.pending
        if pending:
            with self.store.transaction(plan.base_version, current_user()) as txn:
                done = 0
                versions = [c for c in pending if c.action in ("add", "new_version")]
                for i in range(0, len(versions), _BATCH):  # new versions in batches: few statements each
                    batch = versions[i : i + _BATCH]
                    items = [NewVersion(c.kind, c.name, c.spec or {}, _version_hash(c.spec or {}), c.diff, c.action)
                             for c in batch]
                    for c, v in zip(batch, txn.put_versions(items), strict=True):
                        c.new_version = v
                    done += len(batch)
                    if progress:
                        progress(done, len(pending))
                for ch in pending:
                    if ch.action == "update_metadata":
                        txn.update_metadata(ch.kind, ch.name, ch.spec or {}, ch.diff)
                    elif ch.action == "remove":
                        txn.remove(ch.kind, ch.name)
                    else:
                        continue
                    done += 1
                    if progress:
                        progress(done, len(pending))
        for ch in plan.changes:
            if ch.definition is not None:
                self._local[(ch.kind, ch.name)] = ch.definition
        self.refresh()
        return plan

    # -- discovery -----------------------------------------------------------------

    def search(self, text: str) -> builtins.list[StoredObject]:
        """Objects whose name, description, tags (``key=value``), owner, features,
        join keys or served features mention ``text`` (case-insensitive)."""
        t = text.lower()
        out = []
        for obj in self.list_stored():
            s = obj.spec
            hay = [obj.name, s.get("description", ""), s.get("owner", "")]
            hay += [f"{k}={v}" for k, v in (s.get("tags") or {}).items()]
            hay += [f.get("name", "") + " " + f.get("description", "") for f in s.get("schema") or []]
            hay += [a["name"] for a in s.get("aggregations") or []]
            hay += list(s.get("join_keys") or []) + list(s.get("features") or [])
            if any(t in h.lower() for h in hay):
                out.append(obj)
        return out

    def lineage(self, name: str) -> dict[str, Any]:
        """The graph around ``name`` (a source, view, ``view:feature`` or service):
        files -> sources -> views -> on-demand views -> services, upstream and downstream.
        Nodes are ``kind:name``; for a feature, only the services and views that use it."""
        view_name, _, feature = name.partition(":")
        uses: dict[tuple[str, str], set[str]] = {}  # edge -> the view's features it carries
        for v in self.list("feature_view"):
            src = v.source  # type: ignore[attr-defined]
            if src.batch is not None:
                uses[(f"file:{src.batch.path}", f"source:{src.name}")] = set()
            uses[(f"source:{src.name}", f"view:{v.name}")] = set()
        for o in self.list("on_demand_feature_view"):
            for ref in o.input_refs():  # type: ignore[attr-defined]
                v, _, f = ref.partition(":")
                uses.setdefault((f"view:{v}", f"view:{o.name}"), set()).add(f)
            for r in o.request_sources:  # type: ignore[attr-defined]
                uses[(f"request:{r.name}", f"view:{o.name}")] = set()
        for svc in self.list("feature_service"):
            for ref in svc.features:  # type: ignore[attr-defined]
                v, _, f = ref.partition(":")
                uses.setdefault((f"view:{v.split('@')[0]}", f"service:{svc.name}"), set()).add(f)
        nodes = {n for e in uses for n in e}
        start = sorted(n for n in nodes if n.split(":", 1)[1] == view_name)
        if not start:
            known = sorted({n.split(":", 1)[1] for n in nodes if not n.startswith("file:")})
            raise NotFoundError(f"nothing named {view_name!r} in the registry.{closest(view_name, known)}")
        if feature:
            view = self.get_view(view_name)
            if feature not in view.feature_names:
                raise NotFoundError(
                    f"feature view {view_name!r} has no feature {feature!r}.{closest(feature, view.feature_names)}"
                )
            start = [f"view:{view_name}"]
            # downstream of the view, keep only what reads this feature
            uses = {e: f for e, f in uses.items() if e[0] != start[0] or feature in f}
        edges = sorted(uses)
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
