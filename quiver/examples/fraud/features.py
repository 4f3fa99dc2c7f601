"""Feature definitions of the fraud example (copied into the repository by ``quiver init``)."""

import math
from datetime import timedelta

from quiver import (
    Aggregation,
    Entity,
    FeatureService,
    FeatureView,
    Field,
    FileSource,
    KafkaSource,
    RequestSource,
    on_demand_feature_view,
    types,
)

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

user_home = FeatureView(
    name="user_home",
    entities=[user],
    source=FileSource(
        path="data/user_home.parquet",
        timestamp_field="event_timestamp",
        created_timestamp_column="created_timestamp",
    ),
    schema=[Field("home_lat", types.Float64), Field("home_lon", types.Float64)],
    owner="risk@example.com",
    description="Where each user lives (latitude, longitude in degrees)",
    tags={"team": "risk"},
)

# values that arrive with each scoring request (columns of the entity frame at training time)
tx_amount = RequestSource(
    name="tx_amount",
    schema=[Field("amount", types.Float64)],
    description="The amount of the transaction being scored",
)
tx_location = RequestSource(
    name="tx_location",
    schema=[Field("lat", types.Float64), Field("lon", types.Float64)],
    description="Where the transaction being scored happens (degrees)",
)


@on_demand_feature_view(
    sources=[tx_location, user_home],
    schema=[Field("distance_from_home_km", types.Float64)],
    mode="python",
    owner="risk@example.com",
    description="Great-circle distance between the transaction and the user's home",
)
def tx_distance(row):
    if None in (row["lat"], row["lon"], row["home_lat"], row["home_lon"]):
        return {"distance_from_home_km": None}
    p1, p2 = math.radians(row["home_lat"]), math.radians(row["lat"])
    dp, dl = p2 - p1, math.radians(row["lon"] - row["home_lon"])
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return {"distance_from_home_km": 2 * 6371.0 * math.asin(min(1.0, math.sqrt(a)))}


@on_demand_feature_view(
    sources=[tx_amount, user_profile[["avg_amount_90d"]]],
    schema=[Field("amount_to_avg_90d", types.Float64)],
    mode="python",
    owner="risk@example.com",
    description="The transaction amount divided by the user's 90-day average amount",
)
def amount_vs_avg(row):
    avg = row["avg_amount_90d"]
    if row["amount"] is None or not avg:
        return {"amount_to_avg_90d": None}
    return {"amount_to_avg_90d": row["amount"] / avg}


fraud_model = FeatureService(
    name="fraud_model",
    features=[user_profile, merchant_stats, tx_distance, amount_vs_avg],
    owner="risk@example.com",
    description="Features of the card-fraud classifier",
)
