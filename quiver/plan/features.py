"""Resolve feature references and services to views, once for every read path.

``get_historical_features``, ``get_online_features`` and the server all turn
``["user_profile:credit_limit", "user_tx@2:amount_sum_10m"]`` (or a service
name) into the same ``FeatureSelection``, so they agree on what is asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from quiver.definitions import FeatureRef, FeatureService, FeatureView, OnDemandFeatureView
from quiver.errors import InputError, NotFoundError, closest

__all__ = ["FeatureSelection", "ViewSelection", "resolve_features"]

View = FeatureView | OnDemandFeatureView


@dataclass
class ViewSelection:
    """The features asked of one view (at one version)."""

    view: View
    version: int | None
    features: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.view.name


@dataclass
class FeatureSelection:
    """What a request asks for, grouped by view, in request order."""

    refs: list[FeatureRef]
    views: list[ViewSelection]
    service: str | None = None

    @property
    def stored(self) -> list[ViewSelection]:
        return [v for v in self.views if isinstance(v.view, FeatureView)]

    @property
    def on_demand(self) -> list[ViewSelection]:
        return [v for v in self.views if isinstance(v.view, OnDemandFeatureView)]

    def output_names(self, full_feature_names: bool = False) -> list[str]:
        """Column names of the result; a clash between views needs full names."""
        if full_feature_names:
            return [f"{r.view}__{r.feature}" for r in self.refs]
        names = [r.feature for r in self.refs]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise InputError(
                f"features {dups} come from more than one view; pass full_feature_names=True to get 'view__feature' columns"
            )
        return names


def resolve_features(
    features: Sequence[str] | None,
    feature_service: str | FeatureService | None,
    get_view: Callable[[str, int | None], View],
    get_service: Callable[[str], FeatureService],
    view_names: Callable[[], list[str]],
) -> FeatureSelection:
    """Features or a service -> a ``FeatureSelection``; unknown names raise
    ``NotFoundError`` with the closest known names."""
    service_name = None
    if feature_service is not None:
        if features:
            raise InputError("pass either features=[...] or feature_service=..., not both")
        svc = feature_service if isinstance(feature_service, FeatureService) else get_service(feature_service)
        service_name = svc.name
        features = list(svc.features)
    if not features:
        raise InputError("no features asked for: pass features=['view:feature', ...] or feature_service='name'")
    if isinstance(features, str):
        features = [features]
    refs = [FeatureRef.parse(f) for f in features]
    by_key: dict[tuple[str, int | None], ViewSelection] = {}
    for ref in refs:
        key = (ref.view, ref.version)
        sel = by_key.get(key)
        if sel is None:
            try:
                view = get_view(ref.view, ref.version)
            except NotFoundError:
                raise
            except KeyError:
                raise NotFoundError(f"unknown feature view {ref.view!r}.{closest(ref.view, view_names())}") from None
            sel = by_key[key] = ViewSelection(view, ref.version)
        if ref.feature not in sel.view.feature_names:
            raise NotFoundError(
                f"feature view {ref.view!r} has no feature {ref.feature!r}."
                f"{closest(ref.feature, sel.view.feature_names)} Its features: {', '.join(sel.view.feature_names)}"
            )
        if ref.feature in sel.features:
            raise InputError(f"feature {ref} is asked for twice")
        sel.features.append(ref.feature)
    return FeatureSelection(refs, list(by_key.values()), service_name)

