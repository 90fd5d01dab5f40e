"""Two rounds side by side never give the same capacity twice: what one has decided, the other
counts as running until it can read it from the store."""

from __future__ import annotations

from niyanta.coordinator.placement_claims import PlacementClaims
from niyanta.model import ReplicaKey, Resources
from niyanta.scheduler.types import RunningReplica


def placed(name: str, worker: str = "w1") -> RunningReplica:
    return RunningReplica(ReplicaKey(name, 0), "acme", "gold", worker, Resources())


def test_a_round_counts_what_a_round_beside_it_decided_until_it_could_read_it() -> None:
    claims = PlacementClaims()
    regular = claims.open_round()
    express = claims.open_round()
    claims.claim([placed("a")])
    assert claims.unseen_by(express) == [placed("a")]
    assert claims.claimed() == {ReplicaKey("a", 0)}
    claims.settle([ReplicaKey("a", 0)], [ReplicaKey("a", 0)])
    claims.close_round(regular)
    # Committed, but the express round may have read the active replicas before the commit.
    assert claims.unseen_by(express) == [placed("a")]
    later = claims.open_round()
    assert claims.unseen_by(later) == []  # it reads the store after the commit
    claims.close_round(express)
    claims.close_round(later)
    assert len(claims) == 0


def test_a_refused_or_failed_assignment_frees_its_claim_at_once() -> None:
    claims = PlacementClaims()
    regular = claims.open_round()
    beside = claims.open_round()
    claims.claim([placed("a"), placed("b")])
    claims.settle([ReplicaKey("a", 0), ReplicaKey("b", 0)], [ReplicaKey("b", 0)])
    assert claims.unseen_by(beside) == [placed("b")]
    assert claims.claimed() == {ReplicaKey("b", 0)}
    claims.close_round(regular)
    claims.close_round(beside)
    assert claims.claimed() == frozenset()


def test_claims_made_while_no_other_round_is_open_go_with_the_round() -> None:
    claims = PlacementClaims()
    only = claims.open_round()
    claims.claim([placed("a")])
    claims.settle([ReplicaKey("a", 0)], [ReplicaKey("a", 0)])
    claims.close_round(only)
    assert len(claims) == 0
