"""The state store contract. Every backend (``sqlite.py``, ``postgres.py``) implements ``Store``
and passes the same contract suite in ``tests/contract/test_store_contract.py``.

Rules every backend keeps:
- each method is one transaction: all of it or nothing;
- every state change appends its ``Transition`` and ``Event`` rows in that same transaction;
- fenced writes (``FencedWrite``) are accepted only when their ``fence`` equals the replica's
  current token; otherwise ``FencedOut`` and nothing is written;
- ``apply_writes`` is the group commit: many fenced writes in one transaction, each judged on
  its own (a refused write does not abort the others), results in input order;
- a fenced write that repeats one already applied at the same fence (a start, the same
  checkpoint seq, the same result or error) is answered ``Repeated`` and writes nothing, so a
  retry after a lost acknowledgement is neither applied twice nor refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from niyanta.errors import NiyantaError
from niyanta.model import (
    JSON,
    AutoscalePolicy,
    Checkpoint,
    CoordinatorInfo,
    Customer,
    ErrorInfo,
    Event,
    LeaderLease,
    Page,
    Replica,
    ReplicaKey,
    Tier,
    Transition,
    Workload,
    WorkloadSpec,
    WorkloadType,
)
from niyanta.states import ReplicaState

# --- fenced writes, batched by the coordinator's group committer -------------------------------


@dataclass(frozen=True, slots=True)
class MarkRunning:
    """scheduled -> running: the worker started the replica."""

    key: ReplicaKey
    fence: int
    worker_id: str


@dataclass(frozen=True, slots=True)
class RecordProgress:
    key: ReplicaKey
    fence: int
    progress: float


@dataclass(frozen=True, slots=True)
class SaveCheckpoint:
    """Checkpoint ``seq`` must be greater than the last committed one (else
    ``CheckpointSeqConflict``; the same seq with the same fence is an idempotent no-op)."""

    key: ReplicaKey
    fence: int
    seq: int
    data: bytes


@dataclass(frozen=True, slots=True)
class CompleteReplica:
    """running -> succeeded, with the result."""

    key: ReplicaKey
    fence: int
    result: JSON = None


@dataclass(frozen=True, slots=True)
class FailReplica:
    """running -> retrying (``retry_at`` set: pending again at that time; attempt+1) or -> failed
    (``retry_at`` None)."""

    key: ReplicaKey
    fence: int
    error: ErrorInfo
    retry_at: float | None = None


@dataclass(frozen=True, slots=True)
class ReleaseReplica:
    """scheduled|running -> ``to_state`` (pending: drained/preempted/scaled back, re-queued;
    paused; cancelled), handing the replica back before its lease expires. Bumps the fence."""

    key: ReplicaKey
    fence: int
    reason: str
    to_state: ReplicaState = ReplicaState.PENDING


FencedWrite = (
    MarkRunning | RecordProgress | SaveCheckpoint | CompleteReplica | FailReplica | ReleaseReplica
)


@dataclass(frozen=True, slots=True)
class Repeated:
    """The answer to a write already applied at this fence (a retry whose first delivery
    committed while its sender saw a failure): nothing was written again; ``state`` is the
    replica (or checkpoint) as the first delivery left it."""

    state: Replica | Checkpoint


WriteResult = Replica | Checkpoint | Repeated | Exception
"""Per write: the replica (or checkpoint) after it, ``Repeated`` for a write recognised as a
repeat, or the typed error that refused it."""


# --- assignment and leases ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assignment:
    """pending -> scheduled on ``worker_id``: bumps the fence token and sets the lease."""

    key: ReplicaKey
    worker_id: str
    lease_ttl_s: float
    expected_fence: int
    """The fence the scheduler saw; if the replica moved on since, the assignment is skipped."""


@dataclass(frozen=True, slots=True)
class LeaseRenewal:
    key: ReplicaKey
    fence: int


@dataclass(frozen=True, slots=True)
class RenewResult:
    renewed: tuple[ReplicaKey, ...]
    fenced: tuple[ReplicaKey, ...]
    """Leases the worker no longer holds: it must stop those replicas."""


@dataclass(frozen=True, slots=True)
class WorkloadFilter:
    customer_id: str | None = None
    state: ReplicaState | None = None
    type_name: str | None = None
    limit: int = 50
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class CustomerUpdate:
    tier: str | None = None
    name: str | None = None
    weight: float | None = None
    concurrency_cap: int | None = None
    clear_concurrency_cap: bool = False
    alert_thresholds: Mapping[str, float] | None = None


@dataclass(frozen=True, slots=True)
class SubmitResult:
    workload: Workload
    created: bool
    """False when the idempotency key returned an existing workload."""
    placed: tuple[Replica, ...] = ()
    """The replicas as assigned, when the submit was ``Placed`` and created the workload."""


@dataclass(frozen=True, slots=True)
class Placed:
    """Where a new workload's replicas run, decided by the leader before its submit is written
    (an arrival it can place at once, ``SchedulingLoop.submit``): the submit writes them assigned
    (``scheduled``, fence 1, a lease), with the transitions and events an assignment records,
    in the same transaction, so that the arrival's start waits on one write instead of three
    store calls (submit, the round's read, the assignment)."""

    workload_id: str
    worker_ids: tuple[str, ...]
    """Per replica index, the worker it is placed on."""
    lease_ttl_s: float


@dataclass(frozen=True, slots=True)
class PlacementView:
    """What a scheduling round reads: the head of each customer's queue and the work in
    flight."""

    pending: list[Replica]
    """As ``pending_replicas(limit, per_customer)`` returns them, in queue order."""
    active: list[Replica]
    """As ``active_replicas()`` returns them (also when nothing is pending: the leader places
    arrivals on this view until the next round, ``SchedulingLoop.submit``)."""


@dataclass(frozen=True, slots=True)
class QueueDepth:
    customer_id: str
    pending: int
    oldest_enqueued_at: float


@dataclass(frozen=True, slots=True)
class StoreLimits:
    max_params_bytes: int = 256 * 1024
    max_checkpoint_bytes: int = 16 * 1024 * 1024
    max_replicas: int = 1000


@dataclass(frozen=True, slots=True)
class EventQuery:
    workload_id: str | None = None
    customer_id: str | None = None
    kind_prefix: str | None = None
    after_id: int = 0
    since: float | None = None
    """Only events at or after this time (the SLO watch reads back its window)."""
    limit: int = 100
    extra: Mapping[str, str] = field(default_factory=dict)
    with_data: bool = True
    """False: each event's ``data`` comes back empty. A reader that needs only kinds, times and
    keys (the SLO watch folds every event of the log) skips decoding it, most of the cost."""


@runtime_checkable
class Store(Protocol):
    """Async state store. Time comes from the Clock given to the backend's constructor."""

    # lifecycle
    async def open(self) -> None:
        """Connect and apply pending migrations (idempotent)."""
        ...

    async def close(self) -> None: ...

    async def migrate(self) -> int:
        """Apply pending migrations; return the schema version. Safe to run again."""
        ...

    async def ping(self) -> bool:
        """True when the store answers and migrations are applied."""
        ...

    # tiers and customers
    async def upsert_tier(self, tier: Tier) -> Tier: ...

    async def list_tiers(self) -> list[Tier]: ...

    async def create_customer(self, customer: Customer) -> Customer:
        """AlreadyExists if the id is taken; UnknownTier if the tier is not defined."""
        ...

    async def get_customer(self, customer_id: str) -> Customer: ...

    async def update_customer(self, customer_id: str, update: CustomerUpdate) -> Customer: ...

    async def list_customers(self) -> list[Customer]: ...

    # workload types
    async def register_type(self, wtype: WorkloadType) -> WorkloadType:
        """Idempotent for the same name+version and content; Conflict when content differs."""
        ...

    async def get_type(self, name: str, version: str | None = None) -> WorkloadType:
        """The given version, or the latest registered one."""
        ...

    async def list_types(self) -> list[WorkloadType]: ...

    # workloads
    async def submit_workload(
        self, spec: WorkloadSpec, actor: str, placed: Placed | None = None
    ) -> SubmitResult:
        """Create the workload and its replicas (pending, fence 0; or, ``placed``, with its id
        and its replicas assigned as ``assign_replicas`` would assign them). Idempotent per
        customer and key (an existing workload is returned as it is, ``placed`` ignored);
        IdempotencyConflict for the same key with a different spec. UnknownCustomer,
        UnknownWorkloadType, PayloadTooLarge, InvalidInput on bad input; InvalidInput when
        ``placed`` names a worker for other than each replica."""
        ...

    async def submit_workloads(
        self, specs: Sequence[WorkloadSpec], actor: str
    ) -> list[SubmitResult | NiyantaError]:
        """Many submits in one transaction, each judged alone as ``submit_workload`` judges it:
        per spec, in input order, its result or the typed error that refused it (a refused spec
        does not stop the others). The same idempotency key twice in one call returns the first
        spec's workload for the second."""
        ...

    async def get_workload(self, workload_id: str) -> Workload: ...

    async def list_workloads(self, query: WorkloadFilter) -> Page:
        """Newest first; ``next_cursor`` is opaque."""
        ...

    async def get_replica(self, key: ReplicaKey) -> Replica: ...

    async def list_replicas(self, workload_id: str) -> list[Replica]: ...

    async def pending_replicas(
        self, limit: int = 100_000, per_customer: int | None = None, requeue_due: bool = True
    ) -> list[Replica]:
        """Pending replicas whose ``not_before`` has passed, oldest first. ``requeue_due``:
        retrying ones whose backoff has elapsed are moved to pending first (a read to look for
        them, one transaction if there are any); a caller that knows none is due skips it.
        ``per_customer``: at most that many of each customer, the first in the customer's own
        queue order (workload priority, highest first, then oldest)."""
        ...

    async def placement_view(
        self, limit: int, per_customer: int, requeue_due: bool = True
    ) -> PlacementView:
        """``pending_replicas(limit, per_customer, requeue_due)`` and ``active_replicas()`` in
        one call, on one snapshot: a round's reads in one round trip (PostgreSQL) or one hop to
        the reader thread (SQLite), rather than two."""
        ...

    async def queue_depths(self) -> list[QueueDepth]:
        """Per customer with pending replicas: how many, and the oldest one's enqueue time."""
        ...

    async def active_replicas(self, worker_id: str | None = None) -> list[Replica]:
        """Replicas in scheduled or running (optionally of one worker)."""
        ...

    async def count_replicas_by_state(self) -> dict[tuple[str, str], int]:
        """(customer_id, state) -> count, for quotas and metrics."""
        ...

    # assignment and leases
    async def assign_replicas(self, assignments: Sequence[Assignment]) -> list[Replica]:
        """Apply the scheduler's placements in one transaction; returns the replicas actually
        assigned (with their new fence), skipping any that moved on since."""
        ...

    async def renew_leases(
        self, worker_id: str, renewals: Sequence[LeaseRenewal], ttl_s: float
    ) -> RenewResult:
        """Extend many leases in one statement; those whose fence or worker no longer match are
        reported as fenced."""
        ...

    async def extend_all_leases(self, ttl_s: float) -> int:
        """After a store or leader outage: push every active lease to now + ttl so that
        replicas are not expired en masse for an outage that was not theirs."""
        ...

    async def requeue_expired(self) -> list[Replica]:
        """Active replicas whose lease expired -> pending with a new fence token."""
        ...

    async def release_worker(self, worker_id: str, reason: str) -> list[Replica]:
        """All active replicas of a worker whose connection is gone -> pending, new fence."""
        ...

    # fenced writes
    async def apply_writes(self, writes: Sequence[FencedWrite]) -> list[WriteResult]:
        """Group commit: all writes in one transaction, each judged alone."""
        ...

    async def latest_checkpoint(self, key: ReplicaKey) -> Checkpoint | None: ...

    # control by API
    async def cancel_workload(self, workload_id: str, actor: str, reason: str) -> Workload:
        """Non-terminal replicas: pending/retrying/paused -> cancelled at once; scheduled/running
        -> cancelled too, with a new fence so that the worker's further writes are refused."""
        ...

    async def pause_workload(self, workload_id: str, actor: str, reason: str) -> Workload: ...

    async def resume_workload(self, workload_id: str, actor: str, reason: str) -> Workload: ...

    async def scale_workload(self, workload_id: str, replicas: int, actor: str) -> Workload:
        """Continuous workloads: add pending replicas or cancel the highest-index ones."""
        ...

    async def fail_stalled(self, key: ReplicaKey, fence: int, reason: str) -> Replica:
        """Watchdog: fail the attempt as stalled (retry if attempts remain), new fence."""
        ...

    # events and history
    async def append_event(self, event: Event) -> Event:
        """For events that change no state (alerts, worker joined); ``id`` is assigned."""
        ...

    async def list_events(self, query: EventQuery) -> list[Event]: ...

    async def list_transitions(self, workload_id: str) -> list[Transition]: ...

    # autoscaling
    async def put_autoscale_policy(self, policy: AutoscalePolicy) -> AutoscalePolicy: ...

    async def get_autoscale_policy(self, customer_id: str, type_name: str) -> AutoscalePolicy: ...

    async def list_autoscale_policies(self) -> list[AutoscalePolicy]: ...

    async def delete_autoscale_policy(self, customer_id: str, type_name: str) -> None: ...

    # coordinators and leadership
    async def acquire_leadership(self, name: str, holder: str, ttl_s: float) -> LeaderLease | None:
        """Take the lease if free or expired (term + 1), or renew it if ``holder`` has it.
        Returns the lease held by ``holder``, or None if another holds a live lease."""
        ...

    async def resign_leadership(self, name: str, holder: str, term: int) -> None: ...

    async def get_leader(self, name: str) -> LeaderLease | None: ...

    async def heartbeat_coordinator(self, info: CoordinatorInfo) -> None: ...

    async def list_coordinators(self) -> list[CoordinatorInfo]: ...
