"""Running one edge node under uvicorn, with a graceful drain on SIGTERM/SIGINT.

uvicorn's own shutdown closes WebSockets with 1012 before the app hears of it;
the edge first tells every client where to go (`disconnect` with fallback regions),
waits for pending acks and for clients to leave, and only then lets uvicorn stop.
A second signal stops at once.

Every phase has a limit (:class:`edge.settings.DrainSettings`), so the process ends
within ``drain.exit_within_s`` of the first signal; should it still be running then
(a bug), it exits at once with :data:`edge.settings.OVERRUN_EXIT_CODE`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import math
import os
import re
import threading
import time
from types import FrameType
from typing import Any

import uvicorn
import uvicorn.config

from edge.app import create_app
from edge.direct import claim_open_files
from edge.node import EdgeNode
from edge.settings import OVERRUN_EXIT_CODE
from edge.wsprotocol import EdgeWebSocketProtocol

log = logging.getLogger("edgemesh.edge")

# How often the server's main loop wakes when nothing asks it to (uvicorn: 0.1 s).
TICK_S = 1.0


class EdgeServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, node: EdgeNode) -> None:
        super().__init__(config)
        self.node = node
        self._drain_requested = False
        self._drain_task: asyncio.Task[None] | None = None
        self.signalled_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        # Started by the first signal: ends the process should the drain overrun.
        self.deadline: threading.Timer | None = None

    async def main_loop(self) -> None:
        """uvicorn's loop, ticking once a second instead of ten times.

        uvicorn polls ``should_exit`` every 0.1 s. Each wake-up of an idle process costs
        more CPU than the work it does (up to ~0.5 ms on the benchmark's machine, see
        docs/edge.md), and the only periodic work (the Date header) needs one a second;
        a signal or the end of the drain wakes the loop at once instead.
        """
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        should_exit = await self.on_tick(0)
        while not should_exit:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), TICK_S)
            self._wake.clear()
            should_exit = await self.on_tick(0)  # counter 0: uvicorn refreshes its Date header

    def _wake_main_loop(self) -> None:
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_requested:
            self.should_exit = True
            self.force_exit = True
            self._wake_main_loop()
            return
        self._drain_requested = True
        self.signalled_at = time.monotonic()
        bound = self.node.settings.drain.exit_within_s
        self.deadline = threading.Timer(bound, _overrun, args=(bound,))
        self.deadline.daemon = True
        self.deadline.start()
        self._wake_main_loop()

    async def on_tick(self, counter: int) -> bool:
        if self._drain_requested and self._drain_task is None:
            log.info("drain: starting, %.2f s after the signal", self.since_signal())
            self._drain_task = asyncio.get_running_loop().create_task(self.node.drain())
            self._drain_task.add_done_callback(lambda _: self._wake_main_loop())
        if self._drain_task is not None and self._drain_task.done():
            if not self._drain_task.cancelled() and self._drain_task.exception() is not None:
                log.error("drain failed: %r", self._drain_task.exception())
            self.should_exit = True
        return await super().on_tick(counter)

    def since_signal(self) -> float:
        return 0.0 if self.signalled_at is None else time.monotonic() - self.signalled_at


def _overrun(bound: float) -> None:
    """The shutdown took longer than every limit together: don't hang, exit now."""
    log.error("shutdown still running %.1f s after the signal; exiting now", bound)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(OVERRUN_EXIT_CODE)


_TOKEN_IN_QUERY = re.compile(r"(token=)[^&\s\"]+")


class RedactTokens(logging.Filter):
    """uvicorn logs WebSocket request lines with their query string: hide tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1...", a) if isinstance(a, str) else a for a in record.args
            )
        return True


LOG_FORMAT = "%(asctime)s %(name)s %(message)s"


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with timestamps (its default has none)."""
    config: dict[str, Any] = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    config["formatters"]["default"]["fmt"] = "%(asctime)s %(levelprefix)s %(message)s"
    return config


def uvicorn_config(node: EdgeNode, host: str, port: int, log_level: str) -> uvicorn.Config:
    settings = node.settings
    return uvicorn.Config(
        create_app(node),
        host=host,
        port=port,
        ws=EdgeWebSocketProtocol,
        ws_max_size=settings.limits.max_frame_bytes,
        # Frames are encoded once for every subscriber: no per-connection compression.
        ws_per_message_deflate=False,
        # The protocol's keepalive wheel pings at this interval and cuts a connection
        # whose ping is unanswered when the next falls due (edge.wsprotocol).
        ws_ping_interval=settings.heartbeat_interval_s,
        ws_ping_timeout=settings.heartbeat_interval_s,
        lifespan="on",
        log_level=log_level,
        log_config=log_config(),
        access_log=False,
        # After the drain: how long connections and requests still open get to end.
        timeout_graceful_shutdown=math.ceil(settings.drain.close_grace_s),
        backlog=4096,
    )


def serve(node: EdgeNode, host: str, port: int, log_level: str = "warning") -> None:
    logging.basicConfig(level=log_level.upper(), format=LOG_FORMAT)
    config = uvicorn_config(node, host, port, log_level)  # this configures uvicorn's loggers
    logging.getLogger("uvicorn.error").addFilter(RedactTokens())
    claim_open_files(node.settings.limits.max_connections)
    server = EdgeServer(config, node)
    server.run()
    if server.signalled_at is not None:
        log.info("exit: %.2f s after the signal", server.since_signal())
