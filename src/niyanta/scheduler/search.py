"""Finding the best feasible worker for one replica (filters, then score), without scanning.

The best worker of a shape is the top of its best candidate group's heap; it is checked
against the replica's own constraints (resources, anti-affinity, spread). Only when it fails do
we walk further down, class by class in heap order, stopping as soon as no class can beat the
best found. Requests that fit nowhere are remembered per class and per shape: free capacity
only shrinks within a round, so a bigger request fails there too.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from enum import IntEnum

from niyanta.scheduler.cluster import (
    SPREAD_BY_WORKER,
    CandidateGroup,
    ClassEntry,
    Cluster,
    Shape,
    WorkerClass,
    WorkerEntry,
)
from niyanta.scheduler.scoring import STICKINESS
from niyanta.scheduler.types import PendingReplica

EPSILON = 1e-9
"""Slack for float sums of cpu requests."""


class Miss(IntEnum):
    """Why no worker was found, most telling last (a blocked fit says more than no fit)."""

    NO_FIT = 1
    SPREAD = 2
    ANTI_AFFINITY = 3


@dataclass(slots=True)
class Need:
    """One replica's request and its replica-specific constraints, resolved against a cluster."""

    cpu: float
    memory: float
    anti: tuple[set[int], ...]
    """Workers running something this replica must not sit beside, one set per selector."""
    spread_workers: set[object] | None
    """Workers already running a replica of this workload (spread by worker)."""
    topology_key: str | None
    topology_used: set[object] | None
    """Topology values already holding a replica of this workload."""
    previous: int | None
    """Index of the previous worker (stickiness)."""

    @property
    def simple(self) -> bool:
        return not self.anti and self.spread_workers is None and self.topology_key is None


def build_need(cluster: Cluster, replica: PendingReplica) -> Need:
    affinity, resources, previous = replica.affinity, replica.resources, replica.previous_worker
    previous_index = None if previous is None else cluster.index.get(previous)
    spread = affinity.spread
    if spread is None and not affinity.anti:
        return Need(resources.cpu, resources.memory_mb, (), None, None, None, previous_index)
    anti = tuple(cluster.anti_blocked[s] for s in affinity.anti)
    if spread is None:
        return Need(resources.cpu, resources.memory_mb, anti, None, None, None, previous_index)
    used = cluster.spread_used[(replica.key.workload_id, spread)]
    if spread == SPREAD_BY_WORKER:
        return Need(resources.cpu, resources.memory_mb, anti, used, None, None, previous_index)
    return Need(resources.cpu, resources.memory_mb, anti, None, spread, used, previous_index)


def worker_allows(cluster: Cluster, i: int, need: Need) -> Miss | None:
    """None when worker ``i`` (with a free slot) takes ``need``; else why not."""
    if cluster.free_cpu[i] < need.cpu - EPSILON or cluster.free_memory[i] < need.memory - EPSILON:
        return Miss.NO_FIT
    if need.anti and any(i in blocked for blocked in need.anti):
        return Miss.ANTI_AFFINITY
    if need.spread_workers is not None and i in need.spread_workers:
        return Miss.SPREAD
    if need.topology_key is not None:
        value = cluster.views[i].labels.get(need.topology_key)
        if value is None or need.topology_used is None or value in need.topology_used:
            return Miss.SPREAD
    return None


def find_worker(cluster: Cluster, shape: Shape, need: Need) -> int | Miss:
    """Index of the best worker for ``need`` in ``shape``, or why there is none."""
    if cluster.free_slot_total <= 0 or (
        shape.failed_needs and _dominates(need, shape.failed_needs)
    ):
        return Miss.NO_FIT
    sticky = None if need.previous is None else _sticky(cluster, shape, need, need.previous)
    miss = Miss.NO_FIT
    for group in shape.groups:
        if sticky is not None and sticky[0] > group.score:
            return sticky[1][1]
        found, why = _best_in_group(cluster, group, need)
        if found is not None:
            if sticky is not None and sticky[0] == group.score and sticky[1] <= found:
                return sticky[1][1]
            return found[1]
        miss = max(miss, why)
    if sticky is not None:
        return sticky[1][1]
    if miss is Miss.NO_FIT and need.simple:
        shape.failed_needs.append((need.cpu, need.memory))
    return miss


def _dominates(need: Need, failed: list[tuple[float, float]]) -> bool:
    return any(need.cpu >= cpu and need.memory >= memory for cpu, memory in failed)


def _sticky(cluster: Cluster, shape: Shape, need: Need, i: int) -> tuple[int, WorkerEntry] | None:
    key = cluster.key[i]
    score = shape.score_of.get(cluster.class_of[i])
    if key is None or score is None or worker_allows(cluster, i, need) is not None:
        return None
    return score + STICKINESS, (key, i)


def _best_in_group(
    cluster: Cluster, group: CandidateGroup, need: Need
) -> tuple[WorkerEntry | None, Miss]:
    heap, classes = group.heap, cluster.classes
    best: WorkerEntry | None = None
    miss = Miss.NO_FIT
    set_aside: list[ClassEntry] = []
    while heap:
        key, i, c = heap[0]
        cls = classes[c]
        top = cls.top
        if top is None or top[1] != i or top[0] != key:
            if top is not None and top > (key, i):
                heapq.heapreplace(heap, (top[0], top[1], c))
            else:
                heapq.heappop(heap)
            continue
        if best is not None and top >= best:
            break
        if need.topology_key is not None:
            value = cls.labels.get(need.topology_key)
            if value is None or need.topology_used is None or value in need.topology_used:
                miss = max(miss, Miss.SPREAD)
                set_aside.append(heapq.heappop(heap))
                continue
        if not cls.failed_needs and worker_allows(cluster, i, need) is None:
            best = top  # the best worker of the best remaining class: nothing left beats it
            break
        found, why = _best_in_class(cluster, cls, need)
        if found == top:
            best = found
            break
        miss = max(miss, why)
        set_aside.append(heapq.heappop(heap))
        if found is not None and (best is None or found < best):
            best = found
    for entry in set_aside:
        heapq.heappush(heap, entry)
    return best, miss


def _best_in_class(
    cluster: Cluster, cls: WorkerClass, need: Need
) -> tuple[WorkerEntry | None, Miss]:
    if cls.failed_needs and _dominates(need, cls.failed_needs):
        return None, Miss.NO_FIT
    heap, keys = cls.heap, cluster.key
    set_aside: list[WorkerEntry] = []
    found: WorkerEntry | None = None
    miss = Miss.NO_FIT
    any_fit = False
    while heap:
        entry = heapq.heappop(heap)
        if keys[entry[1]] != entry[0]:
            continue
        set_aside.append(entry)
        why = worker_allows(cluster, entry[1], need)
        if why is None:
            found = entry
            break
        if why is not Miss.NO_FIT:
            any_fit = True
            miss = max(miss, why)
    for entry in set_aside:
        heapq.heappush(heap, entry)
    if found is None and not any_fit:
        cls.failed_needs.append((need.cpu, need.memory))
    return found, miss
