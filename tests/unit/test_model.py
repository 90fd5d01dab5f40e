"""Domain model behaviour other parts rely on (pure)."""

from __future__ import annotations

import pytest

from niyanta.model import DEFAULT_TIERS, LabelSelector, Replica, ReplicaKey, SelectorOp
from niyanta.states import ReplicaState

LABELS = {"gpu": "true", "zone": "a"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        (LabelSelector("gpu", SelectorOp.EQ, ("true",)), True),
        (LabelSelector("gpu", SelectorOp.EQ, ("false",)), False),
        (LabelSelector("zone", SelectorOp.IN, ("a", "b")), True),
        (LabelSelector("zone", SelectorOp.IN, ("c",)), False),
        (LabelSelector("zone", SelectorOp.NOT_IN, ("c",)), True),
        (LabelSelector("zone", SelectorOp.NOT_IN, ("a",)), False),
        (LabelSelector("pool", SelectorOp.NOT_IN, ("x",)), True),
        (LabelSelector("gpu", SelectorOp.NE, ("true",)), False),
        (LabelSelector("pool", SelectorOp.NE, ("x",)), True),
        (LabelSelector("gpu", SelectorOp.EXISTS), True),
        (LabelSelector("pool", SelectorOp.EXISTS), False),
        (LabelSelector("pool", SelectorOp.DOES_NOT_EXIST), True),
        (LabelSelector("gpu", SelectorOp.DOES_NOT_EXIST), False),
        (LabelSelector("pool", SelectorOp.IN, ("x",)), False),
    ],
)
def test_label_selectors(selector: LabelSelector, matches: bool) -> None:
    assert selector.matches(LABELS) is matches


def test_replica_key_addresses_and_prints_as_workload_slash_index() -> None:
    replica = Replica("w-1", 3, ReplicaState.PENDING, fence=0, attempt=1)
    assert replica.key == ReplicaKey("w-1", 3)
    assert str(replica.key) == "w-1/3"


def test_default_tiers_are_ordered_by_priority_and_only_upper_tiers_preempt() -> None:
    priorities = [t.priority for t in DEFAULT_TIERS]
    assert priorities == sorted(priorities, reverse=True)
    assert len({t.name for t in DEFAULT_TIERS}) == len(DEFAULT_TIERS)
    assert [t.name for t in DEFAULT_TIERS if t.may_preempt] == ["platinum", "gold"]
