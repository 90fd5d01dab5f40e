"""The replica lifecycle as one explicit table of legal transitions, and its guard.

``pending -> scheduled -> running -> succeeded | failed | cancelled``, with ``running -> retrying
-> pending`` (transient error, backoff), ``scheduled|running -> pending`` (lease lost, preempted,
drained: reassigned with a new fence token), ``paused`` (by API) and ``failed`` at once for a
permanent error or exhausted retries. A workload's own state is derived from its replicas'.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from niyanta.errors import IllegalTransition


class ReplicaState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


WorkloadState = ReplicaState
"""A workload's state uses the same names; see ``workload_state()`` for how it is derived."""

S = ReplicaState

TRANSITIONS: dict[ReplicaState, frozenset[ReplicaState]] = {
    S.PENDING: frozenset({S.SCHEDULED, S.PAUSED, S.CANCELLED, S.FAILED}),
    S.SCHEDULED: frozenset({S.RUNNING, S.PENDING, S.PAUSED, S.CANCELLED, S.FAILED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED, S.RETRYING, S.PENDING, S.PAUSED}),
    S.RETRYING: frozenset({S.PENDING, S.PAUSED, S.CANCELLED, S.FAILED}),
    S.PAUSED: frozenset({S.PENDING, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}

TERMINAL: frozenset[ReplicaState] = frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED})
ACTIVE: frozenset[ReplicaState] = frozenset({S.SCHEDULED, S.RUNNING})
"""States in which a worker holds a lease on the replica."""


def can_transition(current: ReplicaState, target: ReplicaState) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: ReplicaState, target: ReplicaState) -> None:
    """Raise IllegalTransition unless ``current -> target`` is in the table."""
    if not can_transition(current, target):
        raise IllegalTransition(current.value, target.value)


def workload_state(replica_states: Iterable[ReplicaState]) -> ReplicaState:
    """Derive a workload's state from its replicas'.

    Any failed replica fails the workload once all are terminal; a workload with a running
    replica is running; all paused is paused; all succeeded is succeeded; all cancelled (or a mix
    of cancelled and succeeded) is cancelled.
    """
    states = list(replica_states)
    if not states:
        return S.CANCELLED
    if all(s in TERMINAL for s in states):
        if S.FAILED in states:
            return S.FAILED
        if all(s is S.SUCCEEDED for s in states):
            return S.SUCCEEDED
        return S.CANCELLED
    for candidate in (S.RUNNING, S.SCHEDULED, S.RETRYING, S.PENDING):
        if candidate in states:
            return candidate
    return S.PAUSED
