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
