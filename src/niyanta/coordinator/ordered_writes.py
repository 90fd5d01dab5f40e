"""Fenced writes handed to the group committer in the order the worker sent them.

Each write is submitted on a task of its own, created at once: asyncio starts tasks in creation
order, so a ``Started`` handled without waiting reaches the committer before the ``Result`` that
follows it (a replica must be running before it can succeed), while the worker's next message is
handled without waiting for the commit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from niyanta.errors import NiyantaError
from niyanta.store.base import FencedWrite, WriteResult
from niyanta.store.group_commit import GroupCommitter

log = structlog.get_logger("niyanta.coordinator")

OnRefused = Callable[[FencedWrite, NiyantaError], None]


class OrderedWriter:
    def __init__(self, committer: GroupCommitter) -> None:
        self._committer = committer
        self._background: set[asyncio.Task[WriteResult]] = set()

    def submit(self, write: FencedWrite) -> asyncio.Task[WriteResult]:
        """Queue ``write`` behind every write submitted before it; await the task for its
        result (the replica or checkpoint after it) or its refusal."""
        return asyncio.create_task(self._committer.submit(write))

    def submit_detached(self, write: FencedWrite, on_refused: OnRefused | None = None) -> None:
        """Queue ``write`` and let it complete on its own; a refusal goes to ``on_refused``."""
        task = self.submit(write)
        self._background.add(task)

        def done(finished: asyncio.Task[WriteResult]) -> None:
            self._background.discard(finished)
            if finished.cancelled():
                return
            exc = finished.exception()
            if isinstance(exc, NiyantaError):
                if on_refused is not None:
                    on_refused(write, exc)
                else:
                    log.debug("write.refused", write=type(write).__name__, code=exc.code)
            elif exc is not None:
                log.warning("write.failed", write=type(write).__name__, error=repr(exc))

        task.add_done_callback(done)

    async def drain(self) -> None:
        """Wait for the detached writes still in flight."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
