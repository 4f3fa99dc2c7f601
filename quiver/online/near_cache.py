"""A near cache of Redis values in the reading process, kept exact by Redis itself.

Redis's server-assisted client-side caching (``CLIENT TRACKING`` over RESP3):
Redis remembers which keys a connection read and, when one of them changes,
expires, is evicted or deleted, or the database is flushed, pushes an
invalidation down that same connection. Each reading thread keeps one such
connection and the values it read; a read first takes in the invalidations
waiting on the socket, then answers from memory what nothing invalidated and
asks Redis (one MGET) for the rest. A hot entity (a heavy user a model server
asks about many times a second) is then read without a round trip until its
state changes: the read's tail no longer follows the network or the other
core's wake-up.

A read's values are of one instant, as one MGET's are: a key changed before
the read's MGET ran has its invalidation ahead of the reply on the connection,
and is asked again (``_read``). What a cached read can miss is a write whose
invalidation is still on its way: Redis sends it in the same event-loop turn as
the writer's reply, so the window is microseconds. Writes through the same store object clear the caches
(``forget``), so a process reads its own writes. A lost connection clears its
cache (Redis forgets the tracking with it). redis-py's own client-side cache
needs Redis 7.4; this one works from Redis 6, where tracking appeared.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
from hiredis import pack_command

from quiver.errors import ConfigError

__all__ = ["NearCache"]

_ROUNDS = 4  # MGETs of the keys invalidated under a read before it asks for every key at once


class NearCache:
    """Per reading thread: a RESP3 connection with tracking on and the values it read,
    at most ``max_keys`` of them (past that the thread's cache starts over)."""

    def __init__(self, url: str, max_keys: int) -> None:
        self._client = redis.Redis.from_url(url, protocol=3)
        self.max_keys = max_keys
        self._local = threading.local()
        self._generation = 0  # bumped by ``forget``; a thread whose cache is older drops it
        self.hits = 0  # keys answered from memory / asked of Redis (for benchmarks and tests)
        self.misses = 0

    def forget(self) -> None:
        """Drop every thread's cached values (this process wrote or deleted keys)."""
        self._generation += 1

    def close(self) -> None:
        self._client.close()

    def _reader(self) -> Any:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # first use in this thread, or a forked child
            local.conn = self._client.connection_pool.get_connection()
            local.pid, local.values, local.generation, local.sock = os.getpid(), {}, self._generation, None
        return local

    def _track(self, local: Any) -> None:
        """(Re)connect with tracking on; whatever was cached before is no longer tracked."""
        conn, values = local.conn, local.values
        conn.disconnect()
        conn.connect()
        parser = conn._parser
        if not hasattr(parser, "set_invalidation_push_handler") or (
                getattr(parser, "_hiredis_PushNotificationType", True) is None):
            # an older parser hands pushes back as replies: a read would take one for its values
            raise ConfigError("online.near_cache_keys needs redis-py >= 5.1 with hiredis >= 3.2 "
                              "(pip install -U 'quiver-fs[redis]'), or near_cache_keys: 0")
        parser.set_invalidation_push_handler(lambda msg: _invalidate(values, msg))
        conn.send_command("CLIENT", "TRACKING", "ON")
        if conn.read_response() not in (b"OK", "OK"):  # pragma: no cover - a server without tracking
            raise redis.ResponseError("CLIENT TRACKING ON refused")
        values.clear()
        local.sock = conn._sock

    def mget(self, keys: list[str]) -> list[bytes | None]:
        """The values of ``keys`` (None where missing), from memory where still valid."""
        local = self._reader()
        values = local.values
        if local.generation != self._generation:
            values.clear()
            local.generation = self._generation
        for attempt in (0, 1):
            conn = local.conn
            try:
                if local.sock is None or conn._sock is not local.sock:
                    self._track(local)
                self._drain(conn)
                return self._read(conn, values, keys)
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                values.clear()
                local.sock = None
                conn.disconnect()
                if attempt:
                    raise
            except BaseException:
                values.clear()  # interrupted between send and reply: start over on a fresh connection
                local.sock = None
                conn.disconnect()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _drain(conn: Any) -> None:
        """Take in the invalidations waiting on the socket."""
        while conn.can_read():
            conn.read_response(push_request=True)

    def _read(self, conn: Any, values: dict[str, Any], keys: list[str]) -> list[bytes | None]:
        """Values of one instant: a key changed before an MGET ran has its invalidation
        ahead of the MGET's reply on the connection, so a round after which every key is
        still held read them all as of that MGET. A key of the read invalidated meanwhile
        is asked again; past ``_ROUNDS`` one MGET of every key answers (Redis's own snapshot)."""
        if len(values) + len(keys) > self.max_keys:
            values.clear()
        missing = [k for k in keys if k not in values]
        self.hits += len(keys) - len(missing)
        for _ in range(_ROUNDS):
            if not missing:
                return [values[k] for k in keys]
            values.update(zip(missing, self._fetch(conn, missing), strict=True))
            missing = [k for k in keys if k not in values]
        got = self._fetch(conn, keys)
        values.update(zip(keys, got, strict=True))
        return got

    def _fetch(self, conn: Any, keys: list[str]) -> list[bytes | None]:
        """One MGET; the invalidations that come before its reply are applied first."""
        conn.send_packed_command([pack_command(("MGET", *keys))], check_health=False)
        self.misses += len(keys)
        return conn.read_response()  # type: ignore[no-any-return]


def _invalidate(values: dict[str, Any], msg: list[Any]) -> None:
    """An invalidation push: ``[b"invalidate", [keys]]``, or a null list for a flush."""
    keys = msg[1] if len(msg) > 1 else None
    if keys is None:
        values.clear()
        return
    for k in keys:
        values.pop(k.decode() if isinstance(k, bytes) else k, None)
