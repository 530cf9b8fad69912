"""The edge server's main loop: it ticks rarely, yet a signal or the drain's end wakes it
at once (uvicorn's own loop polls ten times a second)."""

from __future__ import annotations

import asyncio
import signal
from typing import cast

import pytest
import uvicorn

import edge.server
from edge.node import EdgeNode
from edge.server import EdgeServer
from edge.settings import EdgeSettings


class DrainOnly:
    """What the server asks of its node around a signal: settings and drain()."""

    def __init__(self) -> None:
        self.settings = EdgeSettings()
        self.drained = asyncio.Event()

    async def drain(self) -> None:
        self.drained.set()


class CountingServer(EdgeServer):
    def __init__(self, node: DrainOnly) -> None:
        super().__init__(uvicorn.Config(app=lambda: None), cast(EdgeNode, node))
        self.ticks = 0
        self.ticked = asyncio.Event()

    async def on_tick(self, counter: int) -> bool:
        self.ticks += 1
        self.ticked.set()
        return await super().on_tick(counter)


async def test_a_signal_wakes_the_loop_and_the_drain_ends_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(edge.server, "TICK_S", 3600.0)  # no tick would come in time
    node = DrainOnly()
    server = CountingServer(node)
    loop_task = asyncio.create_task(server.main_loop())
    try:
        await asyncio.wait_for(server.ticked.wait(), 5)
        assert server.ticks == 1
        server.handle_exit(signal.SIGTERM, None)
        await asyncio.wait_for(node.drained.wait(), 5)  # woken by the signal
        await asyncio.wait_for(loop_task, 5)  # woken again by the drain's end
        assert server.should_exit and not server.force_exit
        assert server.ticks == 3  # start, signal, drain done: no other wake-up
    finally:
        loop_task.cancel()
        if server.deadline is not None:
            server.deadline.cancel()  # the overrun guard would end this process


async def test_the_loop_ticks_once_per_tick_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edge.server, "TICK_S", 0.05)
    server = CountingServer(DrainOnly())
    loop_task = asyncio.create_task(server.main_loop())
    try:
        for expected in range(1, 4):  # each tick without any signal: the Date header
            server.ticked.clear()
            await asyncio.wait_for(server.ticked.wait(), 5)
            assert server.ticks == expected
        assert not server.should_exit
    finally:
        server.should_exit = True
        loop_task.cancel()
