"""Choose a transport from a spec string (the ``--broker`` option and ``NIYANTA_BROKER``):

- ``memory``: in-process, through the ``MemoryHub`` passed as ``hub`` (a worker token, if any, is
  the hub's: ``MemoryHub(token=...)``);
- ``builtin``: the coordinator's WebSocket endpoint; workers dial ``urls`` (``http(s)://`` or
  ``ws(s)://`` coordinator addresses, tried in turn). A spec that is itself a ``ws://`` or
  ``wss://`` URL, or several joined by commas, names those addresses directly;
- ``nats://host:port`` (``nats://user:password@host:port`` to authenticate): NATS, with subjects
  under ``niyanta.<cluster>``.
"""

from __future__ import annotations

from niyanta.broker.base import CoordinatorEndpoint, WorkerLink
from niyanta.broker.memory import MemoryHub
from niyanta.broker.messages import DEFAULT_MAX_MESSAGE_BYTES
from niyanta.broker.nats import NatsEndpoint, NatsLink
from niyanta.broker.websocket import WebSocketEndpoint, WebSocketLink


def _is_nats(spec: str) -> bool:
    return spec.startswith(("nats://", "tls://"))


def _ws_url(address: str) -> str:
    for plain, secure in (("http://", "ws://"), ("https://", "wss://")):
        if address.startswith(plain):
            return secure + address.removeprefix(plain)
    return address


def open_coordinator_endpoint(
    spec: str,
    *,
    hub: MemoryHub | None = None,
    coordinator_id: str = "coordinator",
    token: str | None = None,
    cluster: str = "default",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> CoordinatorEndpoint:
    """The endpoint for ``spec``; for ``builtin`` mount ``endpoint.route()`` in the HTTP app."""
    if spec == "memory":
        if hub is None:
            raise ValueError("the memory broker needs the MemoryHub shared with the workers")
        return hub.coordinator_endpoint()
    if spec == "builtin" or spec.startswith(("ws://", "wss://")):
        return WebSocketEndpoint(coordinator_id, token, max_message_bytes)
    if _is_nats(spec):
        return NatsEndpoint(
            spec, cluster, coordinator_id, token, max_message_bytes=max_message_bytes
        )
    raise ValueError(f"unknown broker {spec!r}: use memory, builtin or nats://host:port")


def open_worker_link(
    spec: str,
    worker_id: str,
    *,
    hub: MemoryHub | None = None,
    urls: list[str] | None = None,
    token: str | None = None,
    cluster: str = "default",
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> WorkerLink:
    if spec == "memory":
        if hub is None:
            raise ValueError("the memory broker needs the MemoryHub shared with the coordinator")
        return hub.worker_link(worker_id, token)
    if spec == "builtin" or spec.startswith(("ws://", "wss://")):
        addresses = urls if spec == "builtin" else spec.split(",")
        if not addresses:
            raise ValueError("the builtin broker needs the coordinator URLs (urls=...)")
        return WebSocketLink(
            [_ws_url(a.strip()) for a in addresses],
            worker_id,
            token,
            max_message_bytes=max_message_bytes,
        )
    if _is_nats(spec):
        return NatsLink(spec, worker_id, cluster, token, max_message_bytes=max_message_bytes)
    raise ValueError(f"unknown broker {spec!r}: use memory, builtin or nats://host:port")
