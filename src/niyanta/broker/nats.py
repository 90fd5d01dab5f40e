"""NATS transport (nats-py): for deployments that already run NATS, and for scale.

Subjects, for a cluster name ``<c>`` (one NATS account can host many clusters):

- ``niyanta.<c>.coord``: every worker -> the coordinator (the worker id is the ``sender``);
- ``niyanta.<c>.worker.<id>``: the coordinator -> one worker;
- ``niyanta.<c>.broadcast``: the coordinator -> every worker (one publish);
- ``niyanta.<c>.presence.<id>``: a worker's keep-alive (empty payload, every ``presence_interval``);
- ``niyanta.<c>.leave.<id>``: a worker closing its link on purpose.

A ``request`` is a NATS request (the answer comes back on the requester's inbox). It is retried
with the same message id every ``retry_interval`` until its timeout, so a request survives a NATS
restart; receivers de-duplicate by message id and answer a repeat with the reply they already sent.
Plain sends made while the client reconnects are buffered by nats-py and flushed on reconnection.

NATS has no connection per worker, so liveness is silence-based: ``connected_workers()`` are the
workers heard from (any message or presence) within ``liveness_window``; a worker that falls
silent that long, or that publishes ``leave``, is reported through ``on_disconnect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import ConnectionClosedError, NoRespondersError, OutboundBufferLimitError
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError

from niyanta.broker.base import (
    ConnectHandler,
    WorkerHandler,
)
from niyanta.broker.channel import Channel, Transmit, encode_checked, refusal_for
from niyanta.broker.dedup import PENDING, SeenIds
from niyanta.broker.endpoint_handlers import EndpointHandlers
from niyanta.broker.messages import (
    DEFAULT_MAX_MESSAGE_BYTES,
    AnyMessage,
    Hello,
    Refusal,
    decode,
    encode,
)
from niyanta.errors import BrokerError, MessageRefused

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")
RETRY_INTERVAL_S = 0.5
PRESENCE_INTERVAL_S = 1.0
LIVENESS_WINDOW_S = 5.0


def subject_token(value: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r} must be letters, digits, '-' or '_' (a NATS token)")
    return value


class Subjects:
    def __init__(self, cluster: str) -> None:
        prefix = f"niyanta.{subject_token(cluster, 'cluster name')}"
        self.coord = f"{prefix}.coord"
        self.broadcast = f"{prefix}.broadcast"
        self.presence_all = f"{prefix}.presence.*"
        self.leave_all = f"{prefix}.leave.*"
        self._prefix = prefix

    def worker(self, worker_id: str) -> str:
        return f"{self._prefix}.worker.{subject_token(worker_id, 'worker id')}"

    def presence(self, worker_id: str) -> str:
        return f"{self._prefix}.presence.{worker_id}"

    def leave(self, worker_id: str) -> str:
        return f"{self._prefix}.leave.{worker_id}"


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}:{parts.port}"))


async def _connect(url: str, name: str, **callbacks: Any) -> Client:
    """Connect, retrying until the server answers (nats-py retries forever, then reconnects
    forever); a server that refuses the credentials fails the first connection at once."""
    refused: asyncio.Future[Exception] = asyncio.get_running_loop().create_future()

    async def on_error(exc: Exception) -> None:
        if "authorization violation" in str(exc).lower() and not refused.done():
            refused.set_result(exc)
        # Every failed (re)connection attempt lands here; the retry loop handles it.
        log.info("broker: NATS at %s: %r", _redacted(url), exc)

    connecting = asyncio.create_task(
        nats.connect(
            url,
            name=name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.25,
            connect_timeout=2,
            ping_interval=5,
            max_outstanding_pings=2,
            error_cb=on_error,
            **callbacks,
        )
    )
    try:
        waiters: set[asyncio.Future[Any]] = {connecting, refused}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
    if connecting.done() and not connecting.cancelled():
        client: Client = connecting.result()
        return client
    raise BrokerError(f"NATS at {_redacted(url)} refused the credentials: {refused.result()}")


async def _nats_request(
    client: Client, subject: str, data: bytes, within: float, retry_interval: float
) -> bytes:
    """A NATS request retried with the same payload (same message id) for ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no reply on {subject} within {within} s")
        try:
            reply = await client.request(subject, data, timeout=min(retry_interval, remaining))
            return bytes(reply.data)
        except NatsTimeoutError:
            continue
        except NoRespondersError:
            await asyncio.sleep(min(retry_interval, max(0.0, deadline - time.monotonic())))
        except ConnectionClosedError as exc:
            raise BrokerError(f"NATS connection closed: {exc}") from None


async def _publish(client: Client, subject: str, data: bytes) -> None:
    try:
        await client.publish(subject, data)
    except (ConnectionClosedError, OutboundBufferLimitError) as exc:
        raise BrokerError(f"cannot publish to {subject}: {exc!r}") from None


def _responder(client: Client, msg: Msg, fallback: Transmit) -> Transmit:
    """Where a handler's reply goes: the requester's inbox, else the peer's own subject."""
    if not msg.reply:
        return fallback
    inbox = msg.reply

    async def respond(data: bytes) -> None:
        await _publish(client, inbox, data)

    return respond


class NatsEndpoint(EndpointHandlers):
    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        cluster: str = "default",
        coordinator_id: str = "coordinator",
        token: str | None = None,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        liveness_window: float = LIVENESS_WINDOW_S,
        retry_interval: float = RETRY_INTERVAL_S,
    ) -> None:
        super().__init__()
        self.url = url
        self.subjects = Subjects(cluster)
        self.coordinator_id = coordinator_id
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.liveness_window = liveness_window
        self.retry_interval = retry_interval
        self._client: Client | None = None
        self._last_seen: dict[str, float] = {}
        self._cut_off = False
        """From losing NATS until its reconnection callback has given every worker a fresh
        window: the client reports itself connected before that callback runs."""
        self._channels: dict[str, Channel] = {}
        self._authorized: set[str] = set()
        self._seen = SeenIds()
        self._monitor: asyncio.Task[None] | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            raise BrokerError("the NATS endpoint is not started")
        return self._client

    async def start(self) -> None:
        client = await _connect(
            self.url,
            self.coordinator_id,
            disconnected_cb=self._on_nats_lost,
            reconnected_cb=self._on_nats_back,
        )
        self._client = client
        await client.subscribe(self.subjects.coord, cb=self._on_coord)
        await client.subscribe(self.subjects.presence_all, cb=self._on_presence)
        await client.subscribe(self.subjects.leave_all, cb=self._on_leave)
        await client.flush()
        self._cut_off = False  # a stop while cut off must not mute the next start's watch
        self._monitor = asyncio.create_task(self._watch_silence(), name="broker:nats:liveness")

    async def stop(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
            await asyncio.gather(self._monitor, return_exceptions=True)
            self._monitor = None
        # A message arriving while a channel closes may open another: iterate over a copy.
        for channel in list(self._channels.values()):
            await channel.close()
        self._channels.clear()
        self._last_seen.clear()
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _channel(self, worker_id: str) -> Channel:
        channel = self._channels.get(worker_id)
        if channel is None:
            subject = self.subjects.worker(worker_id)

            async def transmit(data: bytes) -> None:
                await _publish(self.client, subject, data)

            channel = Channel(
                name=f"worker {worker_id}",
                local_sender=self.coordinator_id,
                transmit=transmit,
                handler=lambda: self.handler_for(worker_id),
                max_bytes=self.max_message_bytes,
            )
            channel.start()
            self._channels[worker_id] = channel
        return channel

    async def _on_coord(self, msg: Msg) -> None:
        data = bytes(msg.data)
        try:
            message = decode(data, self.max_message_bytes)
        except MessageRefused as exc:
            log.warning("broker: refused a message on %s: %s", msg.subject, exc.message)
            if msg.reply:
                await self._respond(msg.reply, encode(refusal_for(data, exc, self.coordinator_id)))
            return
        worker_id = message.sender
        if not _TOKEN.match(worker_id):
            log.warning("broker: refused a message with sender %r", worker_id)
            if msg.reply:
                refusal = Refusal(
                    code="malformed",
                    reason="sender must be the worker id",
                    corr=message.id,
                    sender=self.coordinator_id,
                )
                await self._respond(msg.reply, encode(refusal))
            return
        if self.token is not None and worker_id not in self._authorized:
            if not (isinstance(message, Hello) and message.token == self.token):
                await self._refuse_unauthorized(msg, message, worker_id)
                return
            self._authorized.add(worker_id)
        # Only requests are retried (and so repeated); plain sends need no memory of them.
        if msg.reply and not self._seen.first_time(message.id):
            cached = self._seen.reply_to(message.id)
            if cached != PENDING:
                await self._respond(msg.reply, cached)
            return
        self._last_seen[worker_id] = time.monotonic()
        channel = self._channel(worker_id)
        channel.accept(message, _responder(self.client, msg, channel.transmit), self._seen.remember)

    async def _refuse_unauthorized(self, msg: Msg, message: AnyMessage, worker_id: str) -> None:
        log.warning("broker: refused worker %s: bad or missing token", worker_id)
        refusal = Refusal(
            code="unauthorized",
            reason="a Hello with the worker token is required",
            corr=message.id,
            sender=self.coordinator_id,
        )
        await self._respond(msg.reply or self.subjects.worker(worker_id), encode(refusal))

    async def _respond(self, subject: str, data: bytes) -> None:
        try:
            await _publish(self.client, subject, data)
        except BrokerError as exc:
            log.warning("broker: %s", exc)

    async def _on_nats_lost(self) -> None:
        if self._client is None:
            return  # stop() closed it
        self._cut_off = True
        log.warning("broker: coordinator lost NATS; reconnecting")

    async def _on_nats_back(self) -> None:
        # Nobody could be heard while we were cut off: give every worker a fresh window.
        log.info("broker: coordinator reconnected to NATS")
        now = time.monotonic()
        for worker_id in self._last_seen:
            self._last_seen[worker_id] = now
        self._cut_off = False

    async def _on_presence(self, msg: Msg) -> None:
        worker_id = msg.subject.rsplit(".", 1)[-1]
        if self.token is None or worker_id in self._authorized:
            self._last_seen[worker_id] = time.monotonic()

    async def _on_leave(self, msg: Msg) -> None:
        worker_id = msg.subject.rsplit(".", 1)[-1]
        # A worker that left says hello (with the token) when it comes back; a silent one that
        # speaks again may not, so it keeps its admission.
        self._authorized.discard(worker_id)
        await self._forget(worker_id)

    async def _watch_silence(self) -> None:
        while True:
            await asyncio.sleep(self.liveness_window / 5)
            if self._cut_off or not self.client.is_connected:
                continue
            cutoff = time.monotonic() - self.liveness_window
            for worker_id in [w for w, seen in self._last_seen.items() if seen < cutoff]:
                await self._forget(worker_id)

    async def _forget(self, worker_id: str) -> None:
        if self._last_seen.pop(worker_id, None) is None:
            return
        channel = self._channels.pop(worker_id, None)
        if channel is not None:
            channel.finish()
        await self.report_disconnect(worker_id)

    def _live(self, worker_id: str) -> Channel:
        if worker_id not in self._last_seen:
            raise BrokerError(f"worker {worker_id} has not been heard from recently")
        return self._channel(worker_id)

    async def send(self, worker_id: str, message: AnyMessage) -> None:
        await self._live(worker_id).send(message)

    async def request(self, worker_id: str, message: AnyMessage, timeout: float) -> AnyMessage:  # noqa: ASYNC109
        self._live(worker_id)
        if not message.sender:
            message.sender = self.coordinator_id
        data = encode_checked(message, self.max_message_bytes)
        reply = await _nats_request(
            self.client, self.subjects.worker(worker_id), data, timeout, self.retry_interval
        )
        return decode(reply, self.max_message_bytes)

    async def broadcast(self, message: AnyMessage) -> None:
        if not message.sender:
            message.sender = self.coordinator_id
        await _publish(
            self.client, self.subjects.broadcast, encode_checked(message, self.max_message_bytes)
        )

    def connected_workers(self) -> set[str]:
        cutoff = time.monotonic() - self.liveness_window
        return {worker_id for worker_id, seen in self._last_seen.items() if seen >= cutoff}


class NatsLink:
    def __init__(
        self,
        url: str,
        worker_id: str,
        cluster: str = "default",
        token: str | None = None,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        presence_interval: float = PRESENCE_INTERVAL_S,
        retry_interval: float = RETRY_INTERVAL_S,
    ) -> None:
        self.url = url
        self.worker_id = subject_token(worker_id, "worker id")
        self.subjects = Subjects(cluster)
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.presence_interval = presence_interval
        self.retry_interval = retry_interval
        self._handler: WorkerHandler | None = None
        self._connect_handler: ConnectHandler | None = None
        self._client: Client | None = None
        self._channel = Channel(
            name="coordinator",
            local_sender=self.worker_id,
            transmit=self._to_coordinator,
            handler=lambda: self._handler,
            max_bytes=max_message_bytes,
        )
        self._seen = SeenIds()
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def on_message(self, handler: WorkerHandler) -> None:
        self._handler = handler

    def on_connect(self, handler: ConnectHandler) -> None:
        self._connect_handler = handler

    @property
    def client(self) -> Client:
        if self._client is None:
            raise BrokerError("not connected to NATS")
        return self._client

    async def _to_coordinator(self, data: bytes) -> None:
        await _publish(self.client, self.subjects.coord, data)

    async def connect(self) -> None:
        """Returns once connected and on_connect has run; nats-py reconnects (forever) and
        on_connect runs again after every reconnection, before the messages that arrived since
        the connection was lost are handed to the worker."""
        if self._client is not None:
            await self._ready.wait()
            return
        self._client = await _connect(
            self.url,
            self.worker_id,
            reconnected_cb=self._on_reconnected,
            disconnected_cb=self._on_disconnected,
        )
        await self._client.subscribe(self.subjects.worker(self.worker_id), cb=self._on_message)
        await self._client.subscribe(self.subjects.broadcast, cb=self._on_message)
        await self._client.flush()
        self._channel.start(hold=True)
        self._spawn(self._announce_presence())
        await self._run_connect_handler()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_connect_handler(self) -> None:
        try:
            if self._connect_handler is not None:
                await self._connect_handler()
        except Exception:
            log.exception("broker: on_connect failed for %s", self.worker_id)
        self._channel.release()
        self._ready.set()

    async def _on_disconnected(self) -> None:
        self._ready.clear()
        self._channel.hold()
        log.info("broker: %s lost NATS; reconnecting", self.worker_id)

    async def _on_reconnected(self) -> None:
        log.info("broker: %s reconnected to NATS", self.worker_id)
        self._spawn(self._run_connect_handler())

    async def _announce_presence(self) -> None:
        subject = self.subjects.presence(self.worker_id)
        while True:
            with contextlib.suppress(BrokerError):
                await _publish(self.client, subject, b"")
            await asyncio.sleep(self.presence_interval)

    async def _on_message(self, msg: Msg) -> None:
        data = bytes(msg.data)
        message = self._channel.decode(data)
        if isinstance(message, MessageRefused):
            if msg.reply:
                respond = _responder(self.client, msg, self._to_coordinator)
                await self._channel.refuse(data, message, respond)
            return
        # Only requests are retried (and so repeated); plain sends need no memory of them.
        if msg.reply and not self._seen.first_time(message.id):
            cached = self._seen.reply_to(message.id)
            if cached != PENDING:
                with contextlib.suppress(BrokerError):
                    await _publish(self.client, msg.reply, cached)
            return
        self._channel.accept(
            message, _responder(self.client, msg, self._to_coordinator), self._seen.remember
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._channel.close()
        client, self._client = self._client, None
        self._ready.clear()
        if client is not None and not client.is_closed:
            with contextlib.suppress(NatsError, OSError):
                await client.publish(self.subjects.leave(self.worker_id), b"")
                await client.flush(timeout=1)
            await client.close()

    def _with_token(self, message: AnyMessage) -> AnyMessage:
        if isinstance(message, Hello) and message.token is None:
            message.token = self.token
        return message

    async def send(self, message: AnyMessage) -> None:
        await self._channel.send(self._with_token(message))

    async def request(self, message: AnyMessage, timeout: float) -> AnyMessage:  # noqa: ASYNC109
        message = self._with_token(message)
        if not message.sender:
            message.sender = self.worker_id
        data = encode_checked(message, self.max_message_bytes)
        reply = await _nats_request(
            self.client, self.subjects.coord, data, timeout, self.retry_interval
        )
        return decode(reply, self.max_message_bytes)

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected
