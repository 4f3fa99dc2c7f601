"""Synthetic data for the fraud example, deterministic for a given scale.

Tables (Parquet, ``timestamp[us, tz=UTC]`` times), the same tables and columns
as the project's shared benchmark workload:

* ``transactions``: tx_id, user_id, merchant_id, amount, event_timestamp, created_timestamp
* ``user_profile``: a snapshot per user per day: account_age_days, credit_limit,
  country, avg_amount_90d, num_orders_90d (about 2% nulls in two columns)
* ``merchant_stats``: a snapshot per merchant per hour: merchant_risk,
  merchant_tx_count_1h, merchant_avg_amount_1h
* ``labels``: user_id, merchant_id, event_timestamp, is_fraud (about 1% of users unknown)
* ``user_home``: user_id, event_timestamp, created_timestamp, home_lat, home_lon
  (one row per user, and a second for the few who move house; drawn from its own
  random stream so the other tables do not change)

A small share of snapshot rows is issued again later with a corrected value
and a newer created_timestamp, so joins must break ties on created time.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["SCALES", "generate"]

# name: (users, merchants, days, transactions, labels)
SCALES = {
    "tiny": (200, 20, 7, 5_000, 1_000),
    "small": (1_000, 100, 14, 100_000, 10_000),
    "medium": (100_000, 5_000, 30, 2_000_000, 1_000_000),
    "large": (1_000_000, 20_000, 30, 20_000_000, 5_000_000),
}
SEC = 1_000_000
HOUR = 3600 * SEC
DAY = 24 * HOUR
TS = pa.timestamp("us", tz="UTC")
COUNTRIES = np.array(["US", "GB", "DE", "FR", "IN", "BR", "JP", "NG"])


def _ts(base_us: int, offsets: np.ndarray) -> pa.Array:
    return pa.array(offsets.astype("int64") + base_us, type=pa.int64()).cast(TS)


def _reissue(rng: np.random.Generator, cols: dict[str, np.ndarray], value_col: str, share: float = 0.005) -> dict[str, np.ndarray]:
    """Append corrected copies of a few rows: same event time, created 30 minutes later, value + 1."""
    n = len(cols["t"])
    idx = np.flatnonzero(rng.random(n) < share)
    out = {k: np.concatenate([v, v[idx]]) for k, v in cols.items()}
    out["created"][n:] += 30 * 60 * SEC
    if out[value_col].dtype.kind in "if":
        out[value_col][n:] += 1
    return out


def _snapshot_table(key: str, cols: dict[str, np.ndarray], base_us: int) -> pa.Table:
    data: dict[str, pa.Array] = {key: pa.array(cols[key]), "event_timestamp": _ts(base_us, cols["t"]),
                                 "created_timestamp": _ts(base_us, cols["created"])}
    for k, v in cols.items():
        if k not in (key, "t", "created"):
            data[k] = pa.array(v, from_pandas=True)  # NaN -> null
    return pa.table(data)


def generate(out: str | Path, scale: str = "small", start: datetime | None = None, seed: int = 7) -> dict[str, Path]:
    """Write the tables under ``out``; returns their paths by table name."""
    users, merchants, days, n_tx, n_labels = SCALES[scale]
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    base = int(start.timestamp() * SEC)
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    t = np.sort(rng.integers(0, days * DAY, n_tx))
    tx = pa.table({
        "tx_id": np.arange(n_tx, dtype="int64"),
        "user_id": (rng.zipf(1.3, n_tx) % users).astype("int64"),  # a few very busy users
        "merchant_id": rng.integers(0, merchants, n_tx).astype("int64"),
        "amount": np.round(rng.lognormal(3.5, 1.2, n_tx), 2),
        "event_timestamp": _ts(base, t),
        "created_timestamp": _ts(base, t + rng.exponential(2 * SEC, n_tx).astype("int64")),
    })

    uid = np.repeat(np.arange(users, dtype="int64"), days)
    day = np.tile(np.arange(days, dtype="int64"), users)
    ut = day * DAY + rng.integers(0, 6 * HOUR, uid.size)
    n = uid.size
    profile = _snapshot_table("user_id", _reissue(rng, {
        "user_id": uid,
        "t": ut,
        "created": ut + rng.integers(0, 10 * 60 * SEC, n),
        "account_age_days": (rng.integers(0, 3650, users)[uid] + day).astype("int64"),
        "credit_limit": np.where(rng.random(n) < 0.02, np.nan, np.round(rng.uniform(500, 20_000, n), 0)),
        "country": COUNTRIES[rng.integers(0, len(COUNTRIES), users)][uid],
        "avg_amount_90d": np.where(rng.random(n) < 0.02, np.nan, np.round(rng.lognormal(3.5, 0.8, n), 2)),
        "num_orders_90d": rng.poisson(20, n).astype("int64"),
    }, "account_age_days"), base)

    mid = np.repeat(np.arange(merchants, dtype="int64"), days * 24)
    hour = np.tile(np.arange(days * 24, dtype="int64"), merchants)
    mt = hour * HOUR + rng.integers(0, 5 * 60 * SEC, mid.size)
    m = mid.size
    stats = _snapshot_table("merchant_id", _reissue(rng, {
        "merchant_id": mid,
        "t": mt,
        "created": mt + rng.integers(0, 60 * SEC, m),
        "merchant_risk": np.round(rng.beta(1, 20, m), 4),
        "merchant_tx_count_1h": rng.poisson(30, m).astype("int64"),
        "merchant_avg_amount_1h": np.round(rng.lognormal(3.5, 0.5, m), 2),
    }, "merchant_risk"), base)

    lt = rng.integers(DAY, days * DAY, n_labels)
    luid = rng.integers(0, users, n_labels).astype("int64")
    luid = np.where(rng.random(n_labels) < 0.01, users + rng.integers(0, users, n_labels), luid)
    labels = pa.table({
        "user_id": luid,
        "merchant_id": rng.integers(0, merchants, n_labels).astype("int64"),
        "event_timestamp": _ts(base, lt),
        "is_fraud": rng.random(n_labels) < 0.02,
    })

    home = _user_home(users, days, base, seed)

    paths = {}
    tables = (("transactions", tx), ("user_profile", profile), ("merchant_stats", stats), ("labels", labels),
              ("user_home", home))
    for name, table in tables:
        paths[name] = out / f"{name}.parquet"
        pq.write_table(table, paths[name])
    return paths


def _user_home(users: int, days: int, base: int, seed: int) -> pa.Table:
    """Where each user lives: a point near one of a few cities; about 5% move once."""
    rng = np.random.default_rng(seed + 1)
    cities = np.array([[40.71, -74.01], [51.51, -0.13], [52.52, 13.40], [48.86, 2.35],
                       [19.08, 72.88], [-23.55, -46.63], [35.68, 139.69], [6.52, 3.38]])
    city = rng.integers(0, len(cities), users)
    moved = np.flatnonzero(rng.random(users) < 0.05)
    uid = np.concatenate([np.arange(users, dtype="int64"), moved.astype("int64")])
    t = np.concatenate([np.zeros(users, dtype="int64"), rng.integers(1, days, moved.size) * DAY])
    city = np.concatenate([city, rng.integers(0, len(cities), moved.size)])
    jitter = rng.normal(0, 0.2, (uid.size, 2))
    return pa.table({
        "user_id": uid,
        "event_timestamp": _ts(base, t),
        "created_timestamp": _ts(base, t),
        "home_lat": np.round(cities[city, 0] + jitter[:, 0], 5),
        "home_lon": np.round(cities[city, 1] + jitter[:, 1], 5),
    })
