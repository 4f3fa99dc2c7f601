"""The fraud model end to end, for ``make demo``: train, serve, check skew,
then break things on purpose and watch the monitor catch each one.

``run(store, console)`` expects the fraud example repository, applied. It
trains a small scikit-learn classifier on the ``fraud_model`` training set,
scores requests through the feature service (in process, or against a running
feature server with ``server_url=``), shows the skew check passing, then:

1. one view stops being refreshed (``merchant_stats`` past its 2h SLA);
2. a feature starts arriving null (``user_profile:credit_limit``);
3. a shifted distribution is pushed (amounts three times larger into ``transactions``);

and runs the monitor after each. Times are those of the example's data: the
monitor is asked to look at the data's last day (``now=``), not the wall clock.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = ["run", "train", "score"]

NUMERIC = ["account_age_days", "credit_limit", "avg_amount_90d", "num_orders_90d", "merchant_risk",
           "merchant_tx_count_1h", "merchant_avg_amount_1h", "distance_from_home_km", "amount_to_avg_90d"]


def _requests(labels: pa.Table, seed: int = 11) -> pa.Table:
    """The request values a label row would have come with: amount and location (fraud: larger, farther)."""
    rng = np.random.default_rng(seed)
    n = labels.num_rows
    fraud = labels["is_fraud"].to_numpy(zero_copy_only=False)
    amount = np.round(rng.lognormal(3.5, 1.0, n) * np.where(fraud, 4.0, 1.0), 2)
    lat = rng.uniform(-60, 70, n)
    lon = rng.uniform(-180, 180, n)
    return labels.append_column("amount", pa.array(amount)).append_column("lat", pa.array(lat)) \
        .append_column("lon", pa.array(lon))


def train(store: Any, console: Any = None) -> Any:
    """A gradient-boosted classifier on the ``fraud_model`` training set."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score

    labels = _requests(pq.read_table(store.repo_path / "data" / "labels.parquet"))
    job = store.get_historical_features(labels, feature_service="fraud_model")
    df = job.to_pandas()
    try:
        job.persist("fraud_model_training")
    except Exception:  # already saved by an earlier run: keep it
        pass
    cols = [c for c in NUMERIC if c in df.columns]
    x, y = df[cols].to_numpy(dtype="float64"), df["is_fraud"].to_numpy()
    cut = int(len(df) * 0.8)
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(x[:cut], y[:cut])
    auc = roc_auc_score(y[cut:], model.predict_proba(x[cut:])[:, 1]) if y[cut:].any() else float("nan")
    model.feature_columns = cols
    if console:
        console.print(f"trained on {cut} rows x {len(cols)} features (training set persisted as "
                      f"'fraud_model_training'); held-out AUC {auc:.3f}")
    return model


def score(store: Any, model: Any, n: int = 200, server_url: str | None = None, seed: int = 5) -> np.ndarray:
    """Fraud probabilities of ``n`` requests, features fetched from the feature service."""
    labels = _requests(pq.read_table(store.repo_path / "data" / "labels.parquet"), seed).slice(0, n)
    rows = [{k: r[k] for k in ("user_id", "merchant_id", "amount", "lat", "lon")} for r in labels.to_pylist()]
    if server_url:
        import httpx

        body = {"feature_service": "fraud_model",
                "entities": {"user_id": [r["user_id"] for r in rows], "merchant_id": [r["merchant_id"] for r in rows]},
                "request_context": {k: [r[k] for r in rows] for k in ("amount", "lat", "lon")}}
        resp = httpx.post(f"{server_url}/v1/features", json=body, timeout=30)
        resp.raise_for_status()
        out = resp.json()
        names = out["feature_names"]
        feats = {name: [r["values"][i] for r in out["results"]] for i, name in enumerate(names)}
    else:
        feats = store.get_online_features(feature_service="fraud_model", entity_rows=rows).to_dict()
    x = np.array([[np.nan if v is None else v for v in feats[c]] for c in model.feature_columns], dtype="float64").T
    return model.predict_proba(x)[:, 1]  # type: ignore[no-any-return]


def _show(console: Any, run: Any, title: str) -> None:
    caught = [f"{r.view}{':' + r.feature if r.feature else ''} {r.check} = {r.value:.3g} (threshold {r.threshold:.3g})"
              if r.value is not None else f"{r.view} {r.check}: {r.detail}" for r in run.failing]
    console.print(f"[bold]{title}[/]: " + ("[green]all checks pass[/]" if run.ok else "[red]caught[/] " + "; ".join(caught)))


def run(store: Any, console: Any, server_url: str | None = None) -> dict[str, Any]:
    """The whole story; returns what each monitor run flagged (for tests and the lead's demo)."""

    data = store.repo_path / "data"
    end = pc.max(pq.read_table(data / "merchant_stats.parquet", columns=["event_timestamp"])["event_timestamp"]).as_py()
    now = end + timedelta(minutes=30)
    store.materialize(now - timedelta(days=30), now)
    model = train(store, console)
    probs = score(store, model, server_url=server_url)
    console.print(f"scored {len(probs)} requests through the feature service: mean fraud probability "
                  f"{probs.mean():.3f}, {int((probs > 0.5).sum())} flagged")
    from quiver.monitoring.served_log import served_log_for

    log = served_log_for(store.config)
    if server_url and log is not None:
        import time

        time.sleep(log.flush_seconds + 0.5)  # the server writes its log off the request path, once per flush_seconds
    if log is None:
        console.print("served-vector logging is off (quiver.yaml monitoring.served_log.sample_rate): no skew check")
    skew = store.monitor_skew()
    console.print(f"skew check: {skew.requests} served vectors recomputed offline; "
                  + ("[green]no feature differs[/]" if skew.ok else "[red]skew found[/]"))
    out: dict[str, Any] = {"skew_ok": skew.ok}
    base = store.monitor(now=now)
    _show(console, base, "monitor on clean data")
    out["clean"] = base.failing

    # 1. merchant_stats stops being refreshed: three hours later, nothing new arrived
    later = now + timedelta(hours=3)
    store.materialize(now, later, views=["user_profile"])
    r1 = store.monitor(["merchant_stats"], now=later)
    _show(console, r1, "1. merchant_stats not refreshed for 3h (SLA 2h)")
    out["stale"] = r1.failing

    # 2. credit_limit starts arriving null: a new day of profiles, 70% of them without it
    prof = pq.read_table(data / "user_profile.parquet")
    last = pc.max(prof["event_timestamp"]).as_py()
    day = prof.filter(pc.greater_equal(prof["event_timestamp"], pa.scalar(last - timedelta(days=1), prof["event_timestamp"].type)))
    shift = pa.scalar(timedelta(days=1), pa.duration("us"))
    day = day.set_column(day.schema.get_field_index("event_timestamp"), "event_timestamp", pc.add(day["event_timestamp"], shift))
    if "created_timestamp" in day.column_names:
        day = day.set_column(day.schema.get_field_index("created_timestamp"), "created_timestamp",
                             pc.add(day["created_timestamp"], shift))
    rng = np.random.default_rng(3)
    nulls = pa.array(rng.random(day.num_rows) < 0.7)
    day = day.set_column(day.schema.get_field_index("credit_limit"), "credit_limit",
                         pc.if_else(nulls, pa.scalar(None, pa.float64()), day["credit_limit"]))
    pq.write_table(pa.concat_tables([prof, day]), data / "user_profile.parquet")
    next_day = last + timedelta(days=1, hours=6)
    r2 = store.monitor(["user_profile"], now=next_day)
    _show(console, r2, "2. credit_limit arrives 70% null")
    out["nulls"] = r2.failing

    # 3. a shifted distribution is pushed: the next hour's transactions, three times larger
    tx = pq.read_table(data / "transactions.parquet")
    t_end = pc.max(tx["event_timestamp"]).as_py()
    hour = tx.filter(pc.greater_equal(tx["event_timestamp"], pa.scalar(t_end - timedelta(days=1), tx["event_timestamp"].type)))
    hour = hour.set_column(hour.schema.get_field_index("amount"), "amount", pc.multiply(hour["amount"], 3.0))
    hour = hour.set_column(hour.schema.get_field_index("event_timestamp"), "event_timestamp",
                           pc.add(hour["event_timestamp"], pa.scalar(timedelta(days=1), pa.duration("us"))))
    store.push("transactions", hour.drop_columns([c for c in ("created_timestamp",) if c in hour.column_names]))
    r3 = store.monitor(["user_tx"], now=t_end + timedelta(days=1))
    _show(console, r3, "3. transaction amounts pushed 3x larger")
    out["shift"] = r3.failing
    report = store.monitor_report(store.repo_path / "monitor-report.html")
    console.print(f"report: {report} (open it in a browser; no network needed)")
    return out
