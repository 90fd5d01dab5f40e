"""Rows <-> domain objects, shared by both SQL backends.

Nested values (affinity, params, labels, errors, type policies) are stored as canonical JSON text
so that the two backends use one codec and one schema shape.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from niyanta.model import (
    JSON,
    Affinity,
    AutoscalePolicy,
    CheckpointPolicy,
    Customer,
    ErrorClass,
    ErrorInfo,
    Event,
    Isolation,
    LabelSelector,
    Mode,
    PreferredSelector,
    Replica,
    Resources,
    RetryPolicy,
    SelectorOp,
    SloTargets,
    Tier,
    Transition,
    Workload,
    WorkloadSpec,
    WorkloadType,
)
from niyanta.states import ReplicaState


class Row(Protocol):
    """A result row addressed by column name (asyncpg.Record, sqlite3.Row)."""

    def __getitem__(self, key: str) -> Any: ...


def dumps(value: JSON) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def loads(text: str) -> Any:
    return json.loads(text)


def encode_affinity(affinity: Affinity) -> str:
    return dumps(asdict(affinity))


def _selector(raw: dict[str, Any]) -> LabelSelector:
    return LabelSelector(raw["key"], SelectorOp(raw["op"]), tuple(raw["values"]))


def decode_affinity(text: str) -> Affinity:
    raw = loads(text)
    return Affinity(
        required=tuple(_selector(s) for s in raw["required"]),
        worker=raw["worker"],
        preferred=tuple(
            PreferredSelector(_selector(p["selector"]), p["weight"]) for p in raw["preferred"]
        ),
        anti=tuple(_selector(s) for s in raw["anti"]),
        spread=raw["spread"],
    )


def spec_digest(spec: WorkloadSpec) -> str:
    """What makes two submits with one idempotency key "the same": every field of the spec."""
    body = asdict(spec)
    del body["traceparent"]  # each request has its own trace; the spec is the same
    return hashlib.sha256(dumps(body).encode()).hexdigest()


def encode_error(error: ErrorInfo | None) -> str | None:
    if error is None:
        return None
    return dumps(
        {
            "error_class": error.error_class.value,
            "message": error.message,
            "failed_items": list(error.failed_items),
        }
    )


def decode_error(text: str | None) -> ErrorInfo | None:
    if text is None:
        return None
    raw = loads(text)
    return ErrorInfo(ErrorClass(raw["error_class"]), raw["message"], tuple(raw["failed_items"]))


def encode_type(wtype: WorkloadType) -> str:
    """Everything but the registration time: equal text means equal content."""
    body = asdict(wtype)
    del body["created_at"]
    return dumps(body)


def decode_type(text: str, created_at: float) -> WorkloadType:
    raw = loads(text)
    return WorkloadType(
        name=raw["name"],
        version=raw["version"],
        entrypoint=raw["entrypoint"],
        resources=Resources(**raw["resources"]),
        retry=RetryPolicy(**raw["retry"]),
        checkpoint=CheckpointPolicy(**raw["checkpoint"]),
        timeout_s=raw["timeout_s"],
        isolation=Isolation(raw["isolation"]),
        created_at=created_at,
    )


def tier_values(tier: Tier) -> tuple[object, ...]:
    return (
        tier.name,
        tier.priority,
        float(tier.weight),
        tier.guaranteed_slots,
        tier.concurrency_cap,
        int(tier.may_preempt),
        dumps(asdict(tier.slo)),
        float(tier.guaranteed_cpu),
        tier.guaranteed_memory_mb,
        float(tier.guarantee_linger_s),
    )


def tier_from_row(row: Row) -> Tier:
    return Tier(
        name=row["name"],
        priority=row["priority"],
        weight=row["weight"],
        guaranteed_slots=row["guaranteed_slots"],
        concurrency_cap=row["concurrency_cap"],
        may_preempt=bool(row["may_preempt"]),
        slo=SloTargets(**loads(row["slo"])),
        guaranteed_cpu=row["guaranteed_cpu"],
        guaranteed_memory_mb=row["guaranteed_memory_mb"],
        guarantee_linger_s=row["guarantee_linger_s"],
    )


def customer_from_row(row: Row) -> Customer:
    return Customer(
        id=row["id"],
        tier=row["tier"],
        name=row["name"],
        weight=row["weight"],
        concurrency_cap=row["concurrency_cap"],
        alert_thresholds=loads(row["alert_thresholds"]),
        created_at=row["created_at"],
    )


def workload_from_row(row: Row) -> Workload:
    return Workload(
        id=row["id"],
        customer_id=row["customer_id"],
        type_name=row["type_name"],
        type_version=row["type_version"],
        params=loads(row["params"]),
        mode=Mode(row["mode"]),
        replicas=row["replicas"],
        affinity=decode_affinity(row["affinity"]),
        priority=row["priority"],
        idempotency_key=row["idempotency_key"],
        labels=loads(row["labels"]),
        state=ReplicaState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        traceparent=row["traceparent"],
    )


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    """A replica as stored: the domain object plus the columns only the store needs."""

    replica: Replica
    customer_id: str
    checkpoint_fence: int
    """Fence of the writer of the last checkpoint (makes a repeated SaveCheckpoint idempotent)."""


REPLICA_COLUMNS = (
    "workload_id",
    "idx",
    "customer_id",
    "state",
    "fence",
    "attempt",
    "worker_id",
    "lease_expires_at",
    "previous_worker",
    "enqueued_at",
    "not_before",
    "started_at",
    "finished_at",
    "progress",
    "checkpoint_seq",
    "checkpoint_fence",
    "checkpoint_at",
    "result",
    "error",
    "resumed_from_seq",
)


def replica_values(row: ReplicaRow) -> tuple[object, ...]:
    """Values in REPLICA_COLUMNS order."""
    r = row.replica
    return (
        r.workload_id,
        r.index,
        row.customer_id,
        r.state.value,
        r.fence,
        r.attempt,
        r.worker_id,
        r.lease_expires_at,
        r.previous_worker,
        r.enqueued_at,
        r.not_before,
        r.started_at,
        r.finished_at,
        float(r.progress),
        r.checkpoint_seq,
        row.checkpoint_fence,
        r.checkpoint_at,
        None if r.result is None else dumps(r.result),
        encode_error(r.error),
        r.resumed_from_seq,
    )


def replica_from_row(row: Row) -> ReplicaRow:
    result = row["result"]
    return ReplicaRow(
        replica=Replica(
            workload_id=row["workload_id"],
            index=row["idx"],
            state=ReplicaState(row["state"]),
            fence=row["fence"],
            attempt=row["attempt"],
            worker_id=row["worker_id"],
            lease_expires_at=row["lease_expires_at"],
            previous_worker=row["previous_worker"],
            enqueued_at=row["enqueued_at"],
            not_before=row["not_before"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            progress=row["progress"],
            checkpoint_seq=row["checkpoint_seq"],
            checkpoint_at=row["checkpoint_at"],
            result=None if result is None else loads(result),
            error=decode_error(row["error"]),
            resumed_from_seq=row["resumed_from_seq"],
        ),
        customer_id=row["customer_id"],
        checkpoint_fence=row["checkpoint_fence"],
    )


EVENT_COLUMNS_BUT_DATA = (
    "id, kind, at, actor, workload_id, idx, customer_id, correlation_id, reason"
)


def event_from_row(row: Row, with_data: bool = True) -> Event:
    """An event from its row (``EVENT_COLUMNS_BUT_DATA`` alone when not ``with_data``)."""
    return Event(
        id=row["id"],
        kind=row["kind"],
        at=row["at"],
        actor=row["actor"],
        workload_id=row["workload_id"],
        index=row["idx"],
        customer_id=row["customer_id"],
        correlation_id=row["correlation_id"],
        reason=row["reason"],
        data=loads(row["data"]) if with_data else {},
    )


def event_values(event: Event) -> tuple[object, ...]:
    """Values for (kind, at, actor, workload_id, idx, customer_id, correlation_id, reason, data)."""
    return (
        event.kind,
        event.at,
        event.actor,
        event.workload_id,
        event.index,
        event.customer_id,
        event.correlation_id,
        event.reason,
        dumps(dict(event.data)),
    )


def transition_from_row(row: Row) -> Transition:
    return Transition(
        workload_id=row["workload_id"],
        index=row["idx"],
        from_state=ReplicaState(row["from_state"]),
        to_state=ReplicaState(row["to_state"]),
        fence=row["fence"],
        at=row["at"],
        actor=row["actor"],
        reason=row["reason"],
    )


def policy_from_row(row: Row) -> AutoscalePolicy:
    return AutoscalePolicy(
        customer_id=row["customer_id"],
        type_name=row["type_name"],
        min_replicas=row["min_replicas"],
        max_replicas=row["max_replicas"],
        metric=row["metric"],
        target=row["target"],
        cooldown_s=row["cooldown_s"],
        max_step=row["max_step"],
    )
