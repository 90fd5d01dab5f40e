"""Replica state changes computed in memory, before anything is written.

Every backend loads the replicas it will touch (locked), computes each change here (lifecycle
guard, fence check, field updates) and then writes all resulting rows at once. Judging a batch of
fenced writes in memory is what lets ``apply_writes`` commit hundreds of them with a handful of
statements while still judging each write on its own.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Any

from niyanta.errors import CheckpointSeqConflict, FencedOut, IllegalTransition, PayloadTooLarge
from niyanta.model import Checkpoint, ErrorClass, ErrorInfo, RetryPolicy, Transition
from niyanta.states import ACTIVE, ReplicaState, check_transition
from niyanta.store.base import (
    CompleteReplica,
    FailReplica,
    FencedWrite,
    MarkRunning,
    RecordProgress,
    ReleaseReplica,
    SaveCheckpoint,
    StoreLimits,
)
from niyanta.store.codec import ReplicaRow

S = ReplicaState


@dataclass(frozen=True, slots=True)
class Change:
    """One replica's row after a change, and what must be recorded with it. A transition is
    recorded twice, in the same transaction: as a ``transitions`` row and as a
    ``replica.<to_state>`` event (see ``Many.HISTORY``)."""

    after: ReplicaRow
    transition: Transition | None = None
    checkpoint: Checkpoint | None = None
    repeated: bool = False
    """A repeat of a write already applied: acknowledged, nothing written."""


def move(
    row: ReplicaRow,
    to: ReplicaState,
    *,
    now: float,
    actor: str,
    reason: str = "",
    bump_fence: bool = False,
    **fields: Any,
) -> Change:
    """Apply a lifecycle transition (IllegalTransition if the table forbids it)."""
    current = row.replica
    check_transition(current.state, to)
    fence = current.fence + 1 if bump_fence else current.fence
    after = replace(current, state=to, fence=fence, **fields)
    transition = Transition(
        workload_id=current.workload_id,
        index=current.index,
        from_state=current.state,
        to_state=to,
        fence=fence,
        at=now,
        actor=actor,
        reason=reason,
    )
    return Change(ReplicaRow(after, row.customer_id, row.checkpoint_fence), transition)


def assign(row: ReplicaRow, worker_id: str, lease_ttl_s: float, now: float) -> Change:
    """pending -> scheduled: a new fence token, a lease, and the checkpoint it resumes from."""
    r = row.replica
    return move(
        row,
        S.SCHEDULED,
        now=now,
        actor="scheduler",
        reason=f"placed on {worker_id}",
        bump_fence=True,
        worker_id=worker_id,
        lease_expires_at=now + lease_ttl_s,
        previous_worker=r.worker_id or r.previous_worker,
        resumed_from_seq=r.checkpoint_seq,
        progress=0.0 if r.checkpoint_seq == 0 else r.progress,
    )


def hand_back(row: ReplicaRow, to: ReplicaState, *, now: float, actor: str, reason: str) -> Change:
    """An active replica leaves its worker (lease lost, drained, preempted, paused, cancelled):
    new fence token, so that anything the old holder still sends is refused."""
    r = row.replica
    fields: dict[str, Any] = {
        "worker_id": None,
        "lease_expires_at": None,
        "previous_worker": r.worker_id,
    }
    if to is S.PENDING:
        fields["enqueued_at"] = now
        fields["not_before"] = now
    if to is S.CANCELLED:
        fields["finished_at"] = now
    return move(row, to, now=now, actor=actor, reason=reason, bump_fence=True, **fields)


def cancel(row: ReplicaRow, *, now: float, actor: str, reason: str) -> Change:
    if row.replica.state in ACTIVE:
        return hand_back(row, S.CANCELLED, now=now, actor=actor, reason=reason)
    return move(row, S.CANCELLED, now=now, actor=actor, reason=reason, finished_at=now)


def requeue(row: ReplicaRow, *, now: float, actor: str, reason: str) -> Change:
    """pending again, placeable at once (resumed, retried after backoff)."""
    if row.replica.state in ACTIVE:
        return hand_back(row, S.PENDING, now=now, actor=actor, reason=reason)
    return move(row, S.PENDING, now=now, actor=actor, reason=reason, enqueued_at=now)


def fail_attempt(
    row: ReplicaRow,
    error: ErrorInfo,
    retry_at: float | None,
    *,
    now: float,
    actor: str,
    bump_fence: bool = False,
) -> Change:
    """-> retrying (attempt + 1, placeable from ``retry_at``) or -> failed."""
    r = row.replica
    released = {"worker_id": None, "lease_expires_at": None, "previous_worker": r.worker_id}
    if retry_at is None:
        return move(
            row,
            S.FAILED,
            now=now,
            actor=actor,
            reason=error.message,
            bump_fence=bump_fence,
            error=error,
            finished_at=now,
            lease_expires_at=None,
        )
    return move(
        row,
        S.RETRYING,
        now=now,
        actor=actor,
        reason=error.message,
        bump_fence=bump_fence,
        error=error,
        attempt=r.attempt + 1,
        not_before=retry_at,
        **released,
    )


def backoff_s(policy: RetryPolicy, attempt: int) -> float:
    """Exponential backoff with jitter before attempt ``attempt + 1``."""
    base = min(policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier ** (attempt - 1))
    return max(0.0, base * (1.0 + random.uniform(-policy.jitter, policy.jitter)))


def stalled(row: ReplicaRow, policy: RetryPolicy, reason: str, *, now: float, actor: str) -> Change:
    """The checkpoint watchdog fails the attempt: retry if attempts remain. New fence either way."""
    error = ErrorInfo(ErrorClass.STALLED, reason)
    attempt = row.replica.attempt
    retry_at = now + backoff_s(policy, attempt) if attempt < policy.max_attempts else None
    return fail_attempt(row, error, retry_at, now=now, actor=actor, bump_fence=True)


def check_fence(row: ReplicaRow, fence: int) -> None:
    r = row.replica
    if fence != r.fence:
        raise FencedOut(r.workload_id, r.index, fence, r.fence)


def _require_active(row: ReplicaRow, what: str) -> None:
    state = row.replica.state
    if state not in ACTIVE:
        raise IllegalTransition(
            state.value, state.value, f"{what} refused: replica {row.replica.key} is {state.value}"
        )


def unchanged(row: ReplicaRow) -> Change:
    """A repeat of a write already applied (its first delivery committed, but its sender never
    heard so and sent it again): acknowledged, nothing written, nothing recorded twice."""
    return Change(row, repeated=True)


def implied_start(write: FencedWrite, row: ReplicaRow, now: float) -> Change | None:
    """A result or failure at the current fence of a replica still ``scheduled`` proves that
    its holder started it (its ``Started`` write was lost, e.g. to a store fault): the replica
    moves to running first, so that the result is recorded rather than refused."""
    r = row.replica
    if not isinstance(write, CompleteReplica | FailReplica) or r.state is not S.SCHEDULED:
        return None
    if write.fence != r.fence:
        return None
    actor = f"worker:{r.worker_id}" if r.worker_id else "coordinator"
    return move(row, S.RUNNING, now=now, actor=actor, reason="started (implied)", started_at=now)


def judge(write: FencedWrite, row: ReplicaRow, now: float, limits: StoreLimits) -> Change:
    """The effect of one fenced write on ``row``, or the typed error that refuses it. A write at
    the current fence that was already applied (a retry after a lost acknowledgement) is
    recognised and changes nothing: a worker holds one fence for one attempt, so the same fence
    can start, complete or fail a replica only once (a repeat must also carry the same result or
    error: a different one is refused)."""
    if _released_already(write, row):
        return unchanged(row)
    check_fence(row, write.fence)
    r = row.replica
    actor = f"worker:{r.worker_id}" if r.worker_id else "coordinator"
    match write:
        case MarkRunning():
            if write.worker_id != r.worker_id and r.state in ACTIVE:
                # The token matches but another worker presents it: not the lease holder.
                raise FencedOut(r.workload_id, r.index, write.fence, r.fence)
            if r.state is not S.SCHEDULED and r.started_at is not None:
                return unchanged(row)  # started already (or finished since) at this fence
            check_transition(r.state, S.RUNNING)
            return move(row, S.RUNNING, now=now, actor=actor, reason="started", started_at=now)
        case RecordProgress():
            _require_active(row, "progress")
            progress = min(1.0, max(0.0, float(write.progress)))
            return Change(replace(row, replica=replace(r, progress=progress)))
        case SaveCheckpoint():
            return _checkpoint(write, row, now, limits)
        case CompleteReplica():
            if r.state is S.SUCCEEDED and r.result == write.result:
                return unchanged(row)
            return move(
                row,
                S.SUCCEEDED,
                now=now,
                actor=actor,
                reason="completed",
                result=write.result,
                finished_at=now,
                lease_expires_at=None,
                progress=1.0,
            )
        case FailReplica():
            failed_already = r.state in {S.RETRYING, S.FAILED} or (
                r.state is S.PENDING and r.error is not None  # retrying, and due again
            )
            if failed_already and _same_error(r.error, write.error):
                return unchanged(row)
            return fail_attempt(row, write.error, write.retry_at, now=now, actor=actor)
        case ReleaseReplica():
            _require_active(row, "release")
            if write.to_state not in {S.PENDING, S.PAUSED, S.CANCELLED}:
                raise IllegalTransition(r.state.value, write.to_state.value)
            return hand_back(row, write.to_state, now=now, actor=actor, reason=write.reason)


def _released_already(write: FencedWrite, row: ReplicaRow) -> bool:
    """A release repeated after it committed: the release itself moved the token one on and
    left the replica, unheld, in the state the release asked for."""
    r = row.replica
    return (
        isinstance(write, ReleaseReplica)
        and r.fence == write.fence + 1
        and r.state is write.to_state
        and r.worker_id is None
    )


def _same_error(recorded: ErrorInfo | None, reported: ErrorInfo) -> bool:
    return recorded is not None and (recorded.error_class, recorded.message) == (
        reported.error_class,
        reported.message,
    )


def _checkpoint(write: SaveCheckpoint, row: ReplicaRow, now: float, limits: StoreLimits) -> Change:
    r = row.replica
    _require_active(row, "checkpoint")
    if len(write.data) > limits.max_checkpoint_bytes:
        raise PayloadTooLarge(
            f"checkpoint of {len(write.data)} bytes exceeds {limits.max_checkpoint_bytes}"
        )
    if write.seq == r.checkpoint_seq and write.fence == row.checkpoint_fence and write.seq > 0:
        # A repeated delivery of the checkpoint already committed: acknowledge, write nothing.
        existing = Checkpoint(r.workload_id, r.index, write.seq, write.fence, write.data, now)
        return Change(
            row,
            checkpoint=replace(existing, created_at=r.checkpoint_at or now),
            repeated=True,
        )
    if write.seq <= r.checkpoint_seq:
        raise CheckpointSeqConflict(
            f"checkpoint seq {write.seq} of {r.key} does not advance past {r.checkpoint_seq}"
        )
    checkpoint = Checkpoint(r.workload_id, r.index, write.seq, write.fence, write.data, now)
    after = replace(r, checkpoint_seq=write.seq, checkpoint_at=now)
    return Change(replace(row, replica=after, checkpoint_fence=write.fence), checkpoint=checkpoint)
