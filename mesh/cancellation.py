"""Stopping asyncio tasks for certain, within a time limit.

``task.cancel()`` followed by ``await task`` is not enough on Python 3.11: when a cancel
lands in the same loop iteration as the reply an ``asyncio.wait_for`` is waiting for
(nats-py wraps every request and flush in one), ``wait_for`` returns the reply and the
cancel is lost. A task that loops (a poller, a writer) then runs on, and whoever awaits
it waits forever. :func:`cancel_and_wait` cancels again until the task ends, and gives
up at a deadline instead of hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Any

# How long a cancel may go unanswered before it is sent again.
RECANCEL_S = 0.05


async def cancel_and_wait(
    tasks: Iterable[asyncio.Task[Any]], timeout_s: float
) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` and wait until each has ended, cancelling again every
    :data:`RECANCEL_S` in case a cancel was lost. Returns the tasks still running after
    `timeout_s` (empty when all ended). Never raises the tasks' exceptions; a cancel of
    the caller itself propagates. Meant for shutdown: a task whose own clean-up on
    cancel takes longer than :data:`RECANCEL_S` is cancelled again inside it (a lost
    cancel cannot be told from a slow clean-up: the task's ``cancelling()`` count
    stays 1 either way)."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    deadline = time.monotonic() + timeout_s
    while pending:
        for t in pending:
            t.cancel()
        left = deadline - time.monotonic()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_S, left))
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()  # retrieved: no "exception was never retrieved" at exit
    return pending
