"""The built-in transport: workers dial the coordinator's HTTP server at ``/v1/broker``.

Each binary WebSocket frame carries one encoded message; a text frame is refused as malformed.
The worker names itself in the query string (``/v1/broker?worker=<id>``) so that the coordinator
knows whose connection drops even before a Hello; with a shared token configured, nothing but a
Hello carrying that token is accepted first (anything else: ``Refusal(code="unauthorized")`` and
the connection is closed).

A connection that drops is seen at once on both sides: a killed worker's socket is closed by its
kernel, which the coordinator's server reports as a disconnect immediately. Half-open links (a
host that vanished without a FIN) are caught by WebSocket pings (every 1 s, 5 s timeout): the
worker link pings itself; the coordinator's uvicorn must be run with ``uvicorn_ws_options()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import quote

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from niyanta.broker.backoff import Backoff
from niyanta.broker.base import (
    ConnectHandler,
    WorkerHandler,
)
from niyanta.broker.channel import Channel, Transmit, encode_checked
from niyanta.broker.endpoint_handlers import EndpointHandlers
from niyanta.broker.messages import DEFAULT_MAX_MESSAGE_BYTES, AnyMessage, Hello, Refusal, encode
from niyanta.errors import BrokerError, MessageRefused

log = logging.getLogger(__name__)

BROKER_PATH = "/v1/broker"
PING_INTERVAL_S = 1.0
PING_TIMEOUT_S = 5.0
"""A pong queues behind the data sent before its ping: a peer that is alive but seconds behind on
reading (an overloaded coordinator) must not be taken for a vanished one, which would turn
overload into a storm of disconnects and re-placements. Half-open links are rare and leases
(5 s by default) cover their replicas anyway; a crashed process is seen at once through its
closed socket, whatever these say."""
CLOSE_TIMEOUT_S = 1.0
UNAUTHORIZED_CLOSE_CODE = 1008
STABLE_CONNECTION_S = 1.0
"""Only a connection that lasted this long resets the backoff, so that a coordinator that accepts
and then closes at once (a refused token) is not redialled in a tight loop."""
FRAME_SLACK = 2
"""Frames up to this many times the message limit are read, so that an oversized message gets a
``too_large`` Refusal instead of the connection being torn down by the WebSocket layer."""


def uvicorn_ws_options(
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ping_interval: float = PING_INTERVAL_S,
    ping_timeout: float = PING_TIMEOUT_S,
) -> dict[str, float]:
    """Keyword arguments for ``uvicorn.Config`` serving the endpoint: pings (a half-open link is
    dropped within ``ping_interval + ping_timeout``) and a frame limit above the message limit."""
    return {
        "ws_ping_interval": ping_interval,
        "ws_ping_timeout": ping_timeout,
        "ws_max_size": max_message_bytes * FRAME_SLACK,
    }


class _ServerConnection:
    def __init__(self, endpoint: WebSocketEndpoint, websocket: WebSocket, worker_id: str) -> None:
        self.websocket = websocket
        self.worker_id = worker_id
        self.open = True
        self.channel = Channel(
            name=f"worker {worker_id}",
            local_sender=endpoint.coordinator_id,
            transmit=self.transmit,
            handler=lambda: endpoint.handler_for(worker_id),
            max_bytes=endpoint.max_message_bytes,
        )

    async def transmit(self, data: bytes) -> None:
        if not self.open:
            raise BrokerError(f"worker {self.worker_id} is not connected")
        try:
            await self.websocket.send_bytes(data)
        except (OSError, RuntimeError, WebSocketDisconnect) as exc:
            self.open = False
            raise BrokerError(f"worker {self.worker_id} is not connected: {exc!r}") from None

    async def close(self, code: int = 1000) -> None:
        if self.open:
            self.open = False
            try:
                await self.websocket.close(code)
            except (OSError, RuntimeError):
                log.debug("broker: closing %s: already gone", self.worker_id)


class WebSocketEndpoint(EndpointHandlers):
    """The coordinator's side: mount ``route()`` (or ``handle``) in the coordinator's app."""

    def __init__(
        self,
        coordinator_id: str = "coordinator",
        token: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__()
        self.coordinator_id = coordinator_id
        self.token = token
        self.max_message_bytes = max_message_bytes
        self._connections: dict[str, _ServerConnection] = {}
        self._started = False

    def route(self, path: str = BROKER_PATH) -> WebSocketRoute:
        return WebSocketRoute(path, self.handle)

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        """Close every connection (links reconnect once started again). Nothing is reported
        through on_disconnect: the workers did not leave, this coordinator did."""
        self._started = False
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            await connection.close(1001)

    async def handle(self, websocket: WebSocket) -> None:
        """Serve one worker connection until it drops."""
        worker_id = websocket.query_params.get("worker", "")
        if not worker_id or not self._started:
            await websocket.close(1013 if worker_id else UNAUTHORIZED_CLOSE_CODE)
            return
        await websocket.accept()
        connection = _ServerConnection(self, websocket, worker_id)
        connection.channel.start()
        registered = self.token is None
        if registered:
            await self._register(connection)
        try:
            while connection.open:
                frame = await websocket.receive()
                if frame["type"] == "websocket.disconnect":
                    break
                data: bytes | None = frame.get("bytes")
                if data is None:
                    await connection.channel.refuse(
                        b"", MessageRefused("malformed: text frame"), None
                    )
                elif registered:
                    await connection.channel.receive(data)
                else:
                    registered = await self._authenticate(connection, data)
        except (OSError, RuntimeError, WebSocketDisconnect) as exc:
            log.debug("broker: connection of %s ended: %r", worker_id, exc)
        finally:
            connection.open = False
            connection.channel.finish()
            if registered:
                await self._unregister(connection)

    async def _authenticate(self, connection: _ServerConnection, data: bytes) -> bool:
        message = connection.channel.decode(data)
        if isinstance(message, MessageRefused):
            await connection.channel.refuse(data, message, None)
            return False
        if isinstance(message, Hello) and message.token == self.token:
            await self._register(connection)
            connection.channel.accept(message)
            return True
        log.warning("broker: refused worker %s: bad or missing token", connection.worker_id)
        refusal = Refusal(
            code="unauthorized",
            reason="a Hello with the worker token is required",
            corr=message.id,
            sender=self.coordinator_id,
        )
        try:
            await connection.transmit(encode(refusal))
        except BrokerError:
            return False
        await connection.close(UNAUTHORIZED_CLOSE_CODE)
        return False

    async def _register(self, connection: _ServerConnection) -> None:
        previous = self._connections.get(connection.worker_id)
        self._connections[connection.worker_id] = connection
        if previous is not None:
            # The worker reconnected before its old connection was noticed gone.
            await previous.close(1000)

    async def _unregister(self, connection: _ServerConnection) -> None:
        if self._connections.get(connection.worker_id) is not connection:
            return
        del self._connections[connection.worker_id]
        if self._started:
            await self.report_disconnect(connection.worker_id)

    def _live(self, worker_id: str) -> _ServerConnection:
        connection = self._connections.get(worker_id)
        if connection is None or not connection.open:
            raise BrokerError(f"worker {worker_id} is not connected")
        return connection

    async def send(self, worker_id: str, message: AnyMessage) -> None:
        await self._live(worker_id).channel.send(message)

    async def request(self, worker_id: str, message: AnyMessage, timeout: float) -> AnyMessage:  # noqa: ASYNC109
        return await self._live(worker_id).channel.request(message, timeout)

    async def broadcast(self, message: AnyMessage) -> None:
        """Concurrently, so that a worker that reads slowly delays nobody else's copy."""
        encode_checked(message, self.max_message_bytes)  # too large: refused once, to the caller
        connections = list(self._connections.values())
        results = await asyncio.gather(
            *(connection.channel.send(message) for connection in connections),
            return_exceptions=True,
        )
        for connection, result in zip(connections, results, strict=True):
            if isinstance(result, BrokerError):
                log.warning("broker: broadcast to %s failed: %s", connection.worker_id, result)
            elif isinstance(result, BaseException):
                raise result

    def connected_workers(self) -> set[str]:
        return {worker_id for worker_id, conn in self._connections.items() if conn.open}


class WebSocketLink:
    """A worker's side: dials the coordinator URLs in turn (failover), reconnects with
    exponential backoff and jitter, and runs on_connect after every connection."""

    def __init__(
        self,
        urls: list[str],
        worker_id: str,
        token: str | None = None,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        ping_interval: float = PING_INTERVAL_S,
        ping_timeout: float = PING_TIMEOUT_S,
        open_timeout: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        if not urls:
            raise ValueError("at least one coordinator URL is required")
        self.urls = list(urls)
        self.worker_id = worker_id
        self.token = token
        self.max_message_bytes = max_message_bytes
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._open_timeout = open_timeout
        # At most 1 s between rounds: after a leader failover the workers must re-attach to
        # the new leader well within the lease TTL (5 s), or their replicas fence themselves.
        self._backoff = backoff or Backoff(initial=0.05, maximum=1.0)
        self._handler: WorkerHandler | None = None
        self._connect_handler: ConnectHandler | None = None
        self._ws: ClientConnection | None = None
        self._channel: Channel | None = None
        self._ready = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None

    def on_message(self, handler: WorkerHandler) -> None:
        self._handler = handler

    def on_connect(self, handler: ConnectHandler) -> None:
        self._connect_handler = handler

    def _dial_url(self, url: str) -> str:
        base = url.rstrip("/")
        if not base.endswith(BROKER_PATH):
            base += BROKER_PATH
        return f"{base}?worker={quote(self.worker_id, safe='')}"

    async def connect(self) -> None:
        """Returns once connected and on_connect has run; keeps reconnecting until close()."""
        if self._supervisor is None:
            self._supervisor = asyncio.create_task(
                self._supervise(), name=f"broker:ws-link:{self.worker_id}"
            )
        await self._ready.wait()

    async def _supervise(self) -> None:
        """Dial the URLs in turn, starting from the one that worked last, and back off only
        after a whole round failed (or a connection ended): a follower refusing the dial is
        one step of the search for the leader, not a reason to wait longer."""
        first = 0
        while True:
            for offset in range(len(self.urls)):
                index = (first + offset) % len(self.urls)
                ws = await self._dial(self.urls[index])
                if ws is None:
                    continue
                connected_at = time.monotonic()
                if await self._serve(ws):
                    first = index  # reconnect to the coordinator that worked first
                    if time.monotonic() - connected_at > STABLE_CONNECTION_S:
                        self._backoff.reset()
                    break
            await asyncio.sleep(self._backoff.next_delay())

    async def _dial(self, url: str) -> ClientConnection | None:
        try:
            return await ws_connect(
                self._dial_url(url),
                max_size=self.max_message_bytes * FRAME_SLACK,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_timeout,
                # Bounds the wait for the peer's close frame, also after a ping timeout.
                close_timeout=CLOSE_TIMEOUT_S,
                open_timeout=self._open_timeout,
                compression=None,
                proxy=None,
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            log.info("broker: cannot reach %s: %r", url, exc)
            return None

    async def _serve(self, ws: ClientConnection) -> bool:
        """Run one connection to its end; whether on_connect succeeded on it."""
        channel = Channel(
            name="coordinator",
            local_sender=self.worker_id,
            transmit=self._transmit_on(ws),
            handler=lambda: self._handler,
            max_bytes=self.max_message_bytes,
        )
        channel.start(hold=True)
        self._ws, self._channel = ws, channel
        reader = asyncio.create_task(self._read(ws, channel), name="broker:ws-link:read")
        succeeded = False
        try:
            if self._connect_handler is not None:
                await self._connect_handler()
            succeeded = True
        except Exception:
            log.exception("broker: on_connect failed for %s", self.worker_id)
            await ws.close()
        if succeeded:
            channel.release()
            self._ready.set()
        try:
            await reader
        finally:
            self._ready.clear()
            self._ws = self._channel = None
            channel.finish()
        return succeeded

    @staticmethod
    def _transmit_on(ws: ClientConnection) -> Transmit:
        async def transmit(data: bytes) -> None:
            try:
                await ws.send(data)
            except ConnectionClosed as exc:
                raise BrokerError(f"not connected to the coordinator: {exc}") from None

        return transmit

    @staticmethod
    async def _read(ws: ClientConnection, channel: Channel) -> None:
        try:
            async for data in ws:
                if isinstance(data, str):
                    await channel.refuse(b"", MessageRefused("malformed: text frame"), None)
                else:
                    await channel.receive(data)
        except ConnectionClosed as exc:
            log.info("broker: connection to the coordinator lost: %s", exc)

    async def close(self) -> None:
        ws, channel = self._ws, self._channel
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        self._ws = self._channel = None
        self._ready.clear()
        if ws is not None:
            await ws.close()
        if channel is not None:
            await channel.close()

    def _live(self) -> Channel:
        channel = self._channel
        if channel is None:
            raise BrokerError("not connected to the coordinator")
        return channel

    def _with_token(self, message: AnyMessage) -> AnyMessage:
        if isinstance(message, Hello) and message.token is None:
            message.token = self.token
        return message

    async def send(self, message: AnyMessage) -> None:
        await self._live().send(self._with_token(message))

    async def request(self, message: AnyMessage, timeout: float) -> AnyMessage:  # noqa: ASYNC109
        return await self._live().request(self._with_token(message), timeout)

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._channel is not None
