"""The broker contract: bidirectional, per-worker ordered messages between one coordinator
endpoint and many worker links. Transports: ``memory.py`` (one process), ``websocket.py``
(built-in, served by the coordinator at ``/v1/broker``), ``nats.py``. All pass
``tests/contract/test_broker_contract.py``.

Semantics every transport keeps:
- messages from one sender to one receiver arrive in the order sent;
- a handler's returned message (if any) is sent back as the reply to a ``request``
  (its ``corr`` set to the request's ``id``); for a plain ``send`` it is sent back as a message;
- a malformed, oversized or unknown-version message is refused (a ``Refusal`` back where
  possible, a logged reason always) and never stops the receiver;
- the coordinator side learns of a worker's departure through ``on_disconnect`` (at once when the
  transport sees the connection drop; transports without connections (NATS) report a worker that
  left or stayed silent for their liveness window, and the lease monitor covers the rest);
- a slow handler for one worker does not block delivery to others;
- a coordinator handler may return ``Deferred``: the worker's next message is handled at once
  and the reply follows when ready (so that writes of many messages share one group commit).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from niyanta.broker.messages import AnyMessage


@dataclass(frozen=True, slots=True)
class Deferred:
    """A handler's reply that comes later: the transport hands the peer's next message to the
    handler at once and sends what ``reply`` gives (if anything) when it is ready, to where the
    request's reply belongs. The handler has already done, in arrival order, whatever must
    happen in order (queueing a write); only the wait for its outcome is left."""

    reply: Awaitable[AnyMessage | None]


Reply = AnyMessage | Deferred | None
CoordinatorHandler = Callable[[str, AnyMessage], Awaitable[Reply]]
"""(worker_id, message) -> optional reply."""
WorkerHandler = Callable[[AnyMessage], Awaitable[AnyMessage | None]]
DisconnectHandler = Callable[[str], Awaitable[None]]
ConnectHandler = Callable[[], Awaitable[None]]


class CoordinatorEndpoint(Protocol):
    """The coordinator's side: one per coordinator process."""

    def on_message(self, handler: CoordinatorHandler) -> None: ...

    def on_disconnect(self, handler: DisconnectHandler) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send(self, worker_id: str, message: AnyMessage) -> None:
        """Deliver to one worker; BrokerError if it is not reachable."""
        ...

    async def request(self, worker_id: str, message: AnyMessage, timeout: float) -> AnyMessage:  # noqa: ASYNC109
        """Send and wait for the worker handler's reply; BrokerError/TimeoutError otherwise."""
        ...

    async def broadcast(self, message: AnyMessage) -> None: ...

    def connected_workers(self) -> set[str]:
        """Workers with a live connection (transports without connections: workers heard from
        recently)."""
        ...


class WorkerLink(Protocol):
    """A worker's side: connects to the coordinator(s), reconnects with backoff and jitter."""

    def on_message(self, handler: WorkerHandler) -> None: ...

    def on_connect(self, handler: ConnectHandler) -> None:
        """Called after every (re)connection, before other messages flow: the worker sends its
        Hello here so that the coordinator knows it again."""
        ...

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def send(self, message: AnyMessage) -> None:
        """Deliver to the coordinator; BrokerError while disconnected."""
        ...

    async def request(self, message: AnyMessage, timeout: float) -> AnyMessage: ...  # noqa: ASYNC109

    @property
    def connected(self) -> bool: ...
