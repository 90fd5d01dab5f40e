"""The turn at a store's only writer (SQLite), urgent callers first.

SQLite has one writer. Under a flood of lower-tier work it is busy most of the time with the
group committer's batches (progress, checkpoints, results) and lease renewals, and a plain FIFO
lock made a platinum submit, and then the scheduling round's assignment for it, each wait out
the whole queue. Urgent transactions (the writes a placement waits on: submits and
assignments) are granted the writer before ordinary ones; after ``URGENT_IN_A_ROW`` urgent grants
an ordinary waiter goes first, so renewals and results are never starved by a stream of submits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

URGENT_IN_A_ROW = 2


class WriterQueue:
    def __init__(self) -> None:
        self._busy = False
        self._urgent: deque[asyncio.Future[None]] = deque()
        self._ordinary: deque[asyncio.Future[None]] = deque()
        self._urgent_run = 0

    @asynccontextmanager
    async def turn(self, urgent: bool = False) -> AsyncIterator[None]:
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if not self._busy:  # a release hands the writer straight to a waiter, if any
            self._busy = True
            self._count(urgent)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._ordinary).append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted as it was cancelled: pass the turn on
            else:
                (self._urgent if urgent else self._ordinary).remove(waiter)
            raise
        self._count(urgent)

    def _count(self, urgent: bool) -> None:
        self._urgent_run = self._urgent_run + 1 if urgent else 0

    def _release(self) -> None:
        self._busy = False
        while True:
            queue = self._next_queue()
            if queue is None:
                return
            waiter = queue.popleft()
            if not waiter.done():
                self._busy = True
                waiter.set_result(None)
                return

    def _next_queue(self) -> deque[asyncio.Future[None]] | None:
        if self._urgent and (not self._ordinary or self._urgent_run < URGENT_IN_A_ROW):
            return self._urgent
        if self._ordinary:
            return self._ordinary
        return None
