"""The compacted history of a view in the offline store.

Layout, under ``{offline}/history/{view}/``::

    manifest.json            which generation is current, and what it was built from
    g-<id>/latest.parquet    one row per (keys, event time): the greatest created time,
                             sorted by keys then event time (what the ASOF join wants)
    g-<id>/superseded.parquet the rows that lost that tie-break (for as-known-at queries)

For an aggregate view the history is its raw events sorted by keys and time
(events are never deduplicated: two purchases at the same instant both count),
in ``latest.parquet``.

**Rebuilt whole, used only while fresh.** A generation records the
fingerprint (paths, sizes, mtimes) of the files it was built from and the
view's version hash. A query uses it only when the fingerprint of the files
as they are now still matches; otherwise the query reads the source
directly (the cold path, exactly the same result), so a new or rewritten file
in a source folder is seen at once and stale data is never served. Only
``materialize`` writes a generation; queries stay read-only, so their cost on
the cold path is the raw-file floor and concurrent readers never race a
writer. A rebuild compacts the whole source rather than merging a delta: a
deduplication by created time cannot be merged correctly with a changed file,
and one DuckDB pass over the source is cheap next to what it saves on every
later query. The manifest is replaced atomically after the generation's files
are complete, and the previous generation is kept for readers still on it.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quiver.errors import BackendError

__all__ = ["Generation", "HistoryStore"]


@dataclass(frozen=True)
class Generation:
    view: str
    fingerprint: str
    version_hash: str
    directory: Path
    built_at: str
    rows: int

    @property
    def latest(self) -> Path:
        return self.directory / "latest.parquet"

    @property
    def superseded(self) -> Path:
        return self.directory / "superseded.parquet"


class HistoryStore:
    """Manifests and generation folders of compacted histories."""

    def __init__(self, root: Path) -> None:
        self.root = root / "history"

    def view_dir(self, view: str) -> Path:
        return self.root / view

    def current(self, view: str) -> Generation | None:
        try:
            m = json.loads((self.view_dir(view) / "manifest.json").read_text())
        except (FileNotFoundError, ValueError):
            return None
        gen = Generation(view, m["fingerprint"], m["version_hash"], self.view_dir(view) / m["generation"],
                         m["built_at"], int(m.get("rows", 0)))
        return gen if gen.latest.exists() else None

    def fresh(self, view: str, fingerprint: str, version_hash: str) -> Generation | None:
        """The current generation if it was built from exactly these files and definition."""
        gen = self.current(view)
        if gen is None or gen.fingerprint != fingerprint or gen.version_hash != version_hash:
            return None
        return gen

    def new_directory(self, view: str) -> Path:
        d = self.view_dir(view) / f"g-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True)
        return d

    def commit(self, view: str, directory: Path, fingerprint: str, version_hash: str, rows: int) -> Generation:
        """Make ``directory`` the current generation (atomic manifest swap), drop older ones."""
        previous = self.current(view)
        manifest: dict[str, Any] = {
            "generation": directory.name,
            "fingerprint": fingerprint,
            "version_hash": version_hash,
            "built_at": datetime.now(UTC).isoformat(),
            "rows": rows,
        }
        target = self.view_dir(view) / "manifest.json"
        tmp = target.with_name(f".manifest-{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(manifest))
        os.replace(tmp, target)
        keep = {directory.name, previous.directory.name if previous else ""}
        for d in self.view_dir(view).glob("g-*"):
            if d.name not in keep:
                shutil.rmtree(d, ignore_errors=True)
        gen = self.current(view)
        if gen is None:
            raise BackendError(f"compacted history of {view!r}: generation {directory.name} vanished after commit")
        return gen

    def abandon(self, directory: Path) -> None:
        shutil.rmtree(directory, ignore_errors=True)
