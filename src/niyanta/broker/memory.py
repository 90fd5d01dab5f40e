"""In-process transport for tests and ``niyanta dev``: one ``MemoryHub`` joins one coordinator
endpoint and any number of worker links.

Every message is still encoded and decoded (so the codec, size limits and refusals behave exactly
as on the wire). Each worker has one ordered queue per direction (the two ``Channel`` inboxes), so
a slow handler for one worker holds up no other. Closing a link, or ``hub.drop()`` (the in-process
stand-in for a dropped connection), reports the disconnect to the coordinator at once; a dropped
link reconnects by itself and runs on_connect again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from niyanta.broker.backoff import Backoff
from niyanta.broker.base import (
    ConnectHandler,
    Reply,
    WorkerHandler,
)
from niyanta.broker.channel import Channel, Handler, encode_checked
from niyanta.broker.endpoint_handlers import EndpointHandlers
from niyanta.broker.messages import DEFAULT_MAX_MESSAGE_BYTES, AnyMessage, Hello, Refusal
from niyanta.errors import BrokerError

log = logging.getLogger(__name__)

STABLE_CONNECTION_S = 1.0
"""Only a connection that lasted this long resets the reconnect backoff (a refused token cuts the
connection at once; the link must not retry in a tight loop)."""


class _Connection:
    """One live worker <-> coordinator pairing: a channel at each end, wired to the other."""

    def __init__(self, worker_id: str, endpoint: MemoryEndpoint, link: MemoryWorkerLink) -> None:
        self.worker_id = worker_id
        self.alive = True
        self.authorized = endpoint.token is None
        self.lost = asyncio.Event()
        self.coordinator_side = Channel(
            name=f"worker {worker_id}",
            local_sender=endpoint.coordinator_id,
            transmit=self._to_worker,
            handler=lambda: endpoint.admitting_handler_for(self),
            max_bytes=endpoint.max_message_bytes,
        )
        self.worker_side = Channel(
            name="coordinator",
            local_sender=worker_id,
            transmit=self._to_coordinator,
            handler=lambda: link.handler,
            max_bytes=link.max_message_bytes,
        )

    async def _to_worker(self, data: bytes) -> None:
        if not self.alive:
            raise BrokerError(f"worker {self.worker_id} is not connected")
        await self.worker_side.receive(data)

    async def _to_coordinator(self, data: bytes) -> None:
        if not self.alive:
            raise BrokerError("not connected to the coordinator")
        await self.coordinator_side.receive(data)

    def cut(self) -> None:
        self.alive = False
        self.coordinator_side.finish()
        self.worker_side.finish()
        self.lost.set()


class MemoryEndpoint(EndpointHandlers):
    def __init__(self, coordinator_id: str, max_message_bytes: int, token: str | None) -> None:
        super().__init__()
        self.coordinator_id = coordinator_id
        self.max_message_bytes = max_message_bytes
        self.token = token
        self._connections: dict[str, _Connection] = {}
        self._started = False

    def admitting_handler_for(self, connection: _Connection) -> Handler | None:
        """The worker's handler, admitting the connection on its first (Hello) message."""
        handler = self.handler_for(connection.worker_id)
        if handler is None:
            return None

        async def handle(message: AnyMessage) -> Reply:
            if not connection.authorized:
                refusal = self._admit(connection, message)
                if refusal is not None:
                    return refusal
            return await handler(message)

        return handle

    def _admit(self, connection: _Connection, message: AnyMessage) -> Refusal | None:
        """Admit a connection on a Hello carrying the token; otherwise refuse and cut it."""
        if isinstance(message, Hello) and message.token == self.token:
            connection.authorized = True
            self._register(connection)
            return None
        log.warning("broker: refused worker %s: bad or missing token", connection.worker_id)
        # Cut once the refusal (sent as soon as the handler returns) has been delivered.
        asyncio.get_running_loop().call_soon(connection.cut)
        return Refusal(code="unauthorized", reason="a Hello with the worker token is required")

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        """Cut every link (they reconnect once started again). Nothing is reported through
        on_disconnect: the workers did not leave, this coordinator did."""
        self._started = False
        for connection in self._connections.values():
            connection.cut()
        self._connections.clear()

    def attach(self, link: MemoryWorkerLink) -> _Connection:
        if not self._started:
            raise BrokerError("the coordinator endpoint is not started")
        connection = _Connection(link.worker_id, self, link)
        connection.coordinator_side.start()
        connection.worker_side.start(hold=True)
        if connection.authorized:
            self._register(connection)
        return connection

    def _register(self, connection: _Connection) -> None:
        previous = self._connections.get(connection.worker_id)
        if previous is not None:
            # A second link with the same id replaces the first, as a reconnect would.
            previous.cut()
        self._connections[connection.worker_id] = connection

    async def detach(self, connection: _Connection) -> None:
        if not connection.alive:
            return
        connection.cut()
        if self._connections.get(connection.worker_id) is not connection:
            return
        del self._connections[connection.worker_id]
        await self.report_disconnect(connection.worker_id)

    def connection(self, worker_id: str) -> _Connection | None:
        return self._connections.get(worker_id)

    def _live(self, worker_id: str) -> _Connection:
        connection = self._connections.get(worker_id)
        if connection is None:
            raise BrokerError(f"worker {worker_id} is not connected")
        return connection

    async def send(self, worker_id: str, message: AnyMessage) -> None:
        await self._live(worker_id).coordinator_side.send(message)

    async def request(self, worker_id: str, message: AnyMessage, timeout: float) -> AnyMessage:  # noqa: ASYNC109
        return await self._live(worker_id).coordinator_side.request(message, timeout)

    async def broadcast(self, message: AnyMessage) -> None:
        encode_checked(message, self.max_message_bytes)  # too large: refused once, to the caller
        for connection in list(self._connections.values()):
            try:
                await connection.coordinator_side.send(message)
            except BrokerError as exc:
                log.warning("broker: broadcast to %s failed: %s", connection.worker_id, exc)

    def connected_workers(self) -> set[str]:
        return set(self._connections)


class MemoryWorkerLink:
    def __init__(
        self, hub: MemoryHub, worker_id: str, max_message_bytes: int, token: str | None
    ) -> None:
        self.worker_id = worker_id
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.handler: WorkerHandler | None = None
        self._hub = hub
        self._connect_handler: ConnectHandler | None = None
        self._connection: _Connection | None = None
        self._ready = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._backoff = Backoff(initial=0.01, maximum=1.0)

    def on_message(self, handler: WorkerHandler) -> None:
        self.handler = handler

    def on_connect(self, handler: ConnectHandler) -> None:
        self._connect_handler = handler

    async def connect(self) -> None:
        """Returns once connected and on_connect has run; reconnects by itself afterwards."""
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(
                self._supervise(), name=f"broker:link:{self.worker_id}"
            )
        await self._ready.wait()

    async def _supervise(self) -> None:
        while True:
            try:
                connection = self._hub.endpoint.attach(self)
            except BrokerError:
                await asyncio.sleep(self._backoff.next_delay())
                continue
            self._connection = connection
            try:
                if self._connect_handler is not None:
                    await self._connect_handler()
            except Exception:
                log.exception("broker: on_connect failed for %s", self.worker_id)
                await self._hub.endpoint.detach(connection)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            connection.worker_side.release()
            self._ready.set()
            connected_at = time.monotonic()
            await connection.lost.wait()
            if time.monotonic() - connected_at > STABLE_CONNECTION_S:
                self._backoff.reset()
            self._ready.clear()
            await asyncio.sleep(self._backoff.next_delay())

    async def close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        connection, self._connection = self._connection, None
        self._ready.clear()
        if connection is not None:
            await self._hub.endpoint.detach(connection)
            await connection.worker_side.close()

    def _live(self) -> _Connection:
        connection = self._connection
        if connection is None or not connection.alive:
            raise BrokerError("not connected to the coordinator")
        return connection

    def _with_token(self, message: AnyMessage) -> AnyMessage:
        if isinstance(message, Hello) and message.token is None:
            message.token = self.token
        return message

    async def send(self, message: AnyMessage) -> None:
        await self._live().worker_side.send(self._with_token(message))

    async def request(self, message: AnyMessage, timeout: float) -> AnyMessage:  # noqa: ASYNC109
        return await self._live().worker_side.request(self._with_token(message), timeout)

    @property
    def connected(self) -> bool:
        return self._connection is not None and self._connection.alive


class MemoryHub:
    """Joins one coordinator endpoint and its worker links inside one process."""

    def __init__(
        self,
        coordinator_id: str = "coordinator",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        token: str | None = None,
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.endpoint = MemoryEndpoint(coordinator_id, max_message_bytes, token)

    def coordinator_endpoint(self) -> MemoryEndpoint:
        return self.endpoint

    def worker_link(self, worker_id: str, token: str | None = None) -> MemoryWorkerLink:
        return MemoryWorkerLink(self, worker_id, self.max_message_bytes, token)

    async def drop(self, worker_id: str) -> None:
        """Cut a worker's connection as a network failure would: the coordinator sees the
        disconnect at once and the link reconnects."""
        connection = self.endpoint.connection(worker_id)
        if connection is not None:
            await self.endpoint.detach(connection)
