"""The Store contract implemented once in SQL; ``sqlite.py`` and ``postgres.py`` supply the
connection, the transaction, and the few statements whose fast form differs between dialects.

Every state-changing method follows one pattern inside one transaction: load (and lock) every
replica of the workloads involved, compute the changes in memory (``changes.py``: lifecycle guard,
fence check), then write the changed rows, their Transition and Event rows, checkpoints and the
derived workload states with a handful of set-based statements (``_persist``).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol, TypeVar

from niyanta.clock import Clock, SystemClock
from niyanta.errors import (
    AlreadyExists,
    Conflict,
    IdempotencyConflict,
    IllegalTransition,
    InvalidInput,
    NiyantaError,
    NotFound,
    PayloadTooLarge,
    UnknownCustomer,
    UnknownReplica,
    UnknownTier,
    UnknownWorkload,
    UnknownWorkloadType,
)
from niyanta.model import (
    AutoscalePolicy,
    Checkpoint,
    CoordinatorInfo,
    Customer,
    Event,
    LeaderLease,
    Mode,
    Page,
    Replica,
    ReplicaKey,
    Tier,
    Transition,
    Workload,
    WorkloadSpec,
    WorkloadType,
    new_workload_id,
)
from niyanta.states import ACTIVE, TERMINAL, ReplicaState, workload_state
from niyanta.store import changes
from niyanta.store.base import (
    Assignment,
    CustomerUpdate,
    EventQuery,
    FencedWrite,
    LeaseRenewal,
    Placed,
    PlacementView,
    QueueDepth,
    RenewResult,
    Repeated,
    SaveCheckpoint,
    StoreLimits,
    SubmitResult,
    WorkloadFilter,
    WriteResult,
)
from niyanta.store.changes import Change
from niyanta.store.codec import (
    EVENT_COLUMNS_BUT_DATA,
    REPLICA_COLUMNS,
    ReplicaRow,
    Row,
    customer_from_row,
    decode_type,
    dumps,
    encode_affinity,
    encode_type,
    event_from_row,
    event_values,
    policy_from_row,
    replica_from_row,
    replica_values,
    spec_digest,
    tier_from_row,
    tier_values,
    transition_from_row,
    workload_from_row,
)

T = TypeVar("T")
S = ReplicaState

_ACTIVE_SQL = "state IN ('scheduled', 'running')"
ACTIVE_SELECT = f"SELECT * FROM replicas WHERE {_ACTIVE_SQL}"
# The queue index's own condition first: SQLite uses a partial index only for a query that
# repeats its WHERE term, and without it scans every replica ever run.
_RETRY_DUE_SQL = "state IN ('pending', 'retrying') AND state = 'retrying' AND not_before <= $1"
INSERT_REPLICA = (
    f"INSERT INTO replicas ({', '.join(REPLICA_COLUMNS)}, priority) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(REPLICA_COLUMNS) + 2))})"
)
"""A new replica's row: REPLICA_COLUMNS, then its workload's priority (set once: it orders the
queue, ``replicas_customer_queue``, and never changes)."""
PENDING_CUSTOMERS_CTE = (
    # Each customer with pending replicas, one index probe per customer (a loose index scan):
    # no pass over the whole queue, however long a flooding customer's backlog.
    "WITH RECURSIVE queued(customer_id) AS ("
    "SELECT min(customer_id) FROM replicas WHERE state = 'pending'"
    " UNION ALL SELECT (SELECT min(customer_id) FROM replicas"
    " WHERE state = 'pending' AND customer_id > queued.customer_id)"
    " FROM queued WHERE queued.customer_id IS NOT NULL) "
)
INSERT_EVENT = (
    "INSERT INTO events (kind, at, actor, workload_id, idx, customer_id, correlation_id, reason,"
    " data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)

INSERT_WORKLOAD = (
    "INSERT INTO workloads (id, customer_id, type_name, type_version, params, spec_digest, mode,"
    " replicas, affinity, priority, idempotency_key, labels, state, created_at, updated_at,"
    " traceparent) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
)


def workload_values(workload: Workload, params: str, digest: str) -> tuple[object, ...]:
    return (
        workload.id,
        workload.customer_id,
        workload.type_name,
        workload.type_version,
        params,
        digest,
        workload.mode.value,
        workload.replicas,
        encode_affinity(workload.affinity),
        workload.priority,
        workload.idempotency_key,
        dumps(dict(workload.labels)),
        workload.state.value,
        workload.created_at,
        workload.updated_at,
        workload.traceparent,
    )


def new_replica_values(
    workload: Workload, indexes: Iterable[int], now: float
) -> list[tuple[object, ...]]:
    """Rows of new replicas: pending, fence 0, first attempt."""
    return [
        (*replica_values(row), workload.priority) for row in _new_replicas(workload, indexes, now)
    ]


def _new_replicas(workload: Workload, indexes: Iterable[int], now: float) -> list[ReplicaRow]:
    return [
        ReplicaRow(
            Replica(workload.id, i, S.PENDING, fence=0, attempt=1, enqueued_at=now),
            customer_id=workload.customer_id,
            checkpoint_fence=0,
        )
        for i in indexes
    ]


@dataclass(frozen=True, slots=True)
class NewRows:
    """What one submit writes for a new workload besides its own row and its submitted event."""

    workload: Workload
    """As written (``scheduled`` when it was placed)."""
    replicas: list[tuple[object, ...]]
    """``INSERT_REPLICA`` rows."""
    history: list[tuple[object, ...]]
    """``Many.HISTORY`` rows of the assignments (none unless placed)."""
    placed: tuple[Replica, ...]


def new_rows(workload: Workload, placed: Placed | None, now: float) -> NewRows:
    """The replicas of a new workload: pending, or as ``changes.assign`` assigns them to the
    workers of ``placed`` (its new fence, its lease, its transition)."""
    if placed is None:
        return NewRows(
            workload, new_replica_values(workload, range(workload.replicas), now), [], ()
        )
    pending = _new_replicas(workload, range(workload.replicas), now)
    if len(placed.worker_ids) != workload.replicas:
        raise InvalidInput(
            f"{len(placed.worker_ids)} placements for a workload of {workload.replicas} replicas"
        )
    assigned = [
        changes.assign(row, worker_id, placed.lease_ttl_s, now)
        for row, worker_id in zip(pending, placed.worker_ids, strict=True)
    ]
    history = [
        (*_transition_values(t), c.after.customer_id, c.after.replica.attempt)
        for c in assigned
        if (t := c.transition) is not None
    ]
    return NewRows(
        replace(workload, state=workload_state(c.after.replica.state for c in assigned)),
        [(*replica_values(c.after), workload.priority) for c in assigned],
        history,
        tuple(c.after.replica for c in assigned),
    )


class _NewWorkloads:
    """The rows of the workloads one submit transaction creates, written together at its end
    (one statement per table rather than per workload)."""

    def __init__(self, now: float, actor: str) -> None:
        self.now = now
        self._actor = actor
        self._workloads: list[tuple[object, ...]] = []
        self._replicas: list[tuple[object, ...]] = []
        self._events: list[tuple[object, ...]] = []
        self.history: list[tuple[object, ...]] = []
        """``Many.HISTORY`` rows (placed replicas' assignments), for ``SqlStore._write``."""

    def add(self, rows: NewRows, values: tuple[object, ...] | None) -> None:
        """``values``: the workload's row when it is still to be inserted (None: it is)."""
        if values is not None:
            self._workloads.append(values)
        self._replicas += rows.replicas
        self.history += rows.history
        self._events.append(event_values(submitted_event(rows.workload, self._actor)))

    async def write(self, tx: Tx) -> None:
        for sql, rows in (
            (INSERT_WORKLOAD, self._workloads),
            (INSERT_REPLICA, self._replicas),
            (INSERT_EVENT, self._events),
        ):
            if len(rows) == 1:
                await tx.execute(sql, *rows[0])  # asyncpg's executemany costs more for one row
            elif rows:
                await tx.executemany(sql, rows)


def submitted_event(workload: Workload, actor: str) -> Event:
    return Event(
        id=0,
        kind="workload.submitted",
        at=workload.created_at,
        actor=actor,
        workload_id=workload.id,
        customer_id=workload.customer_id,
        data={"type": f"{workload.type_name}@{workload.type_version}"},
    )


def new_workload(
    spec: WorkloadSpec, version: str, params: str, now: float, workload_id: str | None = None
) -> Workload:
    """A workload as ``spec`` submits it at ``now``, of its type's ``version``."""
    return Workload(
        id=workload_id or new_workload_id(),
        customer_id=spec.customer_id,
        type_name=spec.type_name,
        type_version=version,
        params=json.loads(params),
        mode=spec.mode,
        replicas=spec.replicas,
        affinity=spec.affinity,
        priority=spec.priority,
        idempotency_key=spec.idempotency_key,
        labels=dict(spec.labels),
        state=S.PENDING,
        created_at=now,
        updated_at=now,
        traceparent=spec.traceparent,
    )


K = TypeVar("K")
V = TypeVar("V")


async def _cached(
    cache: dict[K, V | NiyantaError], key: K, load: Callable[..., Awaitable[V]], *args: object
) -> V:
    """``load(*args)`` once per key within a transaction; a refusal is remembered and raised
    again."""
    if key not in cache:
        try:
            cache[key] = await load(*args)
        except NiyantaError as refused:
            cache[key] = refused
    found = cache[key]
    if isinstance(found, NiyantaError):
        raise found
    return found


def _in_key_order(rows: Iterable[Row]) -> list[Replica]:
    """Replicas of ``rows`` in (workload, index) order, sorted here: asked for that order,
    SQLite walks the primary key through every replica ever run (2 ms a round at 5,000)
    instead of the partial index of the active ones."""
    replicas = [replica_from_row(r).replica for r in rows]
    replicas.sort(key=lambda r: (r.workload_id, r.index))
    return replicas


def _unknown_type(name: str, version: str | None) -> UnknownWorkloadType:
    shown = name if version is None else f"{name}@{version}"
    return UnknownWorkloadType(f"no workload type {shown!r}")


class Many(StrEnum):
    """The statements ``_persist`` applies to many rows at once."""

    REPLICAS = "replicas"
    HISTORY = "history"
    """A transition: its ``transitions`` row and its ``replica.<to_state>`` event."""
    CHECKPOINTS = "checkpoints"
    WORKLOAD_STATES = "workload_states"


ROW_SQL: dict[Many, tuple[str, ...]] = {
    # Each statement takes the first N values of a row, N its highest placeholder.
    Many.REPLICAS: (
        "UPDATE replicas SET "
        + ", ".join(f"{c} = ${i}" for i, c in enumerate(REPLICA_COLUMNS[2:], start=3))
        + " WHERE workload_id = $1 AND idx = $2",
    ),
    # Row: workload_id, idx, from_state, to_state, fence, at, actor, reason, customer_id, attempt.
    Many.HISTORY: (
        "INSERT INTO transitions (workload_id, idx, from_state, to_state, fence, at, actor,"
        " reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        "INSERT INTO events (kind, at, actor, workload_id, idx, customer_id, reason, data)"
        " VALUES ('replica.' || $4, $6, $7, $1, $2, $9, $8,"
        " json_object('attempt', $10, 'fence', $5, 'from', $3))",
    ),
    Many.CHECKPOINTS: (
        "INSERT INTO checkpoints (workload_id, idx, seq, fence, data, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (workload_id, idx) DO UPDATE SET"
        " seq = excluded.seq, fence = excluded.fence, data = excluded.data,"
        " created_at = excluded.created_at",
    ),
    Many.WORKLOAD_STATES: (
        "UPDATE workloads SET state = $2, updated_at = $3 WHERE id = $1 AND state <> $2",
    ),
}
"""Each statement for one row (values in the order the ``_persist`` rows carry them)."""


class Tx(Protocol):
    """One open transaction. SQL uses ``$1`` placeholders in both dialects."""

    async def fetch(self, sql: str, *args: object) -> list[Row]: ...

    async def fetchrow(self, sql: str, *args: object) -> Row | None: ...

    async def execute(self, sql: str, *args: object) -> None: ...

    async def executemany(self, sql: str, args: Sequence[Sequence[object]]) -> None: ...


class ReplicaBatch:
    """Replicas loaded (and locked) by one transaction, and the changes applied to them."""

    def __init__(self, rows: Iterable[ReplicaRow]) -> None:
        self.loaded = {row.replica.key: row for row in rows}
        self.current = dict(self.loaded)
        self.changes: list[Change] = []
        self._by_workload: dict[str, list[ReplicaKey]] = {}
        for key in sorted(self.loaded):
            self._by_workload.setdefault(key.workload_id, []).append(key)

    def get(self, key: ReplicaKey) -> ReplicaRow | None:
        return self.current.get(key)

    def apply(self, change: Change) -> Replica:
        """Record a change to a loaded replica."""
        self.current[change.after.replica.key] = change.after
        self.changes.append(change)
        return change.after.replica

    def of_workload(self, workload_id: str) -> list[ReplicaRow]:
        return [self.current[key] for key in self._by_workload.get(workload_id, [])]

    def dirty(self) -> list[ReplicaRow]:
        return [row for key, row in self.current.items() if self.loaded.get(key) != row]


class SqlStore(ABC):
    """The shared implementation of ``niyanta.store.base.Store``."""

    dialect: str
    for_update: str = ""

    def __init__(self, clock: Clock | None = None, limits: StoreLimits | None = None) -> None:
        self._clock: Clock = clock or SystemClock()
        self._limits = limits or StoreLimits()

    # --- what a dialect provides -------------------------------------------------------------

    one_statement_submit = False
    """A submit of one workload without an idempotency key is one statement
    (``_submit_in_one_statement``), its customer and type checks included."""

    async def _submit_in_one_statement(
        self,
        spec: WorkloadSpec,
        params: str,
        digest: str,
        now: float,
        actor: str,
        placed: Placed | None,
    ) -> SubmitResult:
        raise NotImplementedError

    @abstractmethod
    async def _run(
        self, body: Callable[[Tx], Awaitable[T]], urgent: bool = False, autocommit: bool = False
    ) -> T:
        """Run ``body`` in one transaction (committed when it returns, rolled back if it raises).
        ``urgent``: a placement waits on it (a submit, a round's assignment); a dialect with one
        writer serves it before ordinary writes (``writer_queue.py``). ``autocommit``: the body
        reads, then writes with at most one statement, which is atomic alone (or only reads);
        a dialect may run it outside a transaction block (PostgreSQL: no BEGIN and COMMIT round
        trips)."""

    @abstractmethod
    async def _snapshot(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        """Run a ``body`` that only reads on one consistent snapshot, off the writer: on a
        dialect with one writer (SQLite) a read of the API or the catalog waits for no
        checkpoint batch's commit."""

    @abstractmethod
    async def _read(self, sql: str, *args: object) -> list[Row]:
        """One read-only statement outside any transaction of ours: it sees every commit made
        before it started and waits for no writer (the scheduler's reads every round, and the
        API's, do not queue behind lease renewals and checkpoint batches)."""

    lock_replicas_sql: str
    """Every replica of the workloads whose ids are bound at ``$1`` as a JSON array, ordered by
    (workload, index) and, where the dialect has row locks, locked in that order."""

    pending_window_sql: str
    """The first ``$3`` pending replicas (``not_before <= $1``) of each customer in its queue
    order (``replicas_customer_queue``), then oldest first, at most ``$2``; it starts with
    ``PENDING_CUSTOMERS_CTE``."""

    @abstractmethod
    def _json_field_equals(self, column: str, key_param: int, value_param: int) -> str:
        """SQL true when JSON text ``column`` has key ``$key_param`` equal to ``$value_param``."""

    @abstractmethod
    async def _renew(
        self, tx: Tx, worker_id: str, renewals: Sequence[LeaseRenewal], expires_at: float
    ) -> set[ReplicaKey]:
        """Extend the matching leases in one statement; return the keys renewed."""

    async def _write(self, tx: Tx, parts: Mapping[Many, Sequence[Sequence[object]]]) -> None:
        """Apply ``ROW_SQL[what]`` to the rows of every part (a dialect may do it all in one
        statement)."""
        for what, rows in parts.items():
            for sql in ROW_SQL[what]:
                used = max(int(n) for n in re.findall(r"\$(\d+)", sql))
                await tx.executemany(sql, [row[:used] for row in rows])

    # --- shared helpers ------------------------------------------------------------------------

    def _now(self) -> float:
        return self._clock.now()

    async def _load(self, tx: Tx, workload_ids: Iterable[str]) -> ReplicaBatch:
        """Every replica of these workloads, locked for this transaction."""
        ids = sorted(set(workload_ids))
        if not ids:
            return ReplicaBatch(())
        rows = await tx.fetch(self.lock_replicas_sql, json.dumps(ids))
        return ReplicaBatch(replica_from_row(r) for r in rows)

    async def _load_where(self, tx: Tx, condition: str, *args: object) -> ReplicaBatch:
        """Every replica of the workloads that have a replica matching ``condition``, locked."""
        rows = await tx.fetch(
            "SELECT * FROM replicas WHERE workload_id IN"
            f" (SELECT workload_id FROM replicas WHERE {condition})"
            f" ORDER BY workload_id, idx{self.for_update}",
            *args,
        )
        return ReplicaBatch(replica_from_row(r) for r in rows)

    async def _persist(self, tx: Tx, batch: ReplicaBatch, now: float) -> None:
        """Write what ``batch`` changed: rows, history, checkpoints, derived workload states."""
        parts: dict[Many, Sequence[Sequence[object]]] = {}
        dirty = batch.dirty()
        if dirty:
            parts[Many.REPLICAS] = [replica_values(row) for row in dirty]
        history = [
            (*_transition_values(t), c.after.customer_id, c.after.replica.attempt)
            for c in batch.changes
            if (t := c.transition) is not None
        ]
        if history:
            parts[Many.HISTORY] = history
        checkpoints = {
            (c.workload_id, c.index): (c.workload_id, c.index, c.seq, c.fence, c.data, c.created_at)
            for change in batch.changes
            if (c := change.checkpoint) is not None and not change.repeated
        }
        if checkpoints:
            parts[Many.CHECKPOINTS] = list(checkpoints.values())
        touched = sorted({c.after.replica.workload_id for c in batch.changes if c.transition})
        if touched:
            parts[Many.WORKLOAD_STATES] = [
                (wid, workload_state(r.replica.state for r in batch.of_workload(wid)).value, now)
                for wid in touched
            ]
        if parts:
            await self._write(tx, parts)

    async def _workload(self, tx: Tx, workload_id: str) -> Workload:
        row = await tx.fetchrow("SELECT * FROM workloads WHERE id = $1", workload_id)
        if row is None:
            raise UnknownWorkload(f"no workload {workload_id!r}")
        return workload_from_row(row)

    async def _type(self, tx: Tx, name: str, version: str | None) -> WorkloadType:
        if version is None:
            row = await tx.fetchrow(
                "SELECT * FROM workload_types WHERE name = $1 ORDER BY seq DESC LIMIT 1", name
            )
        else:
            row = await tx.fetchrow(
                "SELECT * FROM workload_types WHERE name = $1 AND version = $2", name, version
            )
        if row is None:
            raise _unknown_type(name, version)
        return decode_type(row["spec"], row["created_at"])

    async def _submitted_type(
        self, tx: Tx, customer_id: str, name: str, version: str | None
    ) -> WorkloadType:
        """The type a submit names, once its customer is known to exist: one round trip for
        both (a submit's only reads)."""
        newest = "ORDER BY seq DESC LIMIT 1" if version is None else "AND version = $3"
        args = (customer_id, name) if version is None else (customer_id, name, version)
        row = await tx.fetchrow(
            "SELECT EXISTS (SELECT 1 FROM customers WHERE id = $1) AS customer_known,"
            " t.spec, t.created_at FROM (SELECT 1 AS one) AS one LEFT JOIN"
            f" (SELECT spec, created_at FROM workload_types WHERE name = $2 {newest}) AS t"
            " ON TRUE",
            *args,
        )
        assert row is not None  # one row, whatever matched
        if not row["customer_known"]:
            raise UnknownCustomer(f"no customer {customer_id!r}")
        if row["spec"] is None:
            raise _unknown_type(name, version)
        return decode_type(row["spec"], row["created_at"])

    # --- tiers and customers -------------------------------------------------------------------

    async def upsert_tier(self, tier: Tier) -> Tier:
        async def body(tx: Tx) -> Tier:
            await tx.execute(
                "INSERT INTO tiers (name, priority, weight, guaranteed_slots, concurrency_cap,"
                " may_preempt, slo, guaranteed_cpu, guaranteed_memory_mb, guarantee_linger_s)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (name) DO"
                " UPDATE SET priority = excluded.priority, weight = excluded.weight,"
                " guaranteed_slots = excluded.guaranteed_slots,"
                " concurrency_cap = excluded.concurrency_cap, may_preempt = excluded.may_preempt,"
                " slo = excluded.slo, guaranteed_cpu = excluded.guaranteed_cpu,"
                " guaranteed_memory_mb = excluded.guaranteed_memory_mb,"
                " guarantee_linger_s = excluded.guarantee_linger_s",
                *tier_values(tier),
            )
            return tier

        if not tier.name:
            raise InvalidInput("a tier needs a name")
        return await self._run(body)

    async def list_tiers(self) -> list[Tier]:
        async def body(tx: Tx) -> list[Tier]:
            rows = await tx.fetch("SELECT * FROM tiers ORDER BY priority DESC, name")
            return [tier_from_row(r) for r in rows]

        return await self._snapshot(body)

    async def _require_tier(self, tx: Tx, name: str) -> None:
        if await tx.fetchrow("SELECT name FROM tiers WHERE name = $1", name) is None:
            raise UnknownTier(f"no tier {name!r}")

    async def create_customer(self, customer: Customer) -> Customer:
        created = replace(customer, created_at=self._now())

        async def body(tx: Tx) -> Customer:
            await self._require_tier(tx, customer.tier)
            row = await tx.fetchrow(
                "INSERT INTO customers (id, tier, name, weight, concurrency_cap, alert_thresholds,"
                " created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING"
                " RETURNING id",
                created.id,
                created.tier,
                created.name,
                created.weight,
                created.concurrency_cap,
                dumps(dict(created.alert_thresholds)),
                created.created_at,
            )
            if row is None:
                raise AlreadyExists(f"customer {customer.id!r} exists")
            return created

        if not customer.id:
            raise InvalidInput("a customer needs an id")
        return await self._run(body)

    async def get_customer(self, customer_id: str) -> Customer:
        async def body(tx: Tx) -> Customer:
            return await self._customer(tx, customer_id)

        return await self._snapshot(body)

    async def _customer(self, tx: Tx, customer_id: str, lock: bool = False) -> Customer:
        row = await tx.fetchrow(
            f"SELECT * FROM customers WHERE id = $1{self.for_update if lock else ''}", customer_id
        )
        if row is None:
            raise UnknownCustomer(f"no customer {customer_id!r}")
        return customer_from_row(row)

    async def update_customer(self, customer_id: str, update: CustomerUpdate) -> Customer:
        async def body(tx: Tx) -> Customer:
            current = await self._customer(tx, customer_id, lock=True)
            if update.tier is not None:
                await self._require_tier(tx, update.tier)
            cap = None if update.clear_concurrency_cap else current.concurrency_cap
            updated = replace(
                current,
                tier=update.tier if update.tier is not None else current.tier,
                name=update.name if update.name is not None else current.name,
                weight=update.weight if update.weight is not None else current.weight,
                concurrency_cap=update.concurrency_cap
                if update.concurrency_cap is not None
                else cap,
                alert_thresholds=update.alert_thresholds
                if update.alert_thresholds is not None
                else current.alert_thresholds,
            )
            await tx.execute(
                "UPDATE customers SET tier = $2, name = $3, weight = $4, concurrency_cap = $5,"
                " alert_thresholds = $6 WHERE id = $1",
                customer_id,
                updated.tier,
                updated.name,
                updated.weight,
                updated.concurrency_cap,
                dumps(dict(updated.alert_thresholds)),
            )
            return updated

        return await self._run(body)

    async def list_customers(self) -> list[Customer]:
        async def body(tx: Tx) -> list[Customer]:
            return [
                customer_from_row(r) for r in await tx.fetch("SELECT * FROM customers ORDER BY id")
            ]

        return await self._snapshot(body)

    # --- workload types ------------------------------------------------------------------------

    async def register_type(self, wtype: WorkloadType) -> WorkloadType:
        if not wtype.name or not wtype.version:
            raise InvalidInput("a workload type needs a name and a version")
        text = encode_type(wtype)
        now = self._now()

        async def body(tx: Tx) -> WorkloadType:
            row = await tx.fetchrow(
                "INSERT INTO workload_types (name, version, spec, created_at)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING created_at",
                wtype.name,
                wtype.version,
                text,
                now,
            )
            if row is not None:
                return replace(wtype, created_at=now)
            existing = await tx.fetchrow(
                "SELECT spec, created_at FROM workload_types WHERE name = $1 AND version = $2",
                wtype.name,
                wtype.version,
            )
            assert existing is not None
            if existing["spec"] != text:
                raise Conflict(
                    f"workload type {wtype.name}@{wtype.version} is registered with other content"
                )
            return decode_type(existing["spec"], existing["created_at"])

        return await self._run(body)

    async def get_type(self, name: str, version: str | None = None) -> WorkloadType:
        async def body(tx: Tx) -> WorkloadType:
            return await self._type(tx, name, version)

        return await self._snapshot(body)

    async def list_types(self) -> list[WorkloadType]:
        async def body(tx: Tx) -> list[WorkloadType]:
            rows = await tx.fetch("SELECT * FROM workload_types ORDER BY name, seq")
            return [decode_type(r["spec"], r["created_at"]) for r in rows]

        return await self._snapshot(body)

    # --- workloads -----------------------------------------------------------------------------

    def _check_spec(self, spec: WorkloadSpec) -> str:
        """Validate what a client submitted; return the params as JSON text."""
        try:
            params = dumps(dict(spec.params))
            json.dumps(dict(spec.labels))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"params and labels must be JSON: {exc}") from exc
        if len(params.encode()) > self._limits.max_params_bytes:
            raise PayloadTooLarge(
                f"params of {len(params.encode())} bytes exceed {self._limits.max_params_bytes}"
            )
        if not 1 <= spec.replicas <= self._limits.max_replicas:
            raise InvalidInput(f"replicas must be within 1..{self._limits.max_replicas}")
        if spec.mode not in set(Mode):
            raise InvalidInput(f"unknown mode {spec.mode!r}")
        return params

    async def _by_idempotency_key(
        self, tx: Tx, spec: WorkloadSpec, digest: str
    ) -> SubmitResult | None:
        row = await tx.fetchrow(
            "SELECT * FROM workloads WHERE customer_id = $1 AND idempotency_key = $2",
            spec.customer_id,
            spec.idempotency_key,
        )
        if row is None:
            return None
        if row["spec_digest"] != digest:
            raise IdempotencyConflict(
                f"idempotency key {spec.idempotency_key!r} was used with a different workload"
            )
        return SubmitResult(workload_from_row(row), created=False)

    async def submit_workload(
        self, spec: WorkloadSpec, actor: str, placed: Placed | None = None
    ) -> SubmitResult:
        (result,) = await self._submit([spec], actor, placed)
        if isinstance(result, NiyantaError):
            raise result
        return result

    async def submit_workloads(
        self, specs: Sequence[WorkloadSpec], actor: str
    ) -> list[SubmitResult | NiyantaError]:
        return await self._submit(specs, actor, None)

    async def _submit(
        self, specs: Sequence[WorkloadSpec], actor: str, placed: Placed | None
    ) -> list[SubmitResult | NiyantaError]:
        """``placed``: the placement of the only spec."""
        assert placed is None or len(specs) == 1
        checked: list[tuple[str, str] | NiyantaError] = []
        for spec in specs:
            try:
                # The digest only ever answers a later submit with the same key: none without.
                digest = "" if spec.idempotency_key is None else spec_digest(spec)
                checked.append((self._check_spec(spec), digest))
            except NiyantaError as refused:
                checked.append(refused)
        now = self._now()

        async def body(tx: Tx) -> list[SubmitResult | NiyantaError]:
            batch = _NewWorkloads(now, actor)
            refs: dict[tuple[str, str, str | None], WorkloadType | NiyantaError] = {}
            results: list[SubmitResult | NiyantaError] = []
            for spec, check in zip(specs, checked, strict=True):
                if isinstance(check, NiyantaError):
                    results.append(check)
                    continue
                try:
                    ref = (spec.customer_id, spec.type_name, spec.type_version)
                    wtype = await _cached(refs, ref, self._submitted_type, tx, *ref)
                    results.append(await self._submit_one(tx, batch, spec, check, wtype, placed))
                except NiyantaError as refused:
                    results.append(refused)
            await batch.write(tx)
            if batch.history:
                await self._write(tx, {Many.HISTORY: batch.history})
            return results

        if not specs:
            return []
        single = checked[0] if len(specs) == 1 else None
        unkeyed = specs[0].idempotency_key is None
        if self.one_statement_submit and unkeyed and isinstance(single, tuple):
            try:
                return [await self._submit_in_one_statement(specs[0], *single, now, actor, placed)]
            except NiyantaError as refused:
                return [refused]
        return await self._run(body, urgent=True)

    async def _submit_one(
        self,
        tx: Tx,
        batch: _NewWorkloads,
        spec: WorkloadSpec,
        check: tuple[str, str],
        wtype: WorkloadType,
        placed: Placed | None,
    ) -> SubmitResult:
        """One workload of a batch: the existing one for a known idempotency key, else a new
        one queued on ``batch``. A keyed workload is inserted at once (a concurrent submit with
        the same key, or the same key again later in the batch, must find it); unkeyed ones
        have fresh ids and are inserted together."""
        params, digest = check
        if spec.idempotency_key is not None:
            existing = await self._by_idempotency_key(tx, spec, digest)
            if existing is not None:
                return existing
        workload_id = placed.workload_id if placed is not None else None
        rows = new_rows(
            new_workload(spec, wtype.version, params, batch.now, workload_id), placed, batch.now
        )
        workload = rows.workload
        values = workload_values(workload, params, digest)
        if spec.idempotency_key is None:
            batch.add(rows, values)
            return SubmitResult(workload, created=True, placed=rows.placed)
        inserted = await tx.fetchrow(
            INSERT_WORKLOAD + " ON CONFLICT DO NOTHING RETURNING id", *values
        )
        if inserted is None:
            # A concurrent submit with the same key committed first: return its workload.
            existing = await self._by_idempotency_key(tx, spec, digest)
            assert existing is not None
            return existing
        batch.add(rows, None)
        return SubmitResult(workload, created=True, placed=rows.placed)

    async def _insert_replicas(
        self, tx: Tx, workload: Workload, indexes: Iterable[int], now: float
    ) -> None:
        await tx.executemany(INSERT_REPLICA, new_replica_values(workload, indexes, now))

    async def get_workload(self, workload_id: str) -> Workload:
        async def body(tx: Tx) -> Workload:
            return await self._workload(tx, workload_id)

        return await self._snapshot(body)

    async def list_workloads(self, query: WorkloadFilter) -> Page:
        conditions: list[str] = []
        args: list[object] = []
        for column, value in (
            ("customer_id", query.customer_id),
            ("state", query.state.value if query.state is not None else None),
            ("type_name", query.type_name),
        ):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} = ${len(args)}")
        if query.cursor is not None:
            try:
                after = int(query.cursor)
            except ValueError as exc:
                raise InvalidInput(f"bad cursor {query.cursor!r}") from exc
            args.append(after)
            conditions.append(f"seq < ${len(args)}")
        limit = max(1, min(query.limit, 1000))
        args.append(limit + 1)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT * FROM workloads {where} ORDER BY seq DESC LIMIT ${len(args)}"

        async def body(tx: Tx) -> Page:
            rows = await tx.fetch(sql, *args)
            items = tuple(workload_from_row(r) for r in rows[:limit])
            more = len(rows) > limit
            return Page(items, str(rows[limit - 1]["seq"]) if more else None)

        return await self._snapshot(body)

    async def get_replica(self, key: ReplicaKey) -> Replica:
        rows = await self._read(
            "SELECT * FROM replicas WHERE workload_id = $1 AND idx = $2", key.workload_id, key.index
        )
        if not rows:
            raise UnknownReplica(f"no replica {key}")
        return replica_from_row(rows[0]).replica

    async def list_replicas(self, workload_id: str) -> list[Replica]:
        async def body(tx: Tx) -> list[Replica]:
            await self._workload(tx, workload_id)
            rows = await tx.fetch(
                "SELECT * FROM replicas WHERE workload_id = $1 ORDER BY idx", workload_id
            )
            return [replica_from_row(r).replica for r in rows]

        return await self._snapshot(body)

    async def pending_replicas(
        self, limit: int = 100_000, per_customer: int | None = None, requeue_due: bool = True
    ) -> list[Replica]:
        now = self._now()
        await self._requeue_if_due(now, requeue_due)
        if per_customer is None:
            rows = await self._read(
                "SELECT * FROM replicas WHERE state = 'pending' AND not_before <= $1"
                " ORDER BY enqueued_at, workload_id, idx LIMIT $2",
                now,
                limit,
            )
        else:
            # Each customer's first ``per_customer`` in its own queue order (workload priority,
            # then age); only those rows are read, through the index.
            rows = await self._read(self.pending_window_sql, now, limit, per_customer)
        return [replica_from_row(r).replica for r in rows]

    async def placement_view(
        self, limit: int, per_customer: int, requeue_due: bool = True
    ) -> PlacementView:
        now = self._now()
        await self._requeue_if_due(now, requeue_due)
        pending, active = await self._pending_and_active(now, limit, per_customer)
        return PlacementView([replica_from_row(r).replica for r in pending], _in_key_order(active))

    async def _pending_and_active(
        self, now: float, limit: int, per_customer: int
    ) -> tuple[list[Row], list[Row]]:
        """The rows of ``placement_view``: both statements on one snapshot (a dialect may make
        them one statement)."""

        async def body(tx: Tx) -> tuple[list[Row], list[Row]]:
            pending = list(await tx.fetch(self.pending_window_sql, now, limit, per_customer))
            return pending, list(await tx.fetch(ACTIVE_SELECT))

        return await self._snapshot(body)

    async def _requeue_if_due(self, now: float, requeue_due: bool) -> None:
        if requeue_due and await self._read(
            f"SELECT 1 FROM replicas WHERE {_RETRY_DUE_SQL} LIMIT 1", now
        ):
            await self._requeue_backoff_over(now)

    async def _requeue_backoff_over(self, now: float) -> None:
        """Retrying replicas whose backoff has ended go back to pending."""

        async def body(tx: Tx) -> None:
            batch = await self._load_where(tx, _RETRY_DUE_SQL, now)
            for row in list(batch.current.values()):
                r = row.replica
                if r.state is S.RETRYING and r.not_before <= now:
                    batch.apply(
                        changes.requeue(row, now=now, actor="coordinator", reason="backoff over")
                    )
            await self._persist(tx, batch, now)

        await self._run(body)

    async def queue_depths(self) -> list[QueueDepth]:
        rows = await self._read(
            "SELECT customer_id, count(*) AS pending, min(enqueued_at) AS oldest"
            " FROM replicas WHERE state = 'pending' GROUP BY customer_id ORDER BY customer_id"
        )
        return [QueueDepth(r["customer_id"], int(r["pending"]), float(r["oldest"])) for r in rows]

    async def active_replicas(self, worker_id: str | None = None) -> list[Replica]:
        if worker_id is None:
            rows = await self._read(ACTIVE_SELECT)
        else:
            rows = await self._read(f"{ACTIVE_SELECT} AND worker_id = $1", worker_id)
        return _in_key_order(rows)

    async def count_replicas_by_state(self) -> dict[tuple[str, str], int]:
        rows = await self._read(
            "SELECT customer_id, state, count(*) AS n FROM replicas GROUP BY customer_id, state"
        )
        return {(r["customer_id"], r["state"]): int(r["n"]) for r in rows}

    # --- assignment and leases -----------------------------------------------------------------

    async def assign_replicas(self, assignments: Sequence[Assignment]) -> list[Replica]:
        now = self._now()

        async def body(tx: Tx) -> list[Replica]:
            batch = await self._load(tx, (a.key.workload_id for a in assignments))
            assigned = []
            for a in assignments:
                row = batch.get(a.key)
                if row is None or row.replica.fence != a.expected_fence:
                    continue
                if row.replica.state is not S.PENDING:
                    continue
                change = changes.assign(row, a.worker_id, a.lease_ttl_s, now)
                assigned.append(batch.apply(change))
            await self._persist(tx, batch, now)
            return assigned

        if not assignments:
            return []
        return await self._run(body, urgent=True)

    async def renew_leases(
        self, worker_id: str, renewals: Sequence[LeaseRenewal], ttl_s: float
    ) -> RenewResult:
        expires_at = self._now() + ttl_s

        async def body(tx: Tx) -> RenewResult:
            renewed = await self._renew(tx, worker_id, renewals, expires_at)
            ok = tuple(r.key for r in renewals if r.key in renewed)
            return RenewResult(ok, tuple(r.key for r in renewals if r.key not in renewed))

        if not renewals:
            return RenewResult((), ())
        return await self._run(body)

    async def extend_all_leases(self, ttl_s: float) -> int:
        expires_at = self._now() + ttl_s

        async def body(tx: Tx) -> int:
            rows = await tx.fetch(
                f"UPDATE replicas SET lease_expires_at = $1 WHERE {_ACTIVE_SQL} RETURNING idx",
                expires_at,
            )
            return len(rows)

        return await self._run(body)

    async def _requeue_matching(
        self, condition: str, args: Sequence[object], keep: Callable[[Replica], bool], reason: str
    ) -> list[Replica]:
        now = self._now()

        async def body(tx: Tx) -> list[Replica]:
            batch = await self._load_where(tx, condition, *args)
            requeued = []
            for row in list(batch.current.values()):
                if row.replica.state in ACTIVE and keep(row.replica):
                    change = changes.requeue(row, now=now, actor="coordinator", reason=reason)
                    requeued.append(batch.apply(change))
            await self._persist(tx, batch, now)
            return requeued

        return await self._run(body)

    async def requeue_expired(self) -> list[Replica]:
        now = self._now()
        return await self._requeue_matching(
            f"{_ACTIVE_SQL} AND lease_expires_at < $1",
            (now,),
            lambda r: r.lease_expires_at is not None and r.lease_expires_at < now,
            "lease expired",
        )

    async def release_worker(self, worker_id: str, reason: str) -> list[Replica]:
        return await self._requeue_matching(
            f"{_ACTIVE_SQL} AND worker_id = $1",
            (worker_id,),
            lambda r: r.worker_id == worker_id,
            reason,
        )

    # --- fenced writes -------------------------------------------------------------------------

    async def apply_writes(self, writes: Sequence[FencedWrite]) -> list[WriteResult]:
        now = self._now()

        async def body(tx: Tx) -> list[WriteResult]:
            batch = await self._load(tx, (w.key.workload_id for w in writes))
            results: list[WriteResult] = []
            for write in writes:
                row = batch.get(write.key)
                if row is None:
                    results.append(UnknownReplica(f"no replica {write.key}"))
                    continue
                started = changes.implied_start(write, row, now)
                try:
                    change = changes.judge(
                        write, row if started is None else started.after, now, self._limits
                    )
                except NiyantaError as refused:
                    results.append(refused)
                    continue
                if started is not None:
                    batch.apply(started)
                replica = batch.apply(change)
                state: Replica | Checkpoint = replica
                if isinstance(write, SaveCheckpoint):
                    assert change.checkpoint is not None
                    state = change.checkpoint
                results.append(Repeated(state) if change.repeated else state)
            await self._persist(tx, batch, now)
            return results

        if not writes:
            return []
        return await self._run(body)

    async def latest_checkpoint(self, key: ReplicaKey) -> Checkpoint | None:
        rows = await self._read(
            "SELECT * FROM checkpoints WHERE workload_id = $1 AND idx = $2",
            key.workload_id,
            key.index,
        )
        if not rows:
            return None
        row = rows[0]
        return Checkpoint(
            row["workload_id"],
            row["idx"],
            row["seq"],
            row["fence"],
            bytes(row["data"]),
            row["created_at"],
        )

    # --- control by API ------------------------------------------------------------------------

    async def _control(
        self,
        workload_id: str,
        target: ReplicaState,
        step: Callable[[ReplicaRow], Change | None],
        actor: str,
        reason: str,
        handled_elsewhere: frozenset[ReplicaState] = frozenset(),
    ) -> Workload:
        """Apply ``step`` to every replica of a workload. IllegalTransition if no replica moved
        and none is in ``handled_elsewhere`` (states the coordinator finishes itself)."""
        now = self._now()

        async def body(tx: Tx) -> Workload:
            # Replicas first, then the workload row: the order every transaction locks in.
            batch = await self._load(tx, [workload_id])
            workload = await self._workload(tx, workload_id)
            rows = batch.of_workload(workload_id)
            for row in rows:
                change = step(row)
                if change is not None:
                    batch.apply(change)
            if not batch.changes and not any(r.replica.state in handled_elsewhere for r in rows):
                raise IllegalTransition(workload.state.value, target.value)
            await self._persist(tx, batch, now)
            await tx.execute(
                INSERT_EVENT,
                *event_values(
                    Event(
                        id=0,
                        kind=f"workload.{target.value}",
                        at=now,
                        actor=actor,
                        workload_id=workload_id,
                        customer_id=workload.customer_id,
                        reason=reason,
                    )
                ),
            )
            return await self._workload(tx, workload_id)

        return await self._run(body)

    async def cancel_workload(self, workload_id: str, actor: str, reason: str) -> Workload:
        now = self._now()

        def step(row: ReplicaRow) -> Change | None:
            if row.replica.state in TERMINAL:
                return None
            return changes.cancel(row, now=now, actor=actor, reason=reason)

        return await self._control(workload_id, S.CANCELLED, step, actor, reason)

    async def pause_workload(self, workload_id: str, actor: str, reason: str) -> Workload:
        """Queued replicas (pending, retrying) pause at once. Active ones keep running: the
        coordinator asks their workers to checkpoint and yield, then releases them to paused
        (``ReleaseReplica(to_state=PAUSED)``), so that their last checkpoint is not lost.
        IllegalTransition when nothing is left to pause."""
        now = self._now()

        def step(row: ReplicaRow) -> Change | None:
            if row.replica.state not in {S.PENDING, S.RETRYING}:
                return None
            return changes.move(row, S.PAUSED, now=now, actor=actor, reason=reason)

        return await self._control(workload_id, S.PAUSED, step, actor, reason, ACTIVE)

    async def resume_workload(self, workload_id: str, actor: str, reason: str) -> Workload:
        now = self._now()

        def step(row: ReplicaRow) -> Change | None:
            if row.replica.state is not S.PAUSED:
                return None
            return changes.move(
                row, S.PENDING, now=now, actor=actor, reason=reason, enqueued_at=now, not_before=now
            )

        return await self._control(workload_id, S.PENDING, step, actor, reason)

    async def scale_workload(self, workload_id: str, replicas: int, actor: str) -> Workload:
        if not 1 <= replicas <= self._limits.max_replicas:
            raise InvalidInput(f"replicas must be within 1..{self._limits.max_replicas}")
        now = self._now()

        async def body(tx: Tx) -> Workload:
            batch = await self._load(tx, [workload_id])
            workload = await self._workload(tx, workload_id)
            if workload.mode is not Mode.CONTINUOUS:
                raise InvalidInput("only continuous workloads scale")
            rows = batch.of_workload(workload_id)
            live = [r for r in rows if r.replica.state not in TERMINAL]
            if not live:
                raise IllegalTransition(workload.state.value, S.PENDING.value)
            for row in sorted(live, key=lambda r: r.replica.index, reverse=True)[
                : max(0, len(live) - replicas)
            ]:
                batch.apply(changes.cancel(row, now=now, actor=actor, reason="scaled down"))
            await self._persist(tx, batch, now)
            added = max(0, replicas - len(live))
            if added:
                start = rows[-1].replica.index + 1
                await self._insert_replicas(tx, workload, range(start, start + added), now)
            states = [r.replica.state for r in batch.of_workload(workload_id)]
            state = workload_state([*states, *[S.PENDING] * added])
            await tx.execute(
                "UPDATE workloads SET replicas = $2, state = $3, updated_at = $4 WHERE id = $1",
                workload_id,
                replicas,
                state.value,
                now,
            )
            await tx.execute(
                INSERT_EVENT,
                *event_values(
                    Event(
                        id=0,
                        kind="workload.scaled",
                        at=now,
                        actor=actor,
                        workload_id=workload_id,
                        customer_id=workload.customer_id,
                        data={"from": len(live), "to": replicas},
                    )
                ),
            )
            return await self._workload(tx, workload_id)

        return await self._run(body)

    async def fail_stalled(self, key: ReplicaKey, fence: int, reason: str) -> Replica:
        now = self._now()

        async def body(tx: Tx) -> Replica:
            workload = await self._workload(tx, key.workload_id)
            wtype = await self._type(tx, workload.type_name, workload.type_version)
            batch = await self._load(tx, [key.workload_id])
            row = batch.get(key)
            if row is None:
                raise UnknownReplica(f"no replica {key}")
            changes.check_fence(row, fence)
            change = changes.stalled(row, wtype.retry, reason, now=now, actor="watchdog")
            replica = batch.apply(change)
            await self._persist(tx, batch, now)
            return replica

        return await self._run(body)

    # --- events and history --------------------------------------------------------------------

    async def append_event(self, event: Event) -> Event:
        stamped = event if event.at else replace(event, at=self._now())

        async def body(tx: Tx) -> Event:
            row = await tx.fetchrow(f"{INSERT_EVENT} RETURNING id", *event_values(stamped))
            assert row is not None
            return replace(stamped, id=int(row["id"]))

        return await self._run(body)

    async def list_events(self, query: EventQuery) -> list[Event]:
        args: list[object] = [query.after_id]
        conditions = ["id > $1"]
        for column, value in (
            ("workload_id", query.workload_id),
            ("customer_id", query.customer_id),
        ):
            if value is not None:
                args.append(value)
                conditions.append(f"{column} = ${len(args)}")
        if query.since is not None:
            args.append(query.since)
            conditions.append(f"at >= ${len(args)}")
        if query.kind_prefix:
            args += [len(query.kind_prefix), query.kind_prefix]
            conditions.append(f"substr(kind, 1, ${len(args) - 1}) = ${len(args)}")
        for key, value in query.extra.items():
            args += [key, value]
            conditions.append(self._json_field_equals("data", len(args) - 1, len(args)))
        args.append(max(1, min(query.limit, 10_000)))
        columns = "*" if query.with_data else EVENT_COLUMNS_BUT_DATA
        rows = await self._read(
            f"SELECT {columns} FROM events WHERE {' AND '.join(conditions)}"
            f" ORDER BY id LIMIT ${len(args)}",
            *args,
        )
        return [event_from_row(r, query.with_data) for r in rows]

    async def list_transitions(self, workload_id: str) -> list[Transition]:
        async def body(tx: Tx) -> list[Transition]:
            rows = await tx.fetch(
                "SELECT * FROM transitions WHERE workload_id = $1 ORDER BY id", workload_id
            )
            return [transition_from_row(r) for r in rows]

        return await self._snapshot(body)

    # --- autoscaling ---------------------------------------------------------------------------

    async def put_autoscale_policy(self, policy: AutoscalePolicy) -> AutoscalePolicy:
        if not 0 <= policy.min_replicas <= policy.max_replicas or policy.max_step < 1:
            raise InvalidInput("need 0 <= min_replicas <= max_replicas and max_step >= 1")

        async def body(tx: Tx) -> AutoscalePolicy:
            await self._customer(tx, policy.customer_id)
            await tx.execute(
                "INSERT INTO autoscale_policies (customer_id, type_name, min_replicas,"
                " max_replicas, metric, target, cooldown_s, max_step) VALUES ($1, $2, $3, $4, $5,"
                " $6, $7, $8) ON CONFLICT (customer_id, type_name) DO UPDATE SET"
                " min_replicas = excluded.min_replicas, max_replicas = excluded.max_replicas,"
                " metric = excluded.metric, target = excluded.target,"
                " cooldown_s = excluded.cooldown_s, max_step = excluded.max_step",
                policy.customer_id,
                policy.type_name,
                policy.min_replicas,
                policy.max_replicas,
                policy.metric,
                float(policy.target),
                float(policy.cooldown_s),
                policy.max_step,
            )
            return policy

        return await self._run(body)

    async def get_autoscale_policy(self, customer_id: str, type_name: str) -> AutoscalePolicy:
        async def body(tx: Tx) -> AutoscalePolicy:
            row = await tx.fetchrow(
                "SELECT * FROM autoscale_policies WHERE customer_id = $1 AND type_name = $2",
                customer_id,
                type_name,
            )
            if row is None:
                raise NotFound(f"no autoscaling policy for {customer_id}/{type_name}")
            return policy_from_row(row)

        return await self._snapshot(body)

    async def list_autoscale_policies(self) -> list[AutoscalePolicy]:
        async def body(tx: Tx) -> list[AutoscalePolicy]:
            rows = await tx.fetch(
                "SELECT * FROM autoscale_policies ORDER BY customer_id, type_name"
            )
            return [policy_from_row(r) for r in rows]

        return await self._snapshot(body)

    async def delete_autoscale_policy(self, customer_id: str, type_name: str) -> None:
        async def body(tx: Tx) -> None:
            rows = await tx.fetch(
                "DELETE FROM autoscale_policies WHERE customer_id = $1 AND type_name = $2"
                " RETURNING customer_id",
                customer_id,
                type_name,
            )
            if not rows:
                raise NotFound(f"no autoscaling policy for {customer_id}/{type_name}")

        await self._run(body)

    # --- coordinators and leadership -----------------------------------------------------------

    async def acquire_leadership(self, name: str, holder: str, ttl_s: float) -> LeaderLease | None:
        now = self._now()

        async def body(tx: Tx) -> LeaderLease | None:
            await tx.execute(
                "INSERT INTO leader_leases (name, holder, term, expires_at)"
                " VALUES ($1, '', 0, 0) ON CONFLICT DO NOTHING",
                name,
            )
            row = await tx.fetchrow(
                f"SELECT * FROM leader_leases WHERE name = $1{self.for_update}", name
            )
            assert row is not None
            live = row["expires_at"] > now
            if live and row["holder"] != holder:
                return None
            term = row["term"] if live else row["term"] + 1
            await tx.execute(
                "UPDATE leader_leases SET holder = $2, term = $3, expires_at = $4 WHERE name = $1",
                name,
                holder,
                term,
                now + ttl_s,
            )
            return LeaderLease(name, holder, term, now + ttl_s)

        return await self._run(body)

    async def resign_leadership(self, name: str, holder: str, term: int) -> None:
        async def body(tx: Tx) -> None:
            await tx.execute(
                "UPDATE leader_leases SET expires_at = 0 WHERE name = $1 AND holder = $2"
                " AND term = $3",
                name,
                holder,
                term,
            )

        await self._run(body)

    async def get_leader(self, name: str) -> LeaderLease | None:
        now = self._now()

        async def body(tx: Tx) -> LeaderLease | None:
            row = await tx.fetchrow("SELECT * FROM leader_leases WHERE name = $1", name)
            if row is None or row["expires_at"] <= now:
                return None
            return LeaderLease(row["name"], row["holder"], row["term"], row["expires_at"])

        return await self._snapshot(body)

    async def heartbeat_coordinator(self, info: CoordinatorInfo) -> None:
        seen = info.last_seen or self._now()

        async def body(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO coordinators (id, url, last_seen) VALUES ($1, $2, $3)"
                " ON CONFLICT (id) DO UPDATE SET url = excluded.url,"
                " last_seen = excluded.last_seen",
                info.id,
                info.url,
                seen,
            )

        await self._run(body)

    async def list_coordinators(self) -> list[CoordinatorInfo]:
        async def body(tx: Tx) -> list[CoordinatorInfo]:
            rows = await tx.fetch("SELECT * FROM coordinators ORDER BY id")
            return [CoordinatorInfo(r["id"], r["url"], r["last_seen"]) for r in rows]

        return await self._snapshot(body)


def _transition_values(t: Transition) -> tuple[object, ...]:
    return (
        t.workload_id,
        t.index,
        t.from_state.value,
        t.to_state.value,
        t.fence,
        t.at,
        t.actor,
        t.reason,
    )
