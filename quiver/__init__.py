"""quiver: define a feature once, serve it for training and for inference.

    from quiver import FeatureStore
    store = FeatureStore("path/to/repo")
    store.apply()
    train = store.get_historical_features(labels, feature_service="fraud_model").to_pandas()
    store.materialize(start, end)
    store.get_online_features(feature_service="fraud_model", entity_rows=[{"user_id": 1}]).to_dict()
"""

from quiver import types
from quiver.definitions import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    KafkaSource,
    OnDemandFeatureView,
    PushSource,
    RequestSource,
    on_demand_feature_view,
)
from quiver.errors import QuiverError
from quiver.store import FeatureStore

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "Entity",
    "FeatureService",
    "FeatureStore",
    "FeatureView",
    "Field",
    "FileSource",
    "KafkaSource",
    "OnDemandFeatureView",
    "PushSource",
    "QuiverError",
    "RequestSource",
    "on_demand_feature_view",
    "types",
]
