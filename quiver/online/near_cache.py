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

What a cached read can miss is a write whose invalidation is still on its way:
Redis sends it in the same event-loop turn as the writer's reply, so the window
is microseconds. Writes through the same store object clear the caches
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
                while conn.can_read():  # invalidations waiting: taken in before anything is answered
                    conn.read_response(push_request=True)
                missing = [k for k in keys if k not in values]
                if missing:
                    conn.send_packed_command([pack_command(("MGET", *missing))], check_health=False)
                    got = conn.read_response()  # invalidations sent before the reply are applied first
                    if len(values) + len(missing) > self.max_keys:
                        values.clear()
                    values.update(zip(missing, got, strict=True))
                    self.misses += len(missing)
                self.hits += len(keys) - len(missing)
                return [values[k] for k in keys]
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


def _invalidate(values: dict[str, Any], msg: list[Any]) -> None:
    """An invalidation push: ``[b"invalidate", [keys]]``, or a null list for a flush."""
    keys = msg[1] if len(msg) > 1 else None
    if keys is None:
        values.clear()
        return
    for k in keys:
        values.pop(k.decode() if isinstance(k, bytes) else k, None)
