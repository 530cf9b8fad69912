"""A subscription as the application holds it: the messages of one channel, in order."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from client.frames import Message

if TYPE_CHECKING:
    from client.client import Client


class Subscription:
    """Iterate it (``async for m in sub``) or call :meth:`next`. It ends (the iteration
    stops) when the application unsubscribes, the server refuses it, or the client closes.

    It holds at most ``max_buffered_messages`` messages the application has not taken;
    while it is full, the client reads nothing from the connection (see
    :class:`~client.settings.ClientSettings`).

    ``discontinuities`` counts the times the server could not replay everything since the
    cursor (`recovered: false`: history expired, or a region lost before it replicated),
    on a resume or on a first subscribe from a cursor the caller gave;
    ``on_discontinuity`` is called for each. Messages before and after one are still in
    order. ``resumes`` counts the resumes.
    """

    def __init__(
        self,
        client: Client,
        channel: str,
        max_buffered: int,
        on_discontinuity: Callable[[Subscription], None] | None = None,
    ) -> None:
        self.channel = channel
        self.discontinuities = 0
        self.resumes = 0  # subscribed again on a new connection, from its cursor
        self.most_buffered = 0  # the most messages it held untaken at once
        self.on_discontinuity = on_discontinuity
        self._client = client
        self._max = max_buffered
        self._items: deque[Message] = deque()
        self._readable = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._ended: BaseException | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def cursor(self) -> str | None:
        """Where a resume of this channel would start: after the last message received."""
        return self._client._cursor_of(self.channel)

    @property
    def buffered(self) -> int:
        return len(self._items)

    async def put(self, message: Message) -> None:
        """(The client's reader.) Waits while the subscription is full."""
        while len(self._items) >= self._max and self._ended is None:
            self._room.clear()
            await self._room.wait()
        if self._ended is None:
            self._items.append(message)
            self.most_buffered = max(self.most_buffered, len(self._items))
            self._readable.set()

    def end(self, why: BaseException) -> None:
        """No more messages; what is buffered can still be taken."""
        if self._ended is None:
            self._ended = why
        self._readable.set()
        self._room.set()
        if not self.ready.done():
            self.ready.set_exception(why)
            self.ready.exception()  # retrieved: nobody may be waiting

    def discontinuity(self) -> None:
        self.discontinuities += 1
        if self.on_discontinuity is not None:
            self.on_discontinuity(self)

    async def next(self, within_s: float | None = None) -> Message:
        """The next message. Raises :class:`StopAsyncIteration` once the subscription has
        ended and nothing is left, :class:`TimeoutError` after `within_s`."""
        return await asyncio.wait_for(self.__anext__(), within_s)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while not self._items:
            if self._ended is not None:
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._room.set()
        return item

    def unsubscribe(self) -> Awaitable[None]:
        return self._client.unsubscribe(self.channel)
