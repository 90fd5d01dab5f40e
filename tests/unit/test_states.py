"""The lifecycle table and its guard (pure)."""

from __future__ import annotations

import itertools

import pytest

from niyanta.errors import IllegalTransition
from niyanta.states import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    ReplicaState,
    can_transition,
    check_transition,
    workload_state,
)

S = ReplicaState

LEGAL = {
    (S.PENDING, S.SCHEDULED),
    (S.PENDING, S.PAUSED),
    (S.PENDING, S.CANCELLED),
    (S.PENDING, S.FAILED),
    (S.SCHEDULED, S.RUNNING),
    (S.SCHEDULED, S.PENDING),
    (S.SCHEDULED, S.PAUSED),
    (S.SCHEDULED, S.CANCELLED),
    (S.SCHEDULED, S.FAILED),
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.CANCELLED),
    (S.RUNNING, S.RETRYING),
    (S.RUNNING, S.PENDING),
    (S.RUNNING, S.PAUSED),
    (S.RETRYING, S.PENDING),
    (S.RETRYING, S.PAUSED),
    (S.RETRYING, S.CANCELLED),
    (S.RETRYING, S.FAILED),
    (S.PAUSED, S.PENDING),
    (S.PAUSED, S.CANCELLED),
}
"""The lifecycle of DESIGN.md, written out pair by pair."""


@pytest.mark.parametrize(("current", "target"), list(itertools.product(S, S)))
def test_every_pair_follows_the_lifecycle(current: ReplicaState, target: ReplicaState) -> None:
    if (current, target) in LEGAL:
        assert can_transition(current, target)
        check_transition(current, target)
    else:
        assert not can_transition(current, target)
        with pytest.raises(IllegalTransition) as raised:
            check_transition(current, target)
        assert (raised.value.current, raised.value.target) == (current.value, target.value)
        assert raised.value.http_status == 409


def test_terminal_states_have_no_exit_and_every_state_is_in_the_table() -> None:
    assert set(TRANSITIONS) == set(S)
    assert {s for s in S if not TRANSITIONS[s]} == TERMINAL
    assert {S.SCHEDULED, S.RUNNING} == ACTIVE


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        ([], S.CANCELLED),
        ([S.SUCCEEDED, S.SUCCEEDED], S.SUCCEEDED),
        ([S.SUCCEEDED, S.FAILED], S.FAILED),
        ([S.SUCCEEDED, S.CANCELLED], S.CANCELLED),
        ([S.RUNNING, S.PENDING, S.PAUSED], S.RUNNING),
        ([S.SCHEDULED, S.PENDING], S.SCHEDULED),
        ([S.RETRYING, S.PENDING, S.SUCCEEDED], S.RETRYING),
        ([S.PENDING, S.FAILED], S.PENDING),
        ([S.PAUSED, S.PAUSED], S.PAUSED),
        ([S.PAUSED, S.CANCELLED], S.PAUSED),
    ],
)
def test_workload_state_is_derived_from_replicas(
    replicas: list[ReplicaState], expected: ReplicaState
) -> None:
    assert workload_state(replicas) is expected
