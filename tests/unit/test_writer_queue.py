"""The turn at SQLite's one writer: urgent callers first, ordinary ones never starved, and a
cancelled waiter neither holds the writer nor loses it for the next."""

from __future__ import annotations

import asyncio

import pytest

from niyanta.store.writer_queue import URGENT_IN_A_ROW, WriterQueue


async def _run_all(queue: WriterQueue, callers: list[tuple[str, bool]]) -> list[str]:
    """Callers queue (in list order) behind a holder; the order they got the writer in."""
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with queue.turn():
            await release.wait()

    async def caller(name: str, urgent: bool) -> None:
        async with queue.turn(urgent):
            order.append(name)
            await asyncio.sleep(0)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    tasks = []
    for name, urgent in callers:
        tasks.append(asyncio.create_task(caller(name, urgent)))
        await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, *tasks)
    return order


async def test_urgent_callers_go_before_ordinary_ones_queued_earlier() -> None:
    order = await _run_all(WriterQueue(), [("renew", False), ("batch", False), ("submit", True)])
    assert order == ["submit", "renew", "batch"]


async def test_a_stream_of_urgent_callers_lets_an_ordinary_one_through() -> None:
    urgent = [(f"u{i}", True) for i in range(5)]
    order = await _run_all(WriterQueue(), [("renew", False), *urgent])
    assert order.index("renew") == URGENT_IN_A_ROW


async def test_a_cancelled_waiter_does_not_keep_the_writer() -> None:
    queue = WriterQueue()
    release = asyncio.Event()

    async def holder() -> None:
        async with queue.turn():
            await release.wait()

    async def waiter() -> None:
        async with queue.turn(urgent=True):
            raise AssertionError("a cancelled waiter never gets the writer")

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    cancelled.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await held
    async with asyncio.timeout(1):
        async with queue.turn():
            pass


async def test_a_waiter_cancelled_as_it_is_granted_passes_the_writer_on() -> None:
    queue = WriterQueue()
    release = asyncio.Event()
    got: list[str] = []

    tasks: list[asyncio.Task[None]] = []

    async def holder() -> None:
        async with queue.turn():
            await release.wait()
        tasks[0].cancel()  # its release just handed the writer to it, which has not run yet

    async def caller(name: str) -> None:
        async with queue.turn():
            got.append(name)

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    granted = asyncio.create_task(caller("granted"))
    after = asyncio.create_task(caller("after"))
    tasks.append(granted)
    await asyncio.sleep(0)
    release.set()
    await held
    with pytest.raises(asyncio.CancelledError):
        await granted
    async with asyncio.timeout(1):
        await after
    assert got == ["after"]
