"""cancel_and_wait: tasks that lose a cancel still end; tasks that never end don't hang us."""

from __future__ import annotations

import asyncio

from mesh.cancellation import cancel_and_wait


async def loses_first_cancel(started: asyncio.Event) -> None:
    """Like a poller whose cancel met a reply inside asyncio.wait_for (Python 3.11)."""
    lost = False
    started.set()
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True


async def test_a_task_that_loses_a_cancel_is_cancelled_again_and_ends() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(loses_first_cancel(started))
    await started.wait()
    task.cancel()  # what `cancel(); await task` relies on: lost here
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done, "the first cancel should have been lost"
    assert await cancel_and_wait([task], 10) == set()
    assert task.cancelled()


async def test_a_task_that_never_ends_is_given_up_at_the_deadline() -> None:
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], 0.2) == {task}
    assert not task.done()
    stop.set()
    await task


async def test_finished_failed_and_empty_sets() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    sleeper = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    assert await cancel_and_wait([failed, sleeper], 5) == set()
    assert sleeper.cancelled() and isinstance(failed.exception(), RuntimeError)
    assert await cancel_and_wait([], 0) == set()
