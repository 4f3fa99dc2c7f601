"""FeatureStore: the one door to quiver.

The CLI, the HTTP server and users all call these methods. The facade
validates, resolves names through the registry, and hands the work to the
backends (loaded by ``quiver.plugins``) and to ``quiver.ingest`` /
``quiver.retrieval``; it holds no engine logic of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quiver import plugins, types
from quiver.config import RepoConfig, load_config
from quiver.definitions import Entity, FeatureRef, FeatureService, FeatureView, OnDemandFeatureView
from quiver.definitions._base import Definition
from quiver.definitions.loader import RepoContents, load_repo
from quiver.errors import DefinitionError, InputError, NotFoundError, QuiverError, closest
from quiver.plan.diff import Plan
from quiver.plan.features import FeatureSelection, resolve_features
from quiver.registry import Registry

if TYPE_CHECKING:
    from quiver.protocols import OfflineEngine, OnlineStore

__all__ = ["FeatureStore"]


class FeatureStore:
    """``FeatureStore("path/to/repo")`` reads ``quiver.yaml`` there."""

    def __init__(self, repo_path: str | Path = ".", *, config: RepoConfig | None = None) -> None:
        self.config = config or load_config(repo_path)
        self.repo_path = self.config.repo_path

    @classmethod
    def init(cls, path: str | Path, example: str = "fraud", scale: str = "small") -> FeatureStore:
        """Create a working example repository at ``path`` (definitions, config, data)."""
        from quiver.examples import create_example

        return cls(create_example(path, example, scale))

    # -- backends, created on first use ----------------------------------------------

    @cached_property
    def registry(self) -> Registry:
        store_cls = plugins.load("registry", "sql")
        ttl = float(self.config.registry_options.get("cache_ttl_seconds", 1.0))
        return Registry(store_cls(self.config.registry_url), cache_ttl_seconds=ttl)

    @cached_property
    def offline(self) -> OfflineEngine:
        cls = plugins.load("offline", self.config.offline["engine"])
        return cls(self.config)  # type: ignore[no-any-return]

    @cached_property
    def online(self) -> OnlineStore:
        cls = plugins.load("online", self.config.online["type"])
        return cls(self.config)  # type: ignore[no-any-return]

    def close(self) -> None:
        for name in ("online", "offline", "registry"):
            backend = self.__dict__.pop(name, None)
            if backend is not None:
                backend.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- definitions -------------------------------------------------------------------

    def load_definitions(self) -> RepoContents:
        """Import the repository's Python files (no registry change)."""
        return load_repo(self.repo_path)

    def plan(self, contents: RepoContents | None = None) -> Plan:
        """What ``apply`` would add, change and remove, with breaking changes marked.
        ``apply(plan=...)`` carries it out, or fails if the registry moved since."""
        contents = contents or self.load_definitions()
        self._validate(contents)
        return self.registry.plan(contents.all())

    def apply(
        self,
        objects: Sequence[Definition] | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
        plan: Plan | None = None,
    ) -> Plan:
        """Register the repository's definitions (or ``objects``, or a ``plan`` made
        earlier) in one transaction; returns the plan applied. Objects not in the
        repository are removed only when the whole repository is applied. Raises
        ``ConcurrentApplyError`` when another apply ran after the plan was made."""
        if plan is not None:
            if objects is not None:
                raise InputError("pass either objects or a plan to apply(), not both")
            return self.registry.apply(plan, progress=progress)
        if objects is None:
            contents = self.load_definitions()
            remove = True
        else:
            contents = RepoContents()
            origins: dict[tuple[str, str], str] = {}
            for o in objects:
                if not isinstance(o, Definition):
                    raise InputError(f"apply() takes entities, views and services; got {o!r}")
                contents.add(o, "apply()", origins)
            remove = False
        self._validate(contents)
        plan = self.registry.plan(contents.all(), remove_missing=remove)
        return self.registry.apply(plan, progress=progress)

    def _validate(self, contents: RepoContents) -> None:
        """Checks that need more than one definition, the registry, or the data."""
        views: dict[str, FeatureView | OnDemandFeatureView] = {
            **{v.name: v for v in self.registry.list("feature_view")},  # type: ignore[misc]
            **{v.name: v for v in self.registry.list("on_demand_feature_view")},  # type: ignore[misc]
            **contents.feature_views,
            **contents.on_demand_feature_views,
        }

        def check_ref(owner: str, ref: str) -> None:
            r = FeatureRef.parse(ref)
            if r.view not in views and r.version is None:
                raise DefinitionError(f"{owner}: unknown feature view {r.view!r}.{closest(r.view, views)}")
            try:
                view = views[r.view] if r.version is None else self.registry.get_view(r.view, r.version)
            except NotFoundError as e:
                raise DefinitionError(f"{owner}: {ref!r}: {e}") from None
            if r.feature not in view.feature_names:
                raise DefinitionError(
                    f"{owner}: feature view {str(r).rpartition(':')[0]!r} has no feature {r.feature!r}."
                    f"{closest(r.feature, view.feature_names)} Its features: {', '.join(view.feature_names)}"
                )

        for svc in contents.feature_services.values():
            for ref in svc.features:
                check_ref(f"feature service {svc.name!r}", ref)
        for odfv in contents.on_demand_feature_views.values():
            for ref in odfv.input_refs():
                check_ref(f"on-demand feature view {odfv.name!r}: input", ref)
        schemas: dict[str, Any] = {}
        for fv in contents.feature_views.values():
            self._check_columns(fv, schemas)

    def _check_columns(self, fv: FeatureView, schemas: dict[str, Any]) -> None:
        """A feature, key or aggregation on a column the source lacks fails at apply,
        when the source's schema can be read (no files yet: checked when data arrives)."""
        src = fv.source.batch
        if src is None:
            return
        if src.path not in schemas:
            try:
                schemas[src.path] = self.offline.source_schema(src)
            except QuiverError:
                schemas[src.path] = None
        schema = schemas[src.path]
        if schema is None:
            return
        cols = set(schema.names)
        mapping = {**src.field_mapping, **fv.source.field_mapping}  # source column -> name in the view
        mapped = {mapping.get(c, c): c for c in cols}  # name in the view -> source column
        needed = [(f"aggregation {a.name!r}", a.column) for a in fv.aggregations]
        needed += [(f"feature {f.name!r}", f.name) for f in fv.schema]
        needed += [(f"join key {k!r}", k) for k in fv.join_keys]
        needed += [("timestamp_field", src.timestamp_field)]
        if src.created_timestamp_column:
            needed += [("created_timestamp_column", src.created_timestamp_column)]
        for what, col in needed:
            if col not in mapped and col not in cols:
                raise DefinitionError(
                    f"feature view {fv.name!r}: {what} needs column {col!r}, which source {src.name!r} "
                    f"({src.path}) does not have.{closest(col, cols)} Its columns: {', '.join(sorted(cols))}"
                )
        for a in fv.aggregations:
            if a.function in ("sum", "mean", "stddev"):
                dtype = types.from_arrow(schema.field(mapped.get(a.column, a.column)).type)
                if dtype is None or not (dtype.is_numeric or dtype == types.Bool):
                    raise DefinitionError(
                        f"feature view {fv.name!r}: aggregation {a.name!r} takes the {a.function} of column "
                        f"{a.column!r}, which holds {schema.field(mapped.get(a.column, a.column)).type}, not numbers"
                    )

    # -- registry accessors ------------------------------------------------------------

    def list_entities(self) -> list[Entity]:
        return self.registry.list("entity")  # type: ignore[return-value]

    def list_feature_views(self) -> list[FeatureView]:
        return self.registry.list("feature_view")  # type: ignore[return-value]

    def list_on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self.registry.list("on_demand_feature_view")  # type: ignore[return-value]

    def list_feature_services(self) -> list[FeatureService]:
        return self.registry.list("feature_service")  # type: ignore[return-value]

    def get_entity(self, name: str) -> Entity:
        return self.registry.get("entity", name)  # type: ignore[return-value]

    def get_feature_view(self, name: str, version: int | None = None) -> FeatureView:
        return self.registry.get("feature_view", name, version)  # type: ignore[return-value]

    def get_on_demand_feature_view(self, name: str, version: int | None = None) -> OnDemandFeatureView:
        return self.registry.get("on_demand_feature_view", name, version)  # type: ignore[return-value]

    def get_feature_service(self, name: str) -> FeatureService:
        return self.registry.get("feature_service", name)  # type: ignore[return-value]

    def resolve(self, features: Sequence[str] | None = None, feature_service: Any = None) -> FeatureSelection:
        """Feature references or a service name -> the views and features they mean."""
        return resolve_features(
            features,
            feature_service,
            self.registry.get_view,
            self.get_feature_service,
            lambda: self.registry.names("feature_view") + self.registry.names("on_demand_feature_view"),
        )

    def catalog(self) -> dict[str, Any]:
        """Views, features and services with owners, SLAs and versions."""
        from quiver.registry.catalog import catalog

        return catalog(self.registry)

    def describe(self, name: str) -> dict[str, Any]:
        """One view, feature (``view:feature``) or service, with versions and lineage."""
        from quiver.registry.catalog import describe

        return describe(self.registry, name)

    def search(self, text: str) -> list[dict[str, Any]]:
        from quiver.registry.catalog import summary

        return [summary(o) for o in self.registry.search(text)]

    def lineage(self, name: str) -> dict[str, Any]:
        return self.registry.lineage(name)

    # -- training data (offline) ------------------------------------------------------

    def get_historical_features(
        self,
        entity_df: Any = None,
        features: Sequence[str] | None = None,
        feature_service: str | FeatureService | None = None,
        full_feature_names: bool = False,
        *,
        start: Any = None,
        end: Any = None,
        as_known: bool = False,
    ) -> Any:
        """A point-in-time correct training set (a lazy job: to_arrow/to_pandas/to_polars/to_parquet/persist).

        ``entity_df``: pandas/polars DataFrame, Arrow table, Parquet path or SQL query, with
        the views' join keys and ``event_timestamp``; or None with ``start``/``end`` for every
        entity's values at each of its event times. ``as_known=True`` also requires
        ``created_timestamp <= t`` (no later correction leaks into the row)."""
        from quiver.retrieval.datasets import persist_job
        from quiver.retrieval.historical import historical_job

        selection = self.resolve(features, feature_service)
        return historical_job(
            self.offline, self.registry, selection, entity_df,
            full_feature_names=full_feature_names, start=start, end=end, as_known=as_known,
            persist=lambda job, name, overwrite: persist_job(self.offline, self.registry, job, name, overwrite),
        )

    def get_saved_dataset(self, name: str) -> Any:
        """A dataset stored with ``job.persist(name)``, with its definition versions and fingerprint."""
        from quiver.retrieval.datasets import get_saved_dataset

        return get_saved_dataset(self.offline, self.registry, name)

    # -- serving data (online) ---------------------------------------------------------

    def materialize(self, start: Any, end: Any, views: Sequence[str] | None = None, *, progress: Any = None) -> Any:
        """Batch dual write: each view's compacted history to the offline store, latest values online."""
        from quiver.ingest.materialize import materialize

        return materialize(self.registry, self.offline, self.online, views, start, end, progress=progress)

    def materialize_incremental(self, end: Any, views: Sequence[str] | None = None, *, progress: Any = None) -> Any:
        """Materialize from each view's watermark (event and created time) to ``end``."""
        from quiver.ingest.materialize import materialize

        return materialize(self.registry, self.offline, self.online, views, None, end, incremental=True,
                           progress=progress)

    def get_online_features(
        self,
        features: Sequence[str] | None = None,
        feature_service: str | FeatureService | None = None,
        entity_rows: Sequence[dict[str, Any]] | dict[str, Sequence[Any]] | None = None,
        request_context: dict[str, Any] | None = None,
        full_feature_names: bool = False,
    ) -> Any:
        """Feature vectors for entity keys: values, statuses and event times (``to_dict()``, ``to_pandas()``)."""
        reader = self.__dict__.get("_online_reader")
        if reader is None or reader.online is not self.__dict__.get("online"):
            from quiver.retrieval.online import OnlineReader

            reader = self.__dict__["_online_reader"] = OnlineReader(self.registry, self.online, self.resolve)
            from quiver.monitoring.served_log import served_log_for

            reader.served_log = served_log_for(self.config)
        return reader.get(features, feature_service, entity_rows, request_context, full_feature_names)

    # -- events (push and streams) ----------------------------------------------------

    def push(self, source: str, rows: Any, *, to: str = "online_and_offline") -> int:
        """Rows into a push or stream source, as if from Kafka: online state and offline events."""
        from quiver.ingest.stream import EventIngestor, push_events

        if to not in ("online", "offline", "online_and_offline"):
            raise InputError(f"push(to={to!r}): use 'online', 'offline' or 'online_and_offline'")
        views = [v for v in self.list_feature_views() if v.source.name == source]
        if not views:
            known = sorted({v.source.name for v in self.list_feature_views()})
            raise NotFoundError(f"no feature view reads source {source!r}.{closest(source, known)} "
                                f"Sources with views: {', '.join(known) or 'none (run quiver apply)'}")
        src = views[0].source
        events = push_events(rows, src, views)
        root = self.config.resolve(self.config.offline.get("path", "data/offline"))
        return EventIngestor(src, views, self.online, root, self.offline).ingest(events, to=to)

    def stream(self, views: Sequence[str] | None = None, *, idle_exit: float | None = None,
               max_seconds: float | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a stream worker over the Kafka sources of ``views`` (default all) until stopped;
        ``stream:`` in quiver.yaml and ``options`` set group, batch_size, metrics_port, consumer."""
        from quiver.ingest.worker import StreamWorker

        chosen = [self.get_feature_view(v) for v in views] if views else self.list_feature_views()
        root = self.config.resolve(self.config.offline.get("path", "data/offline"))
        worker = StreamWorker(chosen, self.online, root, registry=self.registry,
                              options={**self.config.stream, **(options or {})})
        return worker.run(idle_exit=idle_exit, max_seconds=max_seconds)

    def stream_status(self) -> dict[str, Any]:
        """What each stream worker last reported (lag, latency, counts) and the dead letters kept."""
        from quiver.ingest.stream import read_dead_letters

        self.registry.refresh()
        root = self.config.resolve(self.config.offline.get("path", "data/offline"))
        dead = read_dead_letters(root)
        return {"workers": self.registry.list_values("stream_status"), "dead_letters": dead.num_rows,
                "dead_letter_reasons": dead.column("reason").to_pylist()[-20:]}

    def backfill(self, view: str, start: Any, end: Any, *, online: bool = False, chunk: Any = None,
                 progress: Any = None, force: bool = False) -> dict[str, Any]:
        """Compute ``view`` over ``[start, end)`` from its batch source in resumable chunks;
        ``online=True`` rebuilds its online aggregation state from the offline events (refused
        while a stream worker consumes the view's source, unless ``force``)."""
        from quiver.ingest.backfill import backfill

        return backfill(self, self.get_feature_view(view), start, end, online=online, chunk=chunk,
                        progress=progress, force=force)

    # -- monitoring -------------------------------------------------------------------

    @cached_property
    def monitoring(self) -> Any:
        """The monitor of this repository (``quiver.monitoring.runner.Monitor``)."""
        from quiver.monitoring.runner import Monitor

        def dataset(name: str) -> Any:
            ds = self.get_saved_dataset(name)
            return ds.to_arrow() if hasattr(ds, "to_arrow") else ds

        return Monitor(self.config, self.registry, self.offline, load_dataset=dataset)

    def monitor(
        self, views: Sequence[str] | None = None, *, now: Any = None, reference: dict[str, Any] | None = None
    ) -> Any:
        """Run the checks (freshness, schema, null rates, drift) of ``views`` (default all),
        store the results with their history and alert on each ok <-> failing change.
        Returns a ``MonitorRun`` (``.ok``, ``.failing``, ``.results``, ``.alerts``, ``to_dict()``)."""
        return self.monitoring.run(views, now=now, reference=reference)

    def pin_monitor_reference(self, view: str, *, start: Any = None, end: Any = None, dataset: str | None = None) -> Any:
        """Compare ``view`` from now on with a fixed time window or a saved dataset (no argument: unpin)."""
        return self.monitoring.pin_reference(view, start=start, end=end, dataset=dataset)

    def monitor_history(self, name: str) -> dict[str, Any]:
        """``VIEW`` or ``VIEW:FEATURE``: each check's results over time, and the alerts raised."""
        from quiver.monitoring.history import history

        return history(self.registry, self.registry.get_view, name)

    def monitor_skew(self, *, start: Any = None, end: Any = None, limit: int | None = None) -> Any:
        """Recompute logged served vectors with ``get_historical_features`` at their request
        times; per feature, the share of values that differ, with examples."""
        from quiver.monitoring.skew import check_skew

        return check_skew(self, start=start, end=end, limit=limit)

    def monitor_report(self, out: str | Path, views: Sequence[str] | None = None) -> Path:
        """Write one self-contained HTML page: freshness against the SLA, null rates over
        time and each drifting feature's histogram against its reference."""
        from quiver.monitoring.report import write_report

        return write_report(self.registry, out, views)

    def monitor_metrics(self) -> str:
        """The latest check results as Prometheus gauges (text format), for ``/metrics``."""
        from quiver.monitoring.metrics import render

        return render(self.registry)
