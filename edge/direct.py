"""The direct write path: fan-out frames written with ``os.write`` to a copy of the socket's fd.

Why: on the fan-out's hot path, a write through the transport touches the transport
object, its buffer and its libuv handle, one cache miss each per connection; writing
the frame straight to the socket's file descriptor touches nothing per connection
but an int. In ``bench/fanout.py`` that took the edges from 9.1-9.4 to 7.9-8.35 µs
of CPU per delivery (docs/edge.md, Benchmark).

Three rules keep it as safe as the transport's own writes:

1. **No stale fd.** The fan-out writes to a ``dup`` of the connection's socket, owned
   here and closed in :meth:`DirectPath.close` (the protocol's ``connection_lost``)
   only after the owner was told (:attr:`DirectPath.on_change`): the number cannot
   be reused by a new connection while a fan-out list still holds it, whatever the
   event loop did with its own fd. (uvloop and asyncio both call ``connection_lost``
   before they close their fd today; no documented rule says so, and a frame written
   to a reused number would go to a stranger, so the edge does not depend on it.)
2. **Order.** A direct write happens only while the transport's own buffer is empty.
   Every other write goes through :class:`GuardedTransport`: when one leaves bytes
   buffered, the connection leaves the direct path at once (:meth:`DirectPath.leave`
   calls ``on_change``, and the owner rebuilds its lists before the next frame). A
   direct write the kernel takes only in part hands the rest to the transport
   (:meth:`DirectPath.spill`), which then owns the order.
3. **Nothing after a close frame.** A close, an abort, and a write while the
   connection is no longer open (a close frame going out) all leave the direct path
   first.

The transport stays the connection's owner: it reads, closes, and reports errors; a
direct write that fails hands its frame to the transport, which meets the same error.
TLS transports never take the direct path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from collections.abc import Callable
from typing import Any, NamedTuple

log = logging.getLogger("edgemesh.edge")

# File descriptors a process needs besides its connections and their copies.
FD_RESERVE = 256
# How many copies may be open at once, so that they never take the fds that accepting
# `max_connections` connections needs (set by claim_open_files).
copy_budget = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2
_live_copies = 0

_fd_warning_logged = False


class FdBudget(NamedTuple):
    soft_limit: int  # the open-files limit to set
    copies: int  # at most this many copies open at once


def fd_budget(soft: int, hard: int, max_connections: int) -> FdBudget:
    """Each connection takes two fds (its socket and the direct path's copy): ask for
    enough, as far as the hard limit allows, and leave the copies only what
    `max_connections` sockets and the reserve do not need."""
    want = 2 * max_connections + FD_RESERVE
    if soft < want:
        soft = want if hard == resource.RLIM_INFINITY else max(soft, min(hard, want))
    return FdBudget(soft, max(0, soft - max_connections - FD_RESERVE))


def claim_open_files(max_connections: int) -> None:
    """Raise this process's open-files limit for `max_connections`; set the copy budget."""
    global copy_budget
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = fd_budget(soft, hard, max_connections)
    if budget.soft_limit != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (budget.soft_limit, hard))
    copy_budget = budget.copies
    if budget.copies < max_connections:
        log.warning(
            "open-files limit %d (hard %s): only %d of %d connections can take the direct "
            "write path at once, the others write through their transports (raise the "
            "hard limit to %d)",
            budget.soft_limit,
            hard,
            budget.copies,
            max_connections,
            2 * max_connections + FD_RESERVE,
        )


class DirectPath:
    """One connection's direct write path (see the module's docstring)."""

    __slots__ = ("_can_write", "active", "closed", "fd", "on_change", "transport", "unusable")

    def __init__(self, transport: asyncio.Transport, can_write: Callable[[], bool]) -> None:
        self.transport = transport  # the event loop's own transport
        self._can_write = can_write
        self.fd = -1  # our dup of the socket's fd, open from the first `open` to `close`
        self.active = False  # the fd was handed out and no change was reported since
        self.closed = False
        self.unusable = False  # TLS, no socket, or no fd left: the transport only
        # Called when the connection leaves the direct path, and when it could take it
        # again: whoever holds the fd from `open` must stop using it and may ask again.
        self.on_change: Callable[[], None] | None = None

    def open(self) -> int:
        """The fd to write frames to now, or -1: write through the transport instead."""
        if (
            self.closed
            or self.unusable
            or self.on_change is None
            or not self._can_write()
            or self.transport.get_write_buffer_size()
        ):
            return -1
        if self.fd < 0:
            self.fd = self._dup()
            if self.fd < 0:
                return -1
        self.active = True
        return self.fd

    def _dup(self) -> int:
        global _fd_warning_logged, _live_copies
        sock = self.transport.get_extra_info("socket")
        if sock is None or self.transport.get_extra_info("sslcontext") is not None:
            self.unusable = True
            return -1
        if _live_copies < copy_budget:
            try:
                fd = os.dup(sock.fileno())
            except OSError as exc:
                reason = str(exc)
            else:
                _live_copies += 1
                return fd
        else:
            reason = f"all {copy_budget} copies are in use"
        self.unusable = True
        if not _fd_warning_logged:
            _fd_warning_logged = True
            log.warning(
                "no file descriptor for a direct write path (%s): such connections write "
                "through their transports (raise the open-files limit)",
                reason,
            )
        return -1

    def writable(self) -> bool:
        """Whether anything may be written to the connection now (by any path)."""
        return self._can_write()

    def leave(self) -> None:
        """Stop direct writes (before anything else is written or the transport closes)."""
        if self.active:
            self.active = False
            if self.on_change is not None:
                self.on_change()

    def may_return(self) -> None:
        """The transport's buffer is empty again: the connection may take the direct path."""
        if (
            not self.active
            and not self.closed
            and not self.unusable
            and self.on_change is not None
            and self._can_write()
        ):
            self.on_change()

    def spill(self, frame: bytes, written: int) -> None:
        """A direct write put only `written` bytes of `frame` out (0 on an error): the
        transport sends the rest, and the connection leaves the direct path."""
        self.leave()
        if not self.transport.is_closing():
            self.transport.write(memoryview(frame)[written:])

    def close(self) -> None:
        """The connection is gone: tell the owner, then close our fd."""
        global _live_copies
        self.leave()
        self.closed = True
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            _live_copies -= 1
            os.close(fd)


class GuardedTransport(asyncio.Transport):
    """What the WebSocket protocol writes through: the transport, with the direct
    path's guard on every write and close (rules 2 and 3)."""

    def __init__(
        self, inner: asyncio.Transport, path: DirectPath, is_open: Callable[[], bool]
    ) -> None:
        super().__init__()
        self._inner = inner
        self._path = path
        self._is_open = is_open

    def write(self, data: bytes | bytearray | memoryview) -> None:
        path = self._path
        if path.active and not self._is_open():
            path.leave()  # a close frame is going out: nothing direct after it
        self._inner.write(data)
        if path.active and self._inner.get_write_buffer_size():
            path.leave()

    def close(self) -> None:
        self._path.leave()
        self._inner.close()

    def abort(self) -> None:
        self._path.leave()
        self._inner.abort()

    def write_eof(self) -> None:
        self._path.leave()
        self._inner.write_eof()

    def can_write_eof(self) -> bool:
        return self._inner.can_write_eof()

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._inner.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def is_reading(self) -> bool:
        return self._inner.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._inner.get_protocol()
