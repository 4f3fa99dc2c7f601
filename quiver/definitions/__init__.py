"""Definitions: frozen, validated objects that describe features.

Nothing here touches data; the registry stores these, the plans compile them.
"""

from quiver import types
from quiver.definitions.aggregation import FUNCTIONS, Aggregation
from quiver.definitions.entity import Entity
from quiver.definitions.feature_service import FeatureService
from quiver.definitions.feature_view import FeatureView, FeatureViewProjection
from quiver.definitions.field import Field
from quiver.definitions.on_demand import OnDemandFeatureView, on_demand_feature_view
from quiver.definitions.refs import FeatureRef
from quiver.definitions.sources import FileSource, KafkaSource, PushSource, RequestSource, Source

__all__ = [
    "FUNCTIONS",
    "Aggregation",
    "Entity",
    "FeatureRef",
    "FeatureService",
    "FeatureView",
    "FeatureViewProjection",
    "Field",
    "FileSource",
    "KafkaSource",
    "OnDemandFeatureView",
    "PushSource",
    "RequestSource",
    "Source",
    "on_demand_feature_view",
    "types",
]
