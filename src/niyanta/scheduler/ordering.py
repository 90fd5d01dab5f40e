"""Who goes first: tier priority, aging, workload priority, weighted fair share (WF2Q).

Replicas are served in *bands*, one per tier from the highest priority down. Every ``aging_s``
seconds a replica has waited lifts it one band, so a low tier is never starved forever. Within a
band, customers take turns by worst-case fair weighted fair queueing (WF2Q): a customer's
*start tag* is (replicas it holds) / weight; among customers whose start tag is not ahead of the
band's virtual time, the one with the smallest finish tag (start + 1/weight) goes next. Unlike
plain weighted fair queueing, a heavy customer cannot run ahead of its share, so after every
placement each busy customer's count is within one replica of its weighted share. Within a
customer, replicas go by workload priority, then by age.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping

from niyanta.model import Tier
from niyanta.scheduler.types import PendingReplica

EPSILON = 1e-9
MIN_WEIGHT = 1e-6
"""Weights at or below zero are treated as this, so the customer still progresses last."""


def tier_ranks(tiers: Mapping[str, Tier]) -> dict[str, int]:
    """0 for the highest priority tier, 1 for the next, ... (ties by name)."""
    ordered = sorted(tiers.values(), key=lambda t: (-t.priority, t.name))
    return {tier.name: rank for rank, tier in enumerate(ordered)}


def band_of(rank: int, waited_s: float, aging_s: float) -> int:
    """The band a replica of tier ``rank`` is served in after waiting ``waited_s``."""
    if aging_s <= 0 or waited_s <= 0:
        return rank
    return max(0, rank - int(waited_s // aging_s))


def queue_key(replica: PendingReplica) -> tuple[int, float, str, int]:
    """Order within one customer: higher workload priority, then older, then by key."""
    return (-replica.priority, replica.enqueued_at, replica.key.workload_id, replica.key.index)


class FairQueue:
    """Weighted fair turns between customers (WF2Q over equal-sized replicas)."""

    def __init__(self, customers: Iterable[tuple[str, float, int]]) -> None:
        """``customers``: (id, weight, replicas it already holds)."""
        self._weight: dict[str, float] = {}
        self._start: dict[str, float] = {}
        self._waiting: list[tuple[float, str]] = []
        self._eligible: list[tuple[float, str]] = []
        for customer, weight, held in customers:
            weight = max(weight, MIN_WEIGHT)
            self._weight[customer] = weight
            self._start[customer] = held / weight
            self._waiting.append((held / weight, customer))
        heapq.heapify(self._waiting)
        self._active_weight = sum(self._weight.values())
        self._vtime = self._waiting[0][0] if self._waiting else 0.0

    def next(self) -> str | None:
        """The customer whose turn it is; it must then be ``charge``d or ``drop``ped."""
        waiting, eligible = self._waiting, self._eligible
        if not eligible and waiting and waiting[0][0] > self._vtime + EPSILON:
            # Nobody eligible: virtual time jumps to the earliest start (work conserving).
            self._vtime = waiting[0][0]
        while waiting and waiting[0][0] <= self._vtime + EPSILON:
            _, customer = heapq.heappop(waiting)
            finish = self._start[customer] + 1.0 / self._weight[customer]
            heapq.heappush(eligible, (finish, customer))
        if not eligible:
            return None
        return heapq.heappop(eligible)[1]

    def charge(self, customer: str) -> None:
        """The customer got one replica placed and stays in line."""
        start = self._start[customer] + 1.0 / self._weight[customer]
        self._start[customer] = start
        self._vtime += 1.0 / self._active_weight
        heapq.heappush(self._waiting, (start, customer))

    def drop(self, customer: str) -> None:
        """The customer has nothing more it can place in this band."""
        self._active_weight = max(self._active_weight - self._weight[customer], MIN_WEIGHT)
