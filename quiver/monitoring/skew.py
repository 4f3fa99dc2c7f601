"""Training/serving skew: recompute logged served vectors offline and compare.

For each feature list in the served-vector log, the logged rows become an
entity dataframe (join keys, ``event_timestamp`` = the request time) for
``get_historical_features``; per feature, the share of rows whose served value
differs from the recomputed one is reported with examples. Values must match
exactly (window sums are exact on both paths, ``quiver.aggregation.exact``),
except on-demand outputs, compared to a relative 1e-9: a Python function's
float arithmetic over a row and over a column may round differently. On-demand outputs are recomputed by
``get_historical_features`` too (it runs the same function), from the request
values logged with them (columns ``__request.{field}``, given to it as entity
columns); an on-demand feature whose request fields were not logged is listed
under ``not_compared`` with the reason.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from quiver.monitoring.served_compact import compact
from quiver.monitoring.results import FAILING, OK, CheckResult, ResultStore, now_utc
from quiver.monitoring.served_log import REQUEST_PREFIX, REQUEST_TIME, served_dir, served_log_for
from quiver.monitoring.tables import quote, sql_list
from quiver.timeutil import to_utc

__all__ = ["FeatureSkew", "SkewReport", "check_skew"]

REL_TOL = 1e-9
EXAMPLES = 5


@dataclass
class FeatureSkew:
    ref: str
    compared: int
    differ: int
    threshold: float
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.differ / self.compared if self.compared else 0.0

    @property
    def status(self) -> str:
        return FAILING if self.share > self.threshold else OK

    def to_dict(self) -> dict[str, Any]:
        return {"feature": self.ref, "compared": self.compared, "differ": self.differ, "share": self.share,
                "threshold": self.threshold, "status": self.status, "examples": self.examples}


@dataclass
class SkewReport:
    requests: int
    features: list[FeatureSkew]
    time: datetime
    not_compared: dict[str, str] = field(default_factory=dict)  # feature -> why

    @property
    def ok(self) -> bool:
        return all(f.status == OK for f in self.features)

    def feature(self, ref: str) -> FeatureSkew:
        return next(f for f in self.features if f.ref == ref)

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "ok": self.ok, "rows": self.requests,
                "features": [f.to_dict() for f in self.features], "not_compared": dict(self.not_compared)}


def _groups(root: str) -> dict[str, tuple[dict[str, str], list[str], list[str], list[str]]]:
    """Files of the served log grouped by feature list: signature -> (refs, join keys,
    request fields logged, files)."""
    out: dict[str, tuple[dict[str, str], list[str], list[str], list[str]]] = {}
    for f in sorted(glob.glob(os.path.join(root, "date=*", "*.parquet"))):
        meta = pq.read_schema(f).metadata or {}
        refs_raw = meta.get(b"quiver.refs")
        if refs_raw is None:
            continue
        keys_raw, request_raw = meta.get(b"quiver.join_keys", b"[]"), meta.get(b"quiver.request", b"[]")
        sig = b"|".join((refs_raw, keys_raw, request_raw)).decode()
        if sig not in out:
            out[sig] = (json.loads(refs_raw), json.loads(keys_raw), json.loads(request_raw), [])
        out[sig][3].append(f)
    return out


def _comparable(store: Any, refs: dict[str, str], request: list[str], skipped: dict[str, str]) -> dict[str, str]:
    """The logged columns that can be recomputed: stored features, and on-demand ones
    whose request fields were logged (the others go to ``skipped`` with the reason)."""
    out = {}
    for col, ref in refs.items():
        view = _view_of(store, ref)
        missing = [] if hasattr(view, "aggregations") else [f for f in view.request_dtypes if f not in request]
        if missing:
            skipped.setdefault(ref, f"request field(s) {', '.join(missing)} not in the served log (the caller of "
                                    "ServedLog.log passes no request values)")
        else:
            out[col] = ref
    return out


def _tolerant(store: Any, ref: str) -> bool:
    """Only an on-demand output (a Python function's float arithmetic) gets a tolerance."""
    return not hasattr(_view_of(store, ref), "aggregations")


def _view_of(store: Any, ref: str) -> Any:
    """The view (feature view or on-demand view) of a logged reference ``view[@version]:feature``."""
    return store.registry.get_view(ref.partition(":")[0].split("@")[0])


def _differs(served: pa.ChunkedArray, expected: pa.ChunkedArray, tolerant: bool) -> pa.ChunkedArray:
    both_null = pc.and_(pc.is_null(served), pc.is_null(expected))
    one_null = pc.xor(pc.is_null(served), pc.is_null(expected))
    if tolerant and pa.types.is_floating(served.type) and pa.types.is_floating(expected.type):
        gap = pc.abs(pc.subtract(served, expected))
        scale = pc.max_element_wise(pc.abs(served), pc.abs(expected))
        ok = pc.less_equal(gap, pc.add(pc.multiply(scale, REL_TOL), 1e-12))
    else:
        if served.type != expected.type:
            expected = expected.cast(served.type, safe=False)
        ok = pc.equal(served, expected)
    return pc.or_(one_null, pc.and_(pc.invert(both_null), pc.invert(pc.fill_null(ok, False))))


def check_skew(store: Any, *, start: Any = None, end: Any = None, limit: int | None = None,
               record: bool = True) -> SkewReport:
    """Compare logged served values with ``get_historical_features`` at the request times."""
    logger = served_log_for(store.config)
    if logger is not None:
        logger.flush()  # what this process served so far counts too
    root = str(served_dir(store.config))
    compact(root)  # spool files (what servers logged lately) -> Parquet
    where, params = [], []
    if start is not None:
        where.append(f"{quote(REQUEST_TIME)} >= ?")
        params.append(to_utc(start, "start"))
    if end is not None:
        where.append(f"{quote(REQUEST_TIME)} < ?")
        params.append(to_utc(end, "end"))
    cond = (" WHERE " + " AND ".join(where)) if where else ""
    features: dict[str, FeatureSkew] = {}
    total = 0
    from quiver.monitoring.quality import DEFAULTS
    from quiver.monitoring.tables import connection

    threshold = float((store.config.monitoring.get("thresholds") or {}).get("skew", DEFAULTS["skew"]))
    skipped: dict[str, str] = {}
    for refs, keys, request, files in _groups(root).values():
        con = connection(store.offline)
        try:
            q = f"SELECT * FROM read_parquet({sql_list(files)}, union_by_name=true){cond} ORDER BY {quote(REQUEST_TIME)}"
            if limit:
                q = f"SELECT * FROM ({q} DESC LIMIT {int(limit)}) ORDER BY {quote(REQUEST_TIME)}"
            served = con.sql(q, params=params).to_arrow_table()
        finally:
            con.close()
        if served.num_rows == 0:
            continue
        refs = _comparable(store, refs, request, skipped)
        if not refs:
            continue
        total += served.num_rows
        entity = pa.table({**{k: served[k] for k in keys}, "event_timestamp": served[REQUEST_TIME],
                           **{f: served[REQUEST_PREFIX + f] for f in request}})
        ref_list = list(refs.values())
        expected = store.get_historical_features(entity, features=ref_list, full_feature_names=True).to_arrow()
        for col, ref in refs.items():
            full = ref.split("@")[0].replace(":", "__") if "@" not in ref else ref.replace(":", "__")
            exp_col = expected[full] if full in expected.column_names else expected[ref.partition(":")[2]]
            diff = _differs(served[col], exp_col, _tolerant(store, ref))
            n_diff = int(pc.sum(diff).as_py() or 0)
            fs = features.setdefault(ref, FeatureSkew(ref, 0, 0, threshold))
            fs.compared += served.num_rows
            fs.differ += n_diff
            if n_diff and len(fs.examples) < EXAMPLES:
                idx = pc.indices_nonzero(diff).to_pylist()[: EXAMPLES - len(fs.examples)]
                for i in idx:
                    fs.examples.append({**{k: served[k][i].as_py() for k in keys},
                                        "request_time": served[REQUEST_TIME][i].as_py().isoformat(),
                                        "served": served[col][i].as_py(), "expected": exp_col[i].as_py()})
    skipped = {r: why for r, why in skipped.items() if r not in features}  # compared in another group
    rep = SkewReport(total, sorted(features.values(), key=lambda f: f.ref), now_utc(), skipped)
    if record and rep.features:
        now = rep.time
        results = []
        for f in rep.features:
            view, _, feat = f.ref.partition(":")
            keys_txt = "; ".join(", ".join(f"{k}={v}" for k, v in ex.items()
                                           if k not in ("request_time", "served", "expected")) for ex in f.examples)
            detail = f"{f.differ} of {f.compared} served values differ from the offline recomputation" + (
                f" (e.g. {keys_txt})" if keys_txt else "")
            results.append(CheckResult(now, view.split("@")[0], feat, "skew", f.share, f.threshold, f.status, detail,
                                       {"examples": f.examples}))
        transitions = ResultStore(store.registry).record(results)
        if transitions:
            from quiver.monitoring.alerts import make_alerts

            alerts = make_alerts(store.config.project, transitions)
            ResultStore(store.registry).add_alerts(alerts)
            store.monitoring.notifier.send(alerts)
    return rep
