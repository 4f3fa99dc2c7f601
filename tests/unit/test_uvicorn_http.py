"""The uvicorn protocol's joined writes: one transport write per loop step, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from quiver.serving.uvicorn_http import _JoinedWrites


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


def _run(check: Callable[[_Transport, _JoinedWrites], Awaitable[None]]) -> None:
    """Run ``check`` on a fresh transport and its joined-writes proxy, inside a loop."""
    async def main() -> None:
        t = _Transport()
        await check(t, _JoinedWrites(t, asyncio.get_running_loop()))  # type: ignore[arg-type]

    asyncio.run(main())


def test_the_writes_of_one_step_go_out_as_one_write_in_order() -> None:
    async def check(t: _Transport, joined: _JoinedWrites) -> None:
        joined.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        joined.write(memoryview(b"{}"))
        assert t.writes == []  # not yet: at the end of the step
        await asyncio.sleep(0)
        assert t.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
        joined.writelines([b"a", b"b"])
        await asyncio.sleep(0)
        assert t.writes[1:] == [b"ab"]
        joined.pause_reading()  # everything else is the transport's
        assert t.paused and joined.get_extra_info("peername") == ("127.0.0.1", 1)

    _run(check)


def test_close_sends_what_was_written_first_and_nothing_after() -> None:
    async def check(t: _Transport, joined: _JoinedWrites) -> None:
        joined.write(b"last answer")
        joined.close()
        assert t.writes == [b"last answer"] and t.closed
        await asyncio.sleep(0)  # the scheduled flush finds nothing left
        assert t.writes == [b"last answer"]

    _run(check)


def test_a_connection_lost_before_the_flush_drops_the_bytes_quietly() -> None:
    async def check(t: _Transport, joined: _JoinedWrites) -> None:
        joined.write(b"answer")
        t.closed = True  # the peer went away
        await asyncio.sleep(0)
        assert t.writes == []

    _run(check)
