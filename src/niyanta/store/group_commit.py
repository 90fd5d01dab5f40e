"""Group commit: many callers' fenced writes gathered into one ``apply_writes`` transaction.

A caller awaits ``submit(write)``; the committer collects what arrives while the previous batch
commits, plus up to ``max_delay_s`` more (or until ``max_batch`` writes), applies the batch in one
transaction and resolves every caller with its own result (or raises its own refusal). One batch
is in flight at a time, so writes to one replica are applied in the order they were submitted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Protocol

from niyanta.errors import StoreUnavailable
from niyanta.store.base import FencedWrite, WriteResult

_Pending = tuple[FencedWrite, "asyncio.Future[WriteResult]"]


class WriteApplier(Protocol):
    """The part of ``Store`` the committer needs."""

    async def apply_writes(self, writes: Sequence[FencedWrite]) -> list[WriteResult]: ...


class GroupCommitter:
    def __init__(
        self, store: WriteApplier, max_batch: int = 500, max_delay_s: float = 0.002
    ) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, write: FencedWrite) -> WriteResult:
        """Apply ``write`` durably; return the replica or checkpoint after it, or raise the typed
        error that refused it (``FencedOut``, ``IllegalTransition``, ...)."""
        if self._closed:
            raise StoreUnavailable("the group committer is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="group-commit")
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((write, future))
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closed = True
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _gather(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self._max_delay_s
        while len(batch) < self._max_batch:
            if self._queue.empty():
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            else:
                batch.append(self._queue.get_nowait())
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._gather()
            try:
                results = await self._store.apply_writes([write for write, _ in batch])
            except Exception as exc:  # the whole transaction failed: every caller learns why
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
                self._queue.task_done()
