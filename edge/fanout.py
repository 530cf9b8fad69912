"""The hub's fast path in the edge: one pre-encoded frame written to many transports.

The hub (:mod:`mesh.hub`) asks :meth:`TransportFanout.prepare` for a channel's
transports whenever its subscribers change, and calls :meth:`TransportFanout.write`
once per message. Per connection the loop does the least it can, touching nothing but
the transport: skip it if it is closing (nothing may follow a close frame), write, and
check its write buffer against ``max_send_buffer_bytes``; over it, the connection's
session cuts it off as a slow consumer. A session that cuts itself leaves the hub at
once (:meth:`edge.session.ClientSession.cut`), so it is never written to after its
close frame either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol, cast

from mesh.hub import Sink

log = logging.getLogger("edgemesh.edge")


class HasTransport(Protocol):
    transport: asyncio.Transport


class OverLimitHook(Protocol):
    def over_limit(self) -> None: ...


class TransportFanout:
    def __init__(self, max_send_buffer_bytes: int) -> None:
        self.max_send_buffer_bytes = max_send_buffer_bytes

    def prepare(self, sinks: tuple[Sink, ...]) -> tuple[asyncio.Transport, ...]:
        return tuple(cast(HasTransport, s).transport for s in sinks)

    def write(self, frame: bytes, transports: tuple[asyncio.Transport, ...]) -> None:
        limit = self.max_send_buffer_bytes
        for t in transports:
            try:
                if t.is_closing():
                    continue
                t.write(frame)
                if t.get_write_buffer_size() > limit:
                    cast(OverLimitHook, t.get_protocol()).over_limit()
            except Exception:  # one broken connection must not starve the others
                log.exception("a connection failed during fan-out")
