"""FeatureService: the named set of features one model consumes."""

from __future__ import annotations

from typing import Any

from quiver.definitions._base import Definition, check_name
from quiver.definitions.feature_view import FeatureView, FeatureViewProjection
from quiver.definitions.on_demand import OnDemandFeatureView
from quiver.definitions.refs import FeatureRef
from quiver.errors import DefinitionError, InputError

__all__ = ["FeatureService"]


class FeatureService(Definition):
    """``FeatureService("fraud_model", features=[profile, user_tx[["amount_sum_10m"]], "merchant_stats:merchant_risk"])``.

    String references are checked against the registry at apply.
    """

    kind = "feature_service"
    features: tuple[str, ...]

    def __init__(
        self,
        name: str,
        features: list[Any],
        *,
        owner: str = "",
        description: str = "",
        tags: dict[str, str] | None = None,
    ) -> None:
        object.__setattr__(self, "name", check_name("feature service", name))
        label = f"feature service {name!r}"
        refs: list[str] = []
        for item in features or ():
            if isinstance(item, FeatureView | OnDemandFeatureView):
                refs += [f"{item.name}:{f}" for f in item.feature_names]
            elif isinstance(item, FeatureViewProjection):
                refs += item.refs()
            elif isinstance(item, str):
                try:
                    refs.append(str(FeatureRef.parse(item)))
                except InputError as e:
                    raise DefinitionError(f"{label}: {e}") from None
            else:
                raise DefinitionError(f"{label}: cannot serve {item!r}; list views, view[[...]] or 'view:feature'")
        if not refs:
            raise DefinitionError(f"{label}: lists no features")
        dups = sorted({r for r in refs if refs.count(r) > 1})
        if dups:
            raise DefinitionError(f"{label}: lists {dups} more than once")
        object.__setattr__(self, "features", tuple(refs))
        self._init_meta(owner, description, tags)

    def to_spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "features": list(self.features), **self._meta_spec()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FeatureService:
        return cls(
            spec["name"],
            spec["features"],
            owner=spec.get("owner", ""),
            description=spec.get("description", ""),
            tags=spec.get("tags"),
        )
