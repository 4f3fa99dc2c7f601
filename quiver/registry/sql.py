"""RegistryStore over SQLAlchemy: an SQLite file or any SQLAlchemy URL (PostgreSQL).

Three tables: ``quiver_objects`` (every version of every definition, with its
JSON spec and metadata), ``quiver_history`` (what each apply did) and
``quiver_kv`` (namespaced values: the registry version counter, watermarks,
saved datasets, monitor results). An apply is one transaction that first
bumps the version counter from the value its plan was made against; if the
counter moved, someone applied in between and the apply fails cleanly.
"""

from __future__ import annotations

import builtins

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from quiver.errors import ConcurrentApplyError, ConfigError, TransientError
from quiver.protocols import Capabilities, NewVersion, StoredObject

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


def _sqlite_connect(dbapi_conn: Any, _: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")  # first: switching to WAL may wait for another process
    for attempt in range(200):  # WAL is kept in the file: only the first connection of a new registry switches,
        try:  # and that switch can fail at once, without the busy handler, while another process makes it
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == 199:
                raise
            time.sleep(0.05)
    cur.close()
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (SQLAlchemy's pysqlite recipe)


def _sqlite_begin(conn: Any) -> None:
    # an apply takes the write lock up front, so concurrent applies queue instead of
    # failing on a lock upgrade; reads stay deferred and never wait for a writer (WAL)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("quiver_write") else "BEGIN")


def _dialect_insert(c: Any) -> Any:
    """The dialect's INSERT with ON CONFLICT, where it has one."""
    if c.dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert
    if c.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    return None


def _insert_ignore(c: Any, table: sa.Table, **values: Any) -> None:
    """INSERT that does nothing when the primary key exists (SQLite and PostgreSQL)."""
    insert = _dialect_insert(c)
    if insert is not None:
        c.execute(insert(table).values(**values).on_conflict_do_nothing())
        return
    exists = c.execute(
        sa.select(sa.literal(1)).where(*[col == values[col.name] for col in table.primary_key.columns])
    ).first()
    if exists is None:
        c.execute(sa.insert(table).values(**values))


class SQLRegistryStore:
    """The registry's storage. ``url`` is an SQLAlchemy URL."""

    capabilities = Capabilities(transactions=True)

    def __init__(self, url: str) -> None:
        self.url = url
        u = sa.engine.make_url(url)
        self.is_sqlite = u.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            if u.database and u.database != ":memory:":
                Path(u.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine = sa.create_engine(url, **kwargs)
        except (ImportError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as e:
            hint = " (pip install 'quiver-fs[postgres]')" if u.get_backend_name() == "postgresql" else ""
            raise ConfigError(f"registry URL {self._safe_url()} cannot be used: {e}{hint}") from e
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._create_tables()

    def _create_tables(self) -> None:
        """Create the tables and the version counter; safe when processes race to do it."""
        for attempt in range(5):
            try:
                with self._write() as c:  # one write transaction: no read-to-write lock upgrade on SQLite
                    _md.create_all(c, checkfirst=True)
                    _insert_ignore(c, kv, namespace="meta", key="version", value="0", updated_at=_now())
                return
            except TransientError as e:
                if attempt == 4 or "already exists" not in str(e):
                    raise TransientError(f"registry at {self._safe_url()} is not reachable: {e}") from e
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError):
                if attempt == 4:
                    raise
            time.sleep(0.05 * (attempt + 1))  # another process created them at the same moment; look again

    def _safe_url(self) -> str:
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        try:
            with self.engine.connect() as c:
                yield c
        except sa.exc.OperationalError as e:
            raise TransientError(f"registry at {self._safe_url()} could not be read: {e.orig}") from e

    # -- reads --------------------------------------------------------------------

    def version(self) -> int:
        with self._read() as c:
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
        with self._read() as c:
            r = c.execute(q).first()
        return self._row(r) if r else None

    def max_versions(self) -> dict[tuple[str, str], int]:
        """(kind, name) -> the highest version ever stored, removed objects included."""
        q = sa.select(objects.c.kind, objects.c.name, sa.func.max(objects.c.version)).group_by(
            objects.c.kind, objects.c.name
        )
        with self._read() as c:
            return {(k, n): int(v) for k, n, v in c.execute(q)}

    def max_version(self, kind: str, name: str) -> int:
        with self._read() as c:
            v = c.execute(
                sa.select(sa.func.max(objects.c.version)).where(objects.c.kind == kind, objects.c.name == name)
            ).scalar()
        return int(v or 0)

    def list(self, kind: str | None = None, *, all_versions: bool = False) -> builtins.list[StoredObject]:
        q = sa.select(objects).order_by(objects.c.kind, objects.c.name, objects.c.version)
        if kind is not None:
            q = q.where(objects.c.kind == kind)
        if not all_versions:
            q = q.where(objects.c.is_latest)
        with self._read() as c:
            return [self._row(r) for r in c.execute(q)]

    def history(self, kind: str | None = None, name: str | None = None) -> builtins.list[dict[str, Any]]:
        q = sa.select(history).order_by(history.c.id)
        if kind is not None:
            q = q.where(history.c.kind == kind)
        if name is not None:
            q = q.where(history.c.name == name)
        with self._read() as c:
            return [
                {**r._asdict(), "diff": json.loads(r.diff), "at": _aware(r.at)}
                for r in c.execute(q)
            ]

    # -- key/value ----------------------------------------------------------------

    def get_value(self, namespace: str, key: str) -> Any:
        with self._read() as c:
            v = c.execute(sa.select(kv.c.value).where(kv.c.namespace == namespace, kv.c.key == key)).scalar()
        return None if v is None else json.loads(v)

    def set_value(self, namespace: str, key: str, value: Any) -> None:
        blob = json.dumps(value, default=str)
        row = {"namespace": namespace, "key": key, "value": blob, "updated_at": _now()}
        with self._write() as c:
            insert = _dialect_insert(c)
            if insert is not None:  # one atomic upsert: two writers of one key never collide
                q = insert(kv).values(**row)
                c.execute(q.on_conflict_do_update(index_elements=["namespace", "key"],
                                                  set_={"value": q.excluded.value, "updated_at": q.excluded.updated_at}))
                return
            n = c.execute(
                sa.update(kv).where(kv.c.namespace == namespace, kv.c.key == key).values(value=blob, updated_at=_now())
            ).rowcount
            if n == 0:
                c.execute(sa.insert(kv).values(**row))

    def delete_value(self, namespace: str, key: str) -> None:
        with self._write() as c:
            c.execute(sa.delete(kv).where(kv.c.namespace == namespace, kv.c.key == key))

    def list_values(self, namespace: str) -> dict[str, Any]:
        with self._read() as c:
            rows = c.execute(sa.select(kv.c.key, kv.c.value).where(kv.c.namespace == namespace)).all()
        return {k: json.loads(v) for k, v in rows}

    # -- writes -------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A write transaction (on SQLite it holds the write lock from its start)."""
        try:
            with self.engine.connect() as c:
                c.execution_options(quiver_write=True)
                with c.begin():
                    yield c
        except sa.exc.OperationalError as e:
            raise TransientError(f"registry write failed ({e.orig}); retry") from e

    @contextmanager
    def transaction(self, expected_version: int, user: str) -> Iterator[_Txn]:
        """One apply: bump the version counter from ``expected_version`` or fail.

        The conditional UPDATE locks the counter row until commit, so concurrent
        applies serialize on it; on PostgreSQL a waiting UPDATE re-checks its
        condition after the other commits and then matches no row.
        """
        with self._write() as c:
            new = expected_version + 1
            n = c.execute(
                sa.update(kv)
                .where(kv.c.namespace == "meta", kv.c.key == "version", kv.c.value == str(expected_version))
                .values(value=str(new), updated_at=_now())
            ).rowcount
            if n != 1:
                raise ConcurrentApplyError(
                    f"the registry changed since this plan was made: it was made against registry version "
                    f"{expected_version}, and {self._last_apply(c)}. Nothing was written. "
                    "Run 'quiver plan' to see the new differences, then apply again"
                )
            yield _Txn(c, new, user)

    @staticmethod
    def _last_apply(c: Any) -> str:
        version = c.execute(sa.select(kv.c.value).where(kv.c.namespace == "meta", kv.c.key == "version")).scalar()
        last = c.execute(sa.select(history.c.applied_by, history.c.at).order_by(history.c.id.desc()).limit(1)).first()
        who = f" by {last.applied_by} at {_aware(last.at):%Y-%m-%d %H:%M:%S} UTC" if last else ""
        return f"another apply made it version {version}{who}"

    def close(self) -> None:
        self.engine.dispose()


# statements built once, values bound per call: SQLAlchemy compiles each a single time
_INSERT_OBJECT = objects.insert()
_INSERT_HISTORY = history.insert()


class _Txn:
    """Writes inside one apply transaction."""

    def __init__(self, conn: Any, registry_version: int, user: str) -> None:
        self.conn, self.registry_version, self.user = conn, registry_version, user
        self.now = _now()

    def _entry(self, kind: str, name: str, version: int | None, action: str, diff: Any) -> dict[str, Any]:
        return {
            "registry_version": self.registry_version,
            "kind": kind,
            "name": name,
            "version": version,
            "action": action,
            "diff": json.dumps(diff, default=str),
            "at": self.now,
            "applied_by": self.user,
        }

    def _log(self, kind: str, name: str, version: int | None, action: str, diff: Any) -> None:
        self.conn.execute(_INSERT_HISTORY, self._entry(kind, name, version, action, diff))

    def put_version(
        self, kind: str, name: str, spec: dict[str, Any], version_hash: str, diff: Any, action: str = "new_version"
    ) -> int:
        """Store a new version (1 for a new object) and make it the latest."""
        return self.put_versions([NewVersion(kind, name, spec, version_hash, diff, action)])[0]

    def put_versions(self, items: Sequence[NewVersion]) -> builtins.list[int]:
        """Store the next version of several objects at once (a few statements, not a few per object)."""
        c = self.conn
        prev: dict[tuple[str, str], tuple[int, datetime]] = {}
        by_kind: dict[str, builtins.list[str]] = {}
        for it in items:
            by_kind.setdefault(it.kind, []).append(it.name)
        for kind, names in by_kind.items():
            mine = (objects.c.kind == kind, objects.c.name.in_(names))
            q = sa.select(objects.c.name, sa.func.max(objects.c.version), sa.func.min(objects.c.created_at))
            for name, version, created in c.execute(q.where(*mine).group_by(objects.c.name)):
                prev[(kind, name)] = (int(version), _aware(created))
            c.execute(sa.update(objects).where(*mine, objects.c.is_latest).values(is_latest=False))
        rows, logs, versions = [], [], []
        for it in items:
            last, created = prev.get((it.kind, it.name), (0, self.now))
            version = last + 1
            versions.append(version)
            rows.append({
                "kind": it.kind,
                "name": it.name,
                "version": version,
                "spec": json.dumps(it.spec, sort_keys=True),
                "version_hash": it.version_hash,
                "owner": it.spec.get("owner", ""),
                "description": it.spec.get("description", ""),
                "tags": json.dumps(it.spec.get("tags") or {}),
                "freshness_sla": it.spec.get("freshness_sla"),
                "created_at": created,
                "updated_at": self.now,
                "applied_by": self.user,
                "is_latest": True,
            })
            logs.append(self._entry(it.kind, it.name, version, "add" if version == 1 else it.action, it.diff))
        if rows:
            c.execute(_INSERT_OBJECT, rows)
            c.execute(_INSERT_HISTORY, logs)
        return versions

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
