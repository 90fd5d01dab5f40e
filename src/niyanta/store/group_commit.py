"""Group commit: many callers' fenced writes gathered into few ``apply_writes`` transactions.

A caller awaits ``submit(write)``. The committer takes what has queued (waiting while more keeps
arriving, up to ``max_delay_s``, or until ``max_batch`` writes), applies the batch in one
transaction, and resolves every caller with its own result or raises its own refusal. A batch the
store could not take (``StoreUnavailable``) is tried again ``retries`` times after short pauses.

Up to ``max_in_flight`` batches commit at once (PostgreSQL runs them in parallel; SQLite has one
writer, so it gets one). A batch never takes a write for a replica that a batch in flight
touches: writes to one replica are applied in the order they were submitted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from niyanta.errors import StoreUnavailable
from niyanta.model import ReplicaKey
from niyanta.store.base import FencedWrite, WriteResult

_Pending = tuple[FencedWrite, "asyncio.Future[WriteResult]"]


class WriteApplier(Protocol):
    """The part of ``Store`` the committer needs."""

    async def apply_writes(self, writes: Sequence[FencedWrite]) -> list[WriteResult]: ...


@runtime_checkable
class ParallelWrites(Protocol):
    parallel_writes: int
    """How many write transactions the store runs at once to good effect."""


class GroupCommitter:
    def __init__(
        self,
        store: WriteApplier,
        max_batch: int = 500,
        max_delay_s: float = 0.002,
        max_in_flight: int | None = None,
        retries: int = 2,
        retry_pause_s: float = 0.02,
    ) -> None:
        self._store = store
        self._retries = retries
        self._retry_pause_s = retry_pause_s
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        if max_in_flight is None:
            max_in_flight = store.parallel_writes if isinstance(store, ParallelWrites) else 1
        self._slots = asyncio.Semaphore(max_in_flight)
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._settled = asyncio.Event()
        self._busy: Counter[ReplicaKey] = Counter()
        self._batches: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    async def submit(self, write: FencedWrite) -> WriteResult:
        """Apply ``write`` durably; return the replica or checkpoint after it, or raise the typed
        error that refused it (``FencedOut``, ``IllegalTransition``, ...)."""
        if self._closed:
            raise StoreUnavailable("the group committer is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._dispatch(), name="group-commit")
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        self._arrived.set()
        result = await future
        if isinstance(result, Exception):
            raise result
        return result

    async def close(self) -> None:
        """Commit what is queued, then stop."""
        self._closed = True
        while self._queue or self._batches:
            if self._batches:
                # Wait for the tasks themselves: a batch signals ``_settled`` just before its
                # task ends and leaves ``_batches``.
                await asyncio.wait(set(self._batches))
                continue
            self._settled.clear()
            await self._settled.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()
            deadline = loop.time() + self._max_delay_s
            # Gather while writes keep arriving (callers woken by the last batch resubmit within
            # a loop pass or two), within the delay budget.
            while len(self._queue) < self._max_batch and loop.time() < deadline:
                before = len(self._queue)
                await asyncio.sleep(0)
                if len(self._queue) == before:
                    break
            batch = self._take()
            if not batch:
                # The oldest write's replica is in a batch in flight: wait for a batch to end.
                self._slots.release()
                self._settled.clear()
                await self._settled.wait()
                continue
            task = asyncio.create_task(self._commit(batch))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    def _take(self) -> list[_Pending]:
        """The longest run of queued writes (oldest first) free of replicas in flight."""
        batch: list[_Pending] = []
        while self._queue and len(batch) < self._max_batch:
            write = self._queue[0][0]
            if self._busy[write.key]:
                break
            batch.append(self._queue.popleft())
        for write, _ in batch:
            self._busy[write.key] += 1
        return batch

    async def _apply(self, writes: list[FencedWrite]) -> list[WriteResult]:
        """``apply_writes``, tried again after a short pause when the store could not be reached:
        a blip costs the callers a few milliseconds instead of a round trip to their worker. The
        batch may have committed before the failure; its retry is then answered ``Repeated``."""
        for attempt in range(self._retries):
            try:
                return await self._store.apply_writes(writes)
            except StoreUnavailable:
                await asyncio.sleep(self._retry_pause_s * 2**attempt)
        return await self._store.apply_writes(writes)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            results = await self._apply([write for write, _ in batch])
        except Exception as exc:  # the whole transaction failed: every caller learns why
            results = [exc] * len(batch)
        finally:
            for write, _ in batch:
                self._busy[write.key] -= 1
                if not self._busy[write.key]:
                    del self._busy[write.key]
            self._slots.release()
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        self._settled.set()
