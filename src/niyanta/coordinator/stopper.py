"""Ending a loop between steps rather than in the middle of one.

The store is safe to cancel (a cancelled call commits whole or not at all, see the contract test
``test_calls_cancelled_mid_flight_leave_the_store_usable``), but a loop's step is more than one
store call: a scheduling round cut between assigning replicas and sending their starts leaves them
scheduled on a worker that never heard of them until their lease expires. The coordinator's loops
therefore wait on a ``Stopper`` between steps and end after the step in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("niyanta.coordinator")


class Stopper:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    @property
    def stopped(self) -> bool:
        return self._event.is_set()

    def stop(self) -> None:
        self._event.set()

    def reset(self) -> None:
        self._event.clear()

    async def pause(self, seconds: float) -> bool:
        """Wait ``seconds``; True (at once) when the loop is to end."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), seconds)
        return self._event.is_set()

    async def repeat(
        self,
        tick: Callable[[], Awaitable[object]],
        *,
        interval_s: float,
        error_pause_s: float,
        failure_event: str,
        first_wait: bool = False,
    ) -> None:
        """Run ``tick`` every ``interval_s`` until stopped. A failing tick (a store outage) is
        logged as ``failure_event`` and retried after ``error_pause_s``."""
        if first_wait and await self.pause(interval_s):
            return
        while not self.stopped:
            try:
                await tick()
            except Exception as exc:
                log.warning(failure_event, error=repr(exc))
                await self.pause(error_pause_s)
                continue
            await self.pause(interval_s)
