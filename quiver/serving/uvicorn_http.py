"""uvicorn's HTTP protocol with a response's head and body written as one.

uvicorn (httptools) writes a response in two transport writes, the status line
and headers, then the body. With the socket's Nagle algorithm off, each is a
system call and a TCP segment of its own, and on the 2-core benchmark machine
those two calls were the largest single cost of a feature request (py-spy: a
quarter of the server's busy time in ``RequestResponseCycle.send``). Here the
writes of one event-loop step to a connection are joined and go out once, at
the end of the step: one system call and one segment per response.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["JoinedWritesProtocol"]


class _JoinedWrites:
    """A transport proxy that joins the writes of one loop step into one write."""

    __slots__ = ("_transport", "_loop", "_parts")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._parts: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._parts:
            self._loop.call_soon(self._flush)
        self._parts.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        parts, self._parts = self._parts, []
        if parts and not self._transport.is_closing():
            self._transport.write(parts[0] if len(parts) == 1 else b"".join(parts))

    def close(self) -> None:
        self._flush()  # what was written before close goes first
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def __getattr__(self, name: str) -> Any:  # reading, flow control, extra info: the transport's
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` writing through ``_JoinedWrites``."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_JoinedWrites(transport, self.loop))  # type: ignore[arg-type]
