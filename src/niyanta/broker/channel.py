"""One side of a conversation with one peer, shared by every transport.

A transport moves bytes; a ``Channel`` turns them into the broker's semantics: decode (refusing
malformed, oversized or unknown-version data with a ``Refusal`` back and a logged reason),
resolve the pending ``request`` a reply answers (at once, so that a reply is never stuck behind
a slow handler), and hand every other message to the handler in arrival order on a task of its
own (so that a slow handler for one peer does not hold up another). A handler's returned message
goes back with ``corr`` set to the id of the message it answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec

from niyanta.broker.base import Deferred, Reply
from niyanta.broker.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    AnyMessage,
    Message,
    Refusal,
    decode,
    encode,
)
from niyanta.errors import BrokerError, MessageRefused

log = logging.getLogger(__name__)

Transmit = Callable[[bytes], Awaitable[None]]
"""Sends one encoded message to the peer; raises BrokerError when it cannot."""
Handler = Callable[[AnyMessage], Awaitable[Reply]]
Remember = Callable[[str, bytes], None]
"""Called with (message id, encoded reply) after a handler's reply is sent."""


class _IdProbe(msgspec.Struct):
    id: str = ""


_id_probe = msgspec.msgpack.Decoder(_IdProbe)


def encode_checked(message: Message, max_bytes: int) -> bytes:
    """Encode, refusing (before anything is sent) a message the peer would refuse as too large."""
    data = encode(message)
    if len(data) > max_bytes:
        raise MessageRefused(f"too_large: {len(data)} bytes > {max_bytes}")
    return data


def refusal_for(data: bytes, exc: MessageRefused, sender: str) -> Refusal:
    """The Refusal answering undecodable ``data``; ``corr`` is its id when that much is legible,
    so that a refused request fails at once instead of timing out."""
    code, _, reason = exc.message.partition(": ")
    corr: str | None = None
    if len(data) <= DEFAULT_MAX_MESSAGE_BYTES:
        try:
            corr = _id_probe.decode(data).id or None
        except (msgspec.DecodeError, msgspec.ValidationError):
            corr = None
    return Refusal(code=code, reason=reason, corr=corr, sender=sender)


class Channel:
    """Decoding, reply correlation and ordered handler dispatch for one peer."""

    def __init__(
        self,
        *,
        name: str,
        local_sender: str,
        transmit: Transmit,
        handler: Callable[[], Handler | None],
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.name = name
        self._local_sender = local_sender
        self._transmit = transmit
        self._handler = handler
        self._max_bytes = max_bytes
        self._pending: dict[str, asyncio.Future[AnyMessage]] = {}
        self._inbox: asyncio.Queue[tuple[AnyMessage, Transmit, Remember | None] | None] = (
            asyncio.Queue()
        )
        self._dispatcher: asyncio.Task[None] | None = None
        self._deferred: set[asyncio.Task[None]] = set()
        self._released = asyncio.Event()

    @property
    def transmit(self) -> Transmit:
        return self._transmit

    def start(self, *, hold: bool = False) -> None:
        """Start handler dispatch; with ``hold``, messages wait until ``release()``."""
        if hold:
            self._released.clear()
        else:
            self._released.set()
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"broker:{self.name}")

    def hold(self) -> None:
        """Hand nothing more to the handler until ``release()`` (while a worker's on_connect
        runs); replies still resolve their requests."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def finish(self) -> None:
        """The connection is gone: fail waiting requests; already received messages are still
        handed to the handler (a StopReplica received is still acted on)."""
        self._fail_pending(BrokerError(f"connection to {self.name} lost"))
        self._inbox.put_nowait(None)
        self.release()

    async def close(self) -> None:
        """Stop at once, dropping undelivered messages."""
        self._fail_pending(BrokerError(f"channel {self.name} closed"))
        tasks = [*self._deferred, *([self._dispatcher] if self._dispatcher else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._dispatcher = None

    def _fail_pending(self, exc: BrokerError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()

    async def send(self, message: Message) -> None:
        if not message.sender:
            message.sender = self._local_sender
        await self._transmit(encode_checked(message, self._max_bytes))

    async def request(self, message: Message, timeout: float) -> AnyMessage:  # noqa: ASYNC109
        if not message.sender:
            message.sender = self._local_sender
        data = encode_checked(message, self._max_bytes)
        future: asyncio.Future[AnyMessage] = asyncio.get_running_loop().create_future()
        self._pending[message.id] = future
        try:
            await self._transmit(data)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(message.id, None)

    def decode(self, data: bytes) -> AnyMessage | MessageRefused:
        """The message, or (logged) why it is refused."""
        try:
            return decode(data, self._max_bytes)
        except MessageRefused as exc:
            log.warning("broker: refused a message from %s: %s", self.name, exc.message)
            return exc

    async def refuse(self, data: bytes, exc: MessageRefused, respond: Transmit | None) -> None:
        try:
            await (respond or self._transmit)(encode(refusal_for(data, exc, self._local_sender)))
        except BrokerError as error:
            log.warning("broker: could not send a refusal to %s: %s", self.name, error)

    async def receive(
        self, data: bytes, respond: Transmit | None = None, remember: Remember | None = None
    ) -> None:
        """Accept one encoded message; never raises for bad input. ``respond`` sends the
        handler's reply (default: back over this channel); ``remember`` records it."""
        message = self.decode(data)
        if isinstance(message, MessageRefused):
            await self.refuse(data, message, respond)
        else:
            self.accept(message, respond, remember)

    def accept(
        self, message: AnyMessage, respond: Transmit | None = None, remember: Remember | None = None
    ) -> None:
        """Route one decoded message: a reply resolves its request, anything else is queued."""
        if message.corr is not None:
            future = self._pending.pop(message.corr, None)
            if future is not None:
                if not future.done():
                    future.set_result(message)
                return
        self._inbox.put_nowait((message, respond or self._transmit, remember))

    async def _dispatch(self) -> None:
        while True:
            item = await self._inbox.get()
            if item is None:
                return
            await self._released.wait()
            message, respond, remember = item
            handler = self._handler()
            if handler is None:
                log.warning("broker: no handler for %s from %s", type(message).__name__, self.name)
                continue
            try:
                reply = await handler(message)
            except Exception:
                log.exception("broker: handler failed on %s from %s", message.id, self.name)
                continue
            if isinstance(reply, Deferred):
                task = asyncio.create_task(self._answer_later(message, reply, respond, remember))
                self._deferred.add(task)
                task.add_done_callback(self._deferred.discard)
            else:
                await self._answer(message, reply, respond, remember)

    async def _answer_later(
        self, message: AnyMessage, deferred: Deferred, respond: Transmit, remember: Remember | None
    ) -> None:
        try:
            reply = await deferred.reply
        except Exception:
            log.exception("broker: handler failed on %s from %s", message.id, self.name)
            return
        await self._answer(message, reply, respond, remember)

    async def _answer(
        self,
        message: AnyMessage,
        reply: AnyMessage | None,
        respond: Transmit,
        remember: Remember | None,
    ) -> None:
        if reply is None:
            return
        reply.corr = message.id
        if not reply.sender:
            reply.sender = self._local_sender
        try:
            data = encode_checked(reply, self._max_bytes)
            await respond(data)
        except BrokerError as exc:
            log.warning("broker: could not reply to %s: %s", self.name, exc)
            return
        if remember is not None:
            remember(message.id, data)
