"""A bounded memory of the message ids a receiver has seen, with the reply it sent for each.

Transports that retry (NATS requests after a timeout) deliver some messages twice; the receiver
hands a message to its handler once and answers a repeat with the reply it already sent."""

from __future__ import annotations

from collections import OrderedDict

PENDING = b""
"""The handler has not replied yet (or sends no reply)."""


class SeenIds:
    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._replies: OrderedDict[str, bytes] = OrderedDict()

    def first_time(self, message_id: str) -> bool:
        """Record the id; whether it was new."""
        if message_id in self._replies:
            self._replies.move_to_end(message_id)
            return False
        self._replies[message_id] = PENDING
        if len(self._replies) > self.capacity:
            self._replies.popitem(last=False)
        return True

    def remember(self, message_id: str, reply: bytes) -> None:
        if message_id in self._replies:
            self._replies[message_id] = reply

    def reply_to(self, message_id: str) -> bytes:
        """The reply sent for a seen id, or PENDING."""
        return self._replies.get(message_id, PENDING)
