"""Definitions vs registry -> a ``Plan`` of adds, new versions, metadata updates and removals.

A change to what a definition computes (schema, source, transformation, ttl,
aggregations, join keys) is a new version; a change of owner, description,
tags or SLA only updates metadata. Breaking changes are flagged: a feature's
dtype changed, a feature removed while a service uses it, an entity's join
keys changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quiver.definitions._base import METADATA_KEYS, Definition, fingerprint
from quiver.definitions.aggregation import Aggregation

__all__ = ["Change", "Plan", "diff_specs", "make_plan"]

KIND_ORDER = ("entity", "feature_view", "on_demand_feature_view", "feature_service")


@dataclass
class Change:
    kind: str
    name: str
    action: str  # add | new_version | update_metadata | remove | unchanged
    old_version: int | None = None
    new_version: int | None = None
    diff: dict[str, Any] = field(default_factory=dict)  # path -> [old, new]
    breaking: list[str] = field(default_factory=list)
    spec: dict[str, Any] | None = None
    definition: Definition | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "action": self.action,
            "old_version": self.old_version,
            "new_version": self.new_version,
            "diff": self.diff,
            "breaking": list(self.breaking),
        }


@dataclass
class Plan:
    """What ``apply`` does; ``base_version`` is the registry version it was made against."""

    base_version: int
    changes: list[Change]

    @property
    def pending(self) -> list[Change]:
        return [c for c in self.changes if c.action != "unchanged"]

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.breaking]

    @property
    def is_empty(self) -> bool:
        return not self.pending

    def to_dict(self) -> dict[str, Any]:
        return {"base_version": self.base_version, "changes": [c.to_dict() for c in self.pending]}

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for c in self.pending:
            counts[c.action] = counts.get(c.action, 0) + 1
        return ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "no changes"


def diff_specs(old: Any, new: Any, path: str = "") -> dict[str, Any]:
    """Field-level differences between two JSON values: ``{"schema[credit_limit].dtype": [old, new]}``."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: dict[str, Any] = {}
        for k in sorted(set(old) | set(new)):
            out.update(diff_specs(old.get(k), new.get(k), f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(old, list) and isinstance(new, list) and _named(old) and _named(new):
        o = {x["name"]: x for x in old}
        n = {x["name"]: x for x in new}
        out = {}
        for k in list(o) + [k for k in n if k not in o]:
            out.update(diff_specs(o.get(k), n.get(k), f"{path}[{k}]"))
        return out
    return {} if old == new else {path: [old, new]}


def _named(items: list[Any]) -> bool:
    return all(isinstance(x, dict) and "name" in x for x in items)


def _features(spec: dict[str, Any]) -> dict[str, str]:
    """feature name -> dtype name of a view spec."""
    out = {f["name"]: f["dtype"] for f in spec.get("schema") or []}
    for a in spec.get("aggregations") or []:
        out[a["name"]] = Aggregation.from_spec(a).output_dtype().name
    return out


def _served(specs: list[dict[str, Any]]) -> dict[str, list[str]]:
    """'view:feature' -> the names of the services (given by spec) that list it, pinned or not."""
    out: dict[str, set[str]] = {}
    for s in specs:
        for ref in s.get("features", []):
            view, _, feature = ref.partition(":")
            out.setdefault(f"{view.split('@')[0]}:{feature}", set()).add(s["name"])
    return {k: sorted(v) for k, v in out.items()}


def make_plan(
    base_version: int,
    current: dict[tuple[str, str], tuple[int, dict[str, Any]]],
    desired: list[Definition],
    *,
    remove_missing: bool = True,
) -> Plan:
    """Compare the desired definitions with ``current`` ((kind, name) -> (version, spec))."""
    changes: list[Change] = []
    wanted = {(d.kind, d.name): d for d in desired}
    # a feature is in use when a service lists it now or will after the apply
    served = _served(
        [spec for (kind, _), (_, spec) in current.items() if kind == "feature_service"]
        + [d.to_spec() for d in desired if d.kind == "feature_service"]
    )
    for key in sorted(wanted, key=lambda k: (KIND_ORDER.index(k[0]), k[1])):
        d = wanted[key]
        spec = d.to_spec()
        if key not in current:
            changes.append(Change(d.kind, d.name, "add", None, 1, spec=spec, definition=d))
            continue
        old_version, old_spec = current[key]
        core_old = {k: v for k, v in old_spec.items() if k not in METADATA_KEYS}
        core_new = {k: v for k, v in spec.items() if k not in METADATA_KEYS}
        diff = diff_specs(old_spec, spec)
        if fingerprint(core_old) != fingerprint(core_new):
            ch = Change(d.kind, d.name, "new_version", old_version, old_version + 1, diff, spec=spec, definition=d)
            ch.breaking = _breaking(d.kind, d.name, old_spec, spec, served)
        elif diff:
            ch = Change(d.kind, d.name, "update_metadata", old_version, old_version, diff, spec=spec, definition=d)
        else:
            ch = Change(d.kind, d.name, "unchanged", old_version, old_version, spec=spec, definition=d)
        changes.append(ch)
    if remove_missing:
        for key in sorted(set(current) - set(wanted)):
            version, old_spec = current[key]
            ch = Change(key[0], key[1], "remove", version, None)
            if key[0] in ("feature_view", "on_demand_feature_view"):
                users = sorted({s for f in _features(old_spec) for s in served.get(f"{key[1]}:{f}", [])})
                if users:
                    ch.breaking.append(f"removed while feature services {users} use it")
            changes.append(ch)
    return Plan(base_version, changes)


def _breaking(kind: str, name: str, old: dict[str, Any], new: dict[str, Any], served: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    if kind == "entity" and old.get("join_keys") != new.get("join_keys"):
        out.append(f"join keys changed from {old.get('join_keys')} to {new.get('join_keys')}")
    if kind in ("feature_view", "on_demand_feature_view"):
        of, nf = _features(old), _features(new)
        for f, dt in of.items():
            if f not in nf:
                users = served.get(f"{name}:{f}", [])
                if users:
                    out.append(f"feature {f!r} removed while feature services {users} use it")
            elif nf[f] != dt:
                out.append(f"feature {f!r} changed dtype from {dt} to {nf[f]}")
        old_keys = [k for e in old.get("entity_specs") or [] for k in e.get("join_keys", [])]
        new_keys = [k for e in new.get("entity_specs") or [] for k in e.get("join_keys", [])]
        if old_keys != new_keys:
            out.append(f"join keys changed from {old_keys} to {new_keys}")
        if old.get("aggregations") and _state_shape(old) != _state_shape(new):
            out.append(f"its online aggregation state was kept for other aggregations; reads and stream writes "
                       f"refuse it until it is rebuilt: quiver backfill {name} --online")
    return out


def _state_shape(spec: dict[str, Any]) -> tuple[Any, ...]:
    """What of an aggregate view's spec its online state layout follows (the stats come
    from the functions over columns, in order; older events expire past the longest window)."""
    aggs = spec.get("aggregations") or []
    return tuple((a["column"], a["function"], a.get("dtype")) for a in aggs), max((a["window"] for a in aggs), default=0)
