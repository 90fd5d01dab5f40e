"""Choosing victims when a replica that may preempt finds no free capacity.

Only running replicas of a strictly lower tier are candidates. On each worker that passes the
replica's hard filters we look for the fewest victims whose release makes the replica fit; among
sets of that size the first in preference order wins (lowest tier, then youngest checkpoint, so
the least work is redone). Across workers: fewest victims, then lowest victim tiers, then worker
id. Every chosen set is minimal: dropping any victim would leave the replica not fitting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import combinations
from math import comb

from niyanta.scheduler.types import RunningReplica

EPSILON = 1e-9
EXACT_SEARCH_LIMIT = 2_000
"""Most victim sets of one size tried exhaustively; beyond it a greedy pick is pruned."""

VictimKey = tuple[int, float, tuple[str, int]]


def victim_order(
    priority_of: Callable[[str], int],
) -> Callable[[RunningReplica], VictimKey]:
    """Sort key: lowest tier first, then most recent checkpoint first (never checkpointed
    last), then by key."""

    def key(replica: RunningReplica) -> VictimKey:
        checkpoint = replica.last_checkpoint_at
        recency = float("inf") if checkpoint is None else -checkpoint
        return (priority_of(replica.tier), recency, (replica.key.workload_id, replica.key.index))

    return key


def fewest_victims(
    candidates: Sequence[RunningReplica], slots: int, cpu: float, memory: float
) -> tuple[RunningReplica, ...] | None:
    """The smallest set (first in ``candidates`` order) that frees ``slots``, ``cpu`` and
    ``memory``; None when even all of them would not."""

    def frees_enough(chosen: Iterable[RunningReplica]) -> bool:
        chosen = tuple(chosen)
        return (
            len(chosen) >= slots
            and sum(r.resources.cpu for r in chosen) >= cpu - EPSILON
            and sum(r.resources.memory_mb for r in chosen) >= memory - EPSILON
        )

    if not frees_enough(candidates):
        return None
    smallest = max(
        1,
        slots,
        _count_to_cover(sorted((r.resources.cpu for r in candidates), reverse=True), cpu),
        _count_to_cover(sorted((r.resources.memory_mb for r in candidates), reverse=True), memory),
    )
    for size in range(smallest, len(candidates) + 1):
        if comb(len(candidates), size) > EXACT_SEARCH_LIMIT:
            return _greedy_then_pruned(candidates, frees_enough)
        for chosen in combinations(candidates, size):
            if frees_enough(chosen):
                return chosen
    return None  # unreachable: all candidates free enough


def _count_to_cover(largest_first: Sequence[float], amount: float) -> int:
    total = 0.0
    for count, value in enumerate(largest_first):
        if total >= amount - EPSILON:
            return count
        total += value
    return len(largest_first)


def _greedy_then_pruned(
    candidates: Sequence[RunningReplica],
    frees_enough: Callable[[Iterable[RunningReplica]], bool],
) -> tuple[RunningReplica, ...]:
    chosen: list[RunningReplica] = []
    for replica in candidates:
        chosen.append(replica)
        if frees_enough(chosen):
            break
    for replica in reversed(list(chosen)):
        rest = [r for r in chosen if r is not replica]
        if frees_enough(rest):
            chosen = rest
    return tuple(chosen)


def victims_rank(
    victims: Sequence[RunningReplica], priority_of: Callable[[str], int], worker_index: int
) -> tuple[int, tuple[int, ...], int]:
    """Smaller is better: fewer victims, then lower tiers, then worker id order."""
    priorities = tuple(sorted((priority_of(v.tier) for v in victims), reverse=True))
    return (len(victims), priorities, worker_index)
