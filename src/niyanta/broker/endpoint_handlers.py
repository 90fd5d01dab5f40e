"""The handlers a coordinator endpoint holds, shared by every transport's endpoint.

Each endpoint registers the coordinator's message and disconnect handlers the same way, binds
the message handler to one worker for that worker's ``Channel``, and reports a departure with a
logged (never raised) failure; this base keeps that in one place.
"""

from __future__ import annotations

import logging

from niyanta.broker.base import CoordinatorHandler, DisconnectHandler, Reply
from niyanta.broker.channel import Handler
from niyanta.broker.messages import AnyMessage

log = logging.getLogger(__name__)


class EndpointHandlers:
    def __init__(self) -> None:
        self._handler: CoordinatorHandler | None = None
        self._disconnect_handler: DisconnectHandler | None = None

    def on_message(self, handler: CoordinatorHandler) -> None:
        self._handler = handler

    def on_disconnect(self, handler: DisconnectHandler) -> None:
        self._disconnect_handler = handler

    def handler_for(self, worker_id: str) -> Handler | None:
        """The message handler bound to one worker, or None before one is registered."""
        handler = self._handler
        if handler is None:
            return None

        async def handle(message: AnyMessage) -> Reply:
            return await handler(worker_id, message)

        return handle

    async def report_disconnect(self, worker_id: str) -> None:
        if self._disconnect_handler is None:
            return
        try:
            await self._disconnect_handler(worker_id)
        except Exception:
            log.exception("broker: on_disconnect failed for %s", worker_id)
