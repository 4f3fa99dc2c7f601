"""Feature definitions of the fraud example (copied into the repository by ``quiver init``)."""

from datetime import timedelta

from quiver import Aggregation, Entity, FeatureService, FeatureView, Field, FileSource, KafkaSource, types

user = Entity(name="user", join_keys=["user_id"], description="A card holder")
merchant = Entity(name="merchant", join_keys=["merchant_id"], description="A shop that takes cards")

user_profile = FeatureView(
    name="user_profile",
    entities=[user],
    source=FileSource(
        path="data/user_profile.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
    ),
    schema=[
        Field("account_age_days", types.Int64),
        Field("credit_limit", types.Float64),
        Field("country", types.String),
        Field("avg_amount_90d", types.Float64),
        Field("num_orders_90d", types.Int64),
    ],
    ttl=timedelta(days=2),
    owner="risk@example.com",
    description="Daily profile snapshot of each user",
    tags={"team": "risk"},
    freshness_sla=timedelta(days=1),
)

merchant_stats = FeatureView(
    name="merchant_stats",
    entities=[merchant],
    source=FileSource(
        path="data/merchant_stats.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
    ),
    schema=[
        Field("merchant_risk", types.Float64),
        Field("merchant_tx_count_1h", types.Int64),
        Field("merchant_avg_amount_1h", types.Float64),
    ],
    ttl=timedelta(hours=2),
    owner="merchants@example.com",
    description="Hourly statistics of each merchant",
    tags={"team": "merchants"},
    freshness_sla=timedelta(hours=2),
)

transactions = KafkaSource(
    name="transactions",
    topic="transactions",
    timestamp_field="event_timestamp",
    batch_source=FileSource(path="data/transactions.parquet", timestamp_field="event_timestamp",
                            created_timestamp_column="created_timestamp"),
)

user_tx = FeatureView(
    name="user_tx",
    entities=[user],
    source=transactions,
    aggregations=[
        Aggregation("amount", "count", window=timedelta(minutes=10)),
        Aggregation("amount", "sum", window=timedelta(minutes=10)),
        Aggregation("amount", "count", window=timedelta(hours=1)),
        Aggregation("amount", "sum", window=timedelta(hours=1)),
        Aggregation("amount", "count", window=timedelta(days=1)),
        Aggregation("amount", "sum", window=timedelta(days=1)),
    ],
    owner="risk@example.com",
    description="How much and how often each user spent recently",
    tags={"team": "risk"},
    freshness_sla=timedelta(minutes=5),
)

fraud_model = FeatureService(
    name="fraud_model",
    features=[user_profile, merchant_stats],
    owner="risk@example.com",
    description="Features of the card-fraud classifier",
)
