"""RegistryStore over SQLAlchemy: an SQLite file or any SQLAlchemy URL (PostgreSQL).

Three tables: ``quiver_objects`` (every version of every definition, with its
JSON spec and metadata), ``quiver_history`` (what each apply did) and
``quiver_kv`` (namespaced values: the registry version counter, watermarks,
saved datasets, monitor results). An apply is one transaction that first
bumps the version counter from the value its plan was made against; if the
counter moved, someone applied in between and the apply fails cleanly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from quiver.errors import ConcurrentApplyError, TransientError
from quiver.protocols import Capabilities, StoredObject

__all__ = ["SQLRegistryStore"]

_md = sa.MetaData()
objects = sa.Table(
    "quiver_objects",
    _md,
    sa.Column("kind", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("version_hash", sa.String(64), nullable=False),
    sa.Column("owner", sa.String(255), nullable=False, default=""),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("tags", sa.Text, nullable=False, default="{}"),
    sa.Column("freshness_sla", sa.Float, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("applied_by", sa.String(255), nullable=False, default=""),
    sa.Column("is_latest", sa.Boolean, nullable=False, default=True),
)
history = sa.Table(
    "quiver_history",
    _md,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("registry_version", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("diff", sa.Text, nullable=False, default="{}"),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("applied_by", sa.String(255), nullable=False, default=""),
)
kv = sa.Table(
    "quiver_kv",
    _md,
    sa.Column("namespace", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(512), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(d: datetime) -> datetime:
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d


class SQLRegistryStore:
    """The registry's storage. ``url`` is an SQLAlchemy URL."""

    capabilities = Capabilities(transactions=True)

    def __init__(self, url: str) -> None:
        self.url = url
        is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"future": True}
        if is_sqlite:
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = sa.create_engine(url, **kwargs)
        if is_sqlite:

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA busy_timeout=30000")
                cur.close()
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves

            @event.listens_for(self.engine, "begin")
            def _begin(conn: Any) -> None:
                # take the write lock up front, so concurrent applies queue instead of deadlocking
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        try:
            _md.create_all(self.engine, checkfirst=True)
        except sa.exc.IntegrityError:  # another process created the tables at the same moment
            pass
        except sa.exc.OperationalError as e:
            raise TransientError(f"registry at {self._safe_url()} is not reachable: {e.orig}") from e
        with self.engine.begin() as c:
            if c.execute(sa.select(kv.c.value).where(kv.c.namespace == "meta", kv.c.key == "version")).first() is None:
                try:
                    c.execute(sa.insert(kv).values(namespace="meta", key="version", value="0", updated_at=_now()))
                except sa.exc.IntegrityError:
                    pass

    def _safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    # -- reads --------------------------------------------------------------------

    def version(self) -> int:
        with self.engine.connect() as c:
            v = c.execute(sa.select(kv.c.value).where(kv.c.namespace == "meta", kv.c.key == "version")).scalar()
        return int(v or 0)

    @staticmethod
    def _row(r: Any) -> StoredObject:
        return StoredObject(
            kind=r.kind,
            name=r.name,
            version=r.version,
            spec=json.loads(r.spec),
            version_hash=r.version_hash,
            created_at=_aware(r.created_at),
            updated_at=_aware(r.updated_at),
            applied_by=r.applied_by,
            is_latest=bool(r.is_latest),
        )

    def get(self, kind: str, name: str, version: int | None = None) -> StoredObject | None:
        q = sa.select(objects).where(objects.c.kind == kind, objects.c.name == name)
        q = q.where(objects.c.version == version) if version is not None else q.where(objects.c.is_latest)
        with self.engine.connect() as c:
            r = c.execute(q).first()
        return self._row(r) if r else None

    def max_version(self, kind: str, name: str) -> int:
        with self.engine.connect() as c:
            v = c.execute(
                sa.select(sa.func.max(objects.c.version)).where(objects.c.kind == kind, objects.c.name == name)
            ).scalar()
        return int(v or 0)

    def list(self, kind: str | None = None, *, all_versions: bool = False) -> list[StoredObject]:
        q = sa.select(objects).order_by(objects.c.kind, objects.c.name, objects.c.version)
        if kind is not None:
            q = q.where(objects.c.kind == kind)
        if not all_versions:
            q = q.where(objects.c.is_latest)
        with self.engine.connect() as c:
            return [self._row(r) for r in c.execute(q)]

    def history(self, kind: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(history).order_by(history.c.id)
        if kind is not None:
            q = q.where(history.c.kind == kind)
        if name is not None:
            q = q.where(history.c.name == name)
        with self.engine.connect() as c:
            return [
                {**r._asdict(), "diff": json.loads(r.diff), "at": _aware(r.at)}
                for r in c.execute(q)
            ]

    # -- key/value ----------------------------------------------------------------

    def get_value(self, namespace: str, key: str) -> Any:
        with self.engine.connect() as c:
            v = c.execute(sa.select(kv.c.value).where(kv.c.namespace == namespace, kv.c.key == key)).scalar()
        return None if v is None else json.loads(v)

    def set_value(self, namespace: str, key: str, value: Any) -> None:
        blob = json.dumps(value, default=str)
        with self.engine.begin() as c:
            n = c.execute(
                sa.update(kv).where(kv.c.namespace == namespace, kv.c.key == key).values(value=blob, updated_at=_now())
            ).rowcount
            if n == 0:
                c.execute(sa.insert(kv).values(namespace=namespace, key=key, value=blob, updated_at=_now()))

    def delete_value(self, namespace: str, key: str) -> None:
        with self.engine.begin() as c:
            c.execute(sa.delete(kv).where(kv.c.namespace == namespace, kv.c.key == key))

    def list_values(self, namespace: str) -> dict[str, Any]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(kv.c.key, kv.c.value).where(kv.c.namespace == namespace)).all()
        return {k: json.loads(v) for k, v in rows}

    # -- writes -------------------------------------------------------------------

    @contextmanager
    def transaction(self, expected_version: int, user: str) -> Iterator[_Txn]:
        """One apply: bump the version counter from ``expected_version`` or fail."""
        try:
            with self.engine.begin() as c:
                new = expected_version + 1
                n = c.execute(
                    sa.update(kv)
                    .where(kv.c.namespace == "meta", kv.c.key == "version", kv.c.value == str(expected_version))
                    .values(value=str(new), updated_at=_now())
                ).rowcount
                if n != 1:
                    raise ConcurrentApplyError(
                        f"the registry changed since this plan was made (expected version {expected_version}, "
                        f"found {self._peek_version(c)}): another apply ran in between. Run 'quiver plan' and apply again"
                    )
                yield _Txn(c, new, user)
        except sa.exc.OperationalError as e:
            raise TransientError(f"registry write failed ({e.orig}); retry the apply") from e

    @staticmethod
    def _peek_version(c: Any) -> str:
        return str(c.execute(sa.select(kv.c.value).where(kv.c.namespace == "meta", kv.c.key == "version")).scalar())

    def close(self) -> None:
        self.engine.dispose()


class _Txn:
    """Writes inside one apply transaction."""

    def __init__(self, conn: Any, registry_version: int, user: str) -> None:
        self.conn, self.registry_version, self.user = conn, registry_version, user
        self.now = _now()

    def _log(self, kind: str, name: str, version: int | None, action: str, diff: Any) -> None:
        self.conn.execute(
            sa.insert(history).values(
                registry_version=self.registry_version,
                kind=kind,
                name=name,
                version=version,
                action=action,
                diff=json.dumps(diff, default=str),
                at=self.now,
                applied_by=self.user,
            )
        )

    def put_version(self, kind: str, name: str, spec: dict[str, Any], version_hash: str, diff: Any) -> int:
        """Store a new version (1 for a new object) and make it the latest."""
        c = self.conn
        prev = c.execute(
            sa.select(sa.func.max(objects.c.version)).where(objects.c.kind == kind, objects.c.name == name)
        ).scalar()
        version = int(prev or 0) + 1
        created = c.execute(
            sa.select(sa.func.min(objects.c.created_at)).where(objects.c.kind == kind, objects.c.name == name)
        ).scalar()
        c.execute(sa.update(objects).where(objects.c.kind == kind, objects.c.name == name).values(is_latest=False))
        c.execute(
            sa.insert(objects).values(
                kind=kind,
                name=name,
                version=version,
                spec=json.dumps(spec, sort_keys=True),
                version_hash=version_hash,
                owner=spec.get("owner", ""),
                description=spec.get("description", ""),
                tags=json.dumps(spec.get("tags") or {}),
                freshness_sla=spec.get("freshness_sla"),
                created_at=created or self.now,
                updated_at=self.now,
                applied_by=self.user,
                is_latest=True,
            )
        )
        self._log(kind, name, version, "add" if version == 1 else "new_version", diff)
        return version

    def update_metadata(self, kind: str, name: str, spec: dict[str, Any], diff: Any) -> int:
        """Same version, new owner/description/tags/SLA: updated in place, recorded in history."""
        c = self.conn
        version = c.execute(
            sa.select(objects.c.version).where(objects.c.kind == kind, objects.c.name == name, objects.c.is_latest)
        ).scalar_one()
        c.execute(
            sa.update(objects)
            .where(objects.c.kind == kind, objects.c.name == name, objects.c.version == version)
            .values(
                spec=json.dumps(spec, sort_keys=True),
                owner=spec.get("owner", ""),
                description=spec.get("description", ""),
                tags=json.dumps(spec.get("tags") or {}),
                freshness_sla=spec.get("freshness_sla"),
                updated_at=self.now,
                applied_by=self.user,
            )
        )
        self._log(kind, name, version, "update_metadata", diff)
        return int(version)

    def remove(self, kind: str, name: str) -> None:
        """Retire an object: no version is latest any more; old versions stay readable."""
        self.conn.execute(
            sa.update(objects).where(objects.c.kind == kind, objects.c.name == name).values(is_latest=False)
        )
        self._log(kind, name, None, "remove", {})
