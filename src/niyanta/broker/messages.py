"""Broker messages: versioned, typed msgspec structs, encoded as msgpack on the wire.

Every message is a tagged struct (``t`` names its kind) carrying the envelope fields: ``v``
(protocol version), ``id`` (unique; receivers de-duplicate on it), ``sender``, ``corr`` (the id
of the message it answers, or of the workload chain it belongs to) and ``traceparent`` (W3C).
``decode()`` refuses an unknown version, an unknown kind, a malformed or an oversized message
with ``MessageRefused``; it never raises anything else.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec

from niyanta.errors import MessageRefused

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def new_id() -> str:
    return uuid.uuid4().hex


class Message(msgspec.Struct, tag_field="t", kw_only=True):
    v: int = PROTOCOL_VERSION
    id: str = msgspec.field(default_factory=new_id)
    sender: str = ""
    corr: str | None = None
    traceparent: str | None = None


class Capacity(msgspec.Struct, omit_defaults=True):
    slots: int
    cpu: float = 0.0
    memory_mb: int = 0


class TypeInfo(msgspec.Struct, omit_defaults=True):
    name: str
    version: str = "1"
    entrypoint: str | None = None
    resources_cpu: float = 0.0
    resources_memory_mb: int = 0
    isolation: str = "async"
    retry: dict[str, int | float] = {}
    """``RetryPolicy`` fields as declared by the type (empty: the defaults)."""
    checkpoint: dict[str, int | float] = {}
    """``CheckpointPolicy`` fields as declared by the type (empty: the defaults)."""
    timeout_s: float | None = None


class InventoryItem(msgspec.Struct, omit_defaults=True):
    workload_id: str
    index: int
    fence: int
    checkpoint_seq: int = 0
    state: str = "running"


# --- worker -> coordinator ---------------------------------------------------------------------


class Hello(Message, tag="hello"):
    worker_id: str
    session: str
    """New per worker process; a reconnect with the same session resumes it."""
    labels: dict[str, str] = {}
    capacity: Capacity = msgspec.field(default_factory=lambda: Capacity(slots=1))
    types: list[TypeInfo] = []
    inventory: list[InventoryItem] = []
    token: str | None = None
    """Shared worker token, when the coordinator requires one."""
    health_url: str | None = None


class Heartbeat(Message, tag="heartbeat"):
    worker_id: str
    healthy: bool = True
    free: Capacity = msgspec.field(default_factory=lambda: Capacity(slots=0))
    inventory: list[InventoryItem] = []
    metrics: dict[str, float] = {}


class Started(Message, tag="started"):
    workload_id: str
    index: int
    fence: int


class Progress(Message, tag="progress"):
    workload_id: str
    index: int
    fence: int
    progress: float
    metrics: dict[str, float] = {}
    """Autoscaling signals reported by workload code (``ctx.report_metric``)."""


class CheckpointMsg(Message, tag="checkpoint"):
    workload_id: str
    index: int
    fence: int
    seq: int
    data: bytes


class Result(Message, tag="result"):
    workload_id: str
    index: int
    fence: int
    outcome: str
    """``succeeded``, ``failed`` (see error_class), or ``yielded`` (checkpointed and handed
    back after a stop, preempt or drain)."""
    result: Any = None
    error_class: str | None = None
    error_message: str | None = None
    failed_items: list[Any] = []


class Bye(Message, tag="bye"):
    """The worker is leaving on purpose (drained); nothing of it needs a lease wait."""

    worker_id: str


# --- coordinator -> worker ---------------------------------------------------------------------


class Welcome(Message, tag="welcome"):
    coordinator_id: str
    heartbeat_interval_s: float
    lease_ttl_s: float


class LeaseGrant(Message, tag="lease_grant"):
    """Reply to a Heartbeat: leases renewed for ``ttl_s`` from when the heartbeat was sent; the
    replicas in ``fenced`` are no longer this worker's and must stop at once, writing nothing."""

    ttl_s: float
    fenced: list[InventoryItem] = []
    rejoin: bool = False
    """The coordinator does not know this worker (a new leader, e.g. after a failover over NATS,
    where no reconnection makes the worker say Hello): send Hello again."""


class StartReplica(Message, tag="start"):
    workload_id: str
    index: int
    fence: int
    attempt: int
    customer_id: str
    type_name: str
    type_version: str
    params: dict[str, Any] = {}
    checkpoint: bytes | None = None
    checkpoint_seq: int = 0
    lease_ttl_s: float = 5.0


class StopReplica(Message, tag="stop"):
    workload_id: str
    index: int
    fence: int
    reason: str
    """``cancel``, ``pause``, ``preempt``, ``scale_down``, ``fenced``: for all but ``cancel`` the
    replica checkpoints and yields."""


class Drain(Message, tag="drain"):
    worker_id: str


class LoadType(Message, tag="load_type"):
    """A type registered at runtime: import ``entrypoint`` and announce it."""

    type: TypeInfo


# --- both ways ---------------------------------------------------------------------------------


class Ack(Message, tag="ack"):
    ok: bool = True


class Refusal(Message, tag="refusal"):
    code: str
    """Stable code, e.g. ``fenced_out``, ``malformed``, ``unknown_version``, ``too_large``."""
    reason: str = ""


AnyMessage = (
    Hello
    | Heartbeat
    | Started
    | Progress
    | CheckpointMsg
    | Result
    | Bye
    | Welcome
    | LeaseGrant
    | StartReplica
    | StopReplica
    | Drain
    | LoadType
    | Ack
    | Refusal
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyMessage)


class _Probe(msgspec.Struct):
    v: int = 0
    t: str = ""


_probe = msgspec.msgpack.Decoder(_Probe)


def encode(message: Message) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> AnyMessage:
    """Decode one message or raise MessageRefused with a stable code."""
    if len(data) > max_bytes:
        raise MessageRefused(f"too_large: {len(data)} bytes > {max_bytes}")
    try:
        probe = _probe.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MessageRefused(f"malformed: {exc}") from None
    if probe.v != PROTOCOL_VERSION:
        raise MessageRefused(f"unknown_version: {probe.v} (this side speaks {PROTOCOL_VERSION})")
    try:
        message: AnyMessage = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise MessageRefused(f"malformed: {exc}") from None
    return message
