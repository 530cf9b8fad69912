"""The hub's fast path in the edge: one pre-encoded frame written to many connections.

The hub (:mod:`mesh.hub`) asks :meth:`TransportFanout.prepare` for what reaches a
channel's sinks whenever they change (or one of them changes its write path), and
calls :meth:`TransportFanout.write` once per message.

Most connections take the direct path (:mod:`edge.direct`): the loop writes the frame
with ``os.write`` to each one's fd and touches nothing else per connection. One the
kernel takes only in part hands the rest to its transport and leaves the direct path;
its buffer is then checked against ``max_send_buffer_bytes``, and over it the
connection's session cuts it off as a slow consumer.

The others (a transport with bytes still buffered, TLS) are written through their
transports: skip one that is closing or has sent a close frame (nothing may follow
it), write, check the buffer against the limit. One whose buffer is empty again asks
to return to the direct path. A session that cuts itself leaves the hub at once
(:meth:`edge.session.ClientSession.cut`), so it is never written to after its close
frame either.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import NamedTuple, Protocol, cast

from edge.direct import DirectPath
from mesh.hub import Sink

log = logging.getLogger("edgemesh.edge")


class Connection(Protocol):
    """A connection as the fan-out needs it (the edge's WebSocket protocol)."""

    @property
    def transport(self) -> asyncio.Transport: ...

    @property
    def direct(self) -> DirectPath: ...

    def over_limit(self) -> None: ...


class HasSocket(Protocol):
    @property
    def socket(self) -> Connection: ...


class Prepared(NamedTuple):
    fds: tuple[int, ...]  # the direct path's fds
    by_fd: dict[int, Connection]  # for what the kernel did not take
    others: tuple[Connection, ...]  # written through their transports


class TransportFanout:
    def __init__(
        self, max_send_buffer_bytes: int, on_spill: Callable[[], None] | None = None
    ) -> None:
        self.max_send_buffer_bytes = max_send_buffer_bytes
        self.on_spill = on_spill  # counts what the kernel did not take whole

    def prepare(self, sinks: tuple[Sink, ...]) -> Prepared:
        fds: list[int] = []
        by_fd: dict[int, Connection] = {}
        others: list[Connection] = []
        for sink in sinks:
            conn = cast(HasSocket, sink).socket
            fd = conn.direct.open()
            if fd >= 0:
                fds.append(fd)
                by_fd[fd] = conn
            else:
                others.append(conn)
        return Prepared(tuple(fds), by_fd, tuple(others))

    def write(self, frame: bytes, prepared: Prepared) -> None:
        size = len(frame)
        write = os.write
        for fd in prepared.fds:
            try:
                n = write(fd, frame)
            except OSError:  # full (EAGAIN) or broken: the transport takes it from here
                n = 0
            if n != size:
                self._spill(prepared.by_fd[fd], frame, n)
        if prepared.others:
            self._write_others(frame, prepared.others)

    def _spill(self, conn: Connection, frame: bytes, written: int) -> None:
        try:
            if self.on_spill is not None:
                self.on_spill()
            conn.direct.spill(frame, written)
            if conn.transport.get_write_buffer_size() > self.max_send_buffer_bytes:
                conn.over_limit()
        except Exception:  # one broken connection must not starve the others
            log.exception("a connection failed during fan-out")

    def _write_others(self, frame: bytes, conns: tuple[Connection, ...]) -> None:
        limit = self.max_send_buffer_bytes
        for conn in conns:
            try:
                if not conn.direct.writable():  # closing, or after a close frame
                    continue
                t = conn.transport
                t.write(frame)
                buffered = t.get_write_buffer_size()
                if buffered > limit:
                    conn.over_limit()
                elif not buffered:
                    conn.direct.may_return()
            except Exception:  # one broken connection must not starve the others
                log.exception("a connection failed during fan-out")
