"""Ending a loop between steps rather than in the middle of one.

Cancelling a task that awaits a store call can leave that call's transaction half done on the
store's connection; the coordinator's loops instead wait on a ``Stopper`` between steps and end
after the step in flight.
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
