"""POSTs SLO alerts to an operator's webhook, off the SLO watch's path.

``notify`` only queues the JSON body; a sender task delivers the bodies in order, retrying each
with exponential backoff. The queue is bounded: when the receiver stays down, the oldest bodies
are dropped (and logged) rather than holding memory or delaying the watch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx
import structlog

from niyanta.coordinator.stopper import Stopper
from niyanta.model import JSON

log = structlog.get_logger("niyanta.coordinator")

STOP_CHECK_S = 0.5


class AlertWebhook:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        attempts: int = 5,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_queued: int = 1000,
    ) -> None:
        self.url = url
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self._queue: asyncio.Queue[Mapping[str, JSON]] = asyncio.Queue(max_queued)

    def notify(self, body: Mapping[str, JSON]) -> None:
        """Queue ``body`` for delivery; never waits."""
        if self._queue.full():
            log.warning("webhook.dropped", url=self.url, body=dict(self._queue.get_nowait()))
        self._queue.put_nowait(body)

    async def run(self, stopper: Stopper) -> None:
        """Deliver queued bodies until ``stopper`` stops."""
        async with httpx.AsyncClient(timeout=self._timeout_s) as client:
            while not stopper.stopped:
                try:
                    # A bounded wait, so that a stop is noticed without a body arriving.
                    body = await asyncio.wait_for(self._queue.get(), STOP_CHECK_S)
                except TimeoutError:
                    continue
                await self._deliver(client, body, stopper)

    async def _deliver(
        self, client: httpx.AsyncClient, body: Mapping[str, JSON], stopper: Stopper
    ) -> None:
        backoff = self._first_backoff_s
        for attempt in range(1, self._attempts + 1):
            try:
                response = await client.post(self.url, json=dict(body))
                if response.status_code < 300:
                    return
                error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                error = repr(exc)
            log.warning("webhook.failed", url=self.url, attempt=attempt, error=error)
            if attempt == self._attempts or await stopper.pause(backoff):
                break
            backoff = min(self._max_backoff_s, backoff * 2)
        log.error("webhook.given_up", url=self.url, body=dict(body))
