"""One wildcard inbox subscription carrying the replies of many requests (acks, direct gets).

nats-py's ``request()`` makes a future per call but cannot take a stream of replies
(batch direct get) and ``publish_async`` never times out; this small multiplexer does
both jobs for the publisher and the replay reader.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg

ReplyHandler = Callable[[Msg], None]


class ReplyMux:
    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix = ""
        self._handlers: dict[str, ReplyHandler] = {}
        self._ids = itertools.count(1)
        self._started: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """Subscribe the inbox once (concurrent callers wait for the same subscription)."""
        if self._started is None:
            self._started = asyncio.get_running_loop().create_future()
            try:
                inbox = self.nc.new_inbox()
                await self.nc.subscribe(
                    inbox + ".*",
                    cb=self._on_msg,
                    pending_msgs_limit=1_000_000,
                    pending_bytes_limit=512 * 1024 * 1024,
                )
                self._prefix = inbox + "."
                self._started.set_result(None)
            except BaseException as exc:
                started, self._started = self._started, None
                started.set_exception(exc)
                started.exception()  # consumed: waiters get it via await
                raise
        await asyncio.shield(self._started)

    @property
    def ready(self) -> bool:
        return self._started is not None and self._started.done() and bool(self._prefix)

    def open(self, handler: ReplyHandler) -> tuple[str, str]:
        """(token, reply subject) routed to `handler` until :meth:`close` (start() first)."""
        token = str(next(self._ids))
        self._handlers[token] = handler
        return token, self._prefix + token

    def close(self, token: str) -> None:
        self._handlers.pop(token, None)

    async def _on_msg(self, msg: Msg) -> None:
        h = self._handlers.get(msg.subject[len(self._prefix) :])
        if h is not None:
            h(msg)
