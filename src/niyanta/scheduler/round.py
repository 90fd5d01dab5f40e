"""One scheduling round: every pending replica is placed, or left pending with a reason.

Bands are served from the highest tier down (``ordering``); within a band customers take
weighted fair turns, and each turn places the customer's next replica that fits (``search``),
subject to caps and held guarantees (``quotas``). A replica that finds no free capacity and may
preempt asks lower-tier replicas to yield (``preemption``); it stays pending until they do.
"""

from __future__ import annotations

from collections.abc import Sequence

from niyanta.model import ReplicaKey, Tier
from niyanta.scheduler import reasons
from niyanta.scheduler.cluster import Cluster, Shape
from niyanta.scheduler.ordering import FairQueue, band_of, queue_key, tier_ranks
from niyanta.scheduler.preemption import fewest_victims, victim_order, victims_rank
from niyanta.scheduler.quotas import Quotas
from niyanta.scheduler.search import Miss, Need, build_need, find_worker, worker_allows
from niyanta.scheduler.types import (
    PendingReason,
    PendingReplica,
    Placement,
    Preemption,
    RunningReplica,
    SchedulerDecision,
    SchedulerInput,
)

Band = dict[str, list[PendingReplica]]
"""Pending replicas of one band by customer."""


def schedule(inp: SchedulerInput) -> SchedulerDecision:
    """Decide one round. Pure: the same input gives the same decision."""
    return _Round(inp).run()


class _Round:
    def __init__(self, inp: SchedulerInput) -> None:
        self.inp = inp
        self.tiers = inp.tiers
        guarantees_resources = any(
            t.guaranteed_cpu > 0 or t.guaranteed_memory_mb > 0 for t in inp.tiers.values()
        )
        self.cluster = Cluster(inp.workers, inp.running, inp.policy, guarantees_resources)
        self.quotas = Quotas(inp.tiers, inp.customers, inp.running, inp.lingering)
        self.placements: list[Placement] = []
        self.preemptions: list[Preemption] = []
        self.reasons: dict[ReplicaKey, str] = {}
        self.constrained: set[str] = set()
        self.highest_busy: Tier | None = None
        """The highest tier that placed or waited for capacity this round ("waiting behind")."""
        self.victims: set[ReplicaKey] = set()
        self.promised: dict[int, tuple[int, float, float]] = {}
        """Per worker: (slots, cpu, memory) that chosen victims free beyond what their
        preemptors take (a later preemptor on that worker may count it)."""
        self.unmatched: dict[object, str] = {}
        known = [
            r for r in inp.running if r.tier in self.tiers and r.worker_id in self.cluster.index
        ]
        self.lowest_running = min((self.tiers[r.tier].priority for r in known), default=None)
        """Lowest tier priority running anywhere: a replica at or below it has no victims."""

    def run(self) -> SchedulerDecision:
        ranks = tier_ranks(self.tiers)
        bands: list[Band] = [{} for _ in ranks]
        placeable: list[PendingReplica] = []
        for replica in self.inp.pending:
            rank = ranks.get(replica.tier)
            if rank is None:
                self.reasons[replica.key] = reasons.unknown_tier(replica.tier)
                continue
            placeable.append(replica)
            served_in = band_of(rank, self.inp.now - replica.enqueued_at, self.inp.aging_s)
            bands[served_in].setdefault(replica.customer_id, []).append(replica)
        self.cluster.track(placeable)
        for band in bands:
            self._serve(band)
        pending = tuple(
            PendingReason(r.key, self.reasons[r.key])
            for r in self.inp.pending
            if r.key in self.reasons
        )
        return SchedulerDecision(
            tuple(self.placements),
            tuple(self.preemptions),
            pending,
            frozenset(self.constrained),
            self.quotas.tier_demand(),
        )

    def _serve(self, band: Band) -> None:
        # Each queue is reversed so that ``pop()`` yields the customer's next replica.
        queues = {c: sorted(rs, key=queue_key, reverse=True) for c, rs in band.items()}
        fair = FairQueue(
            (c, self.quotas.weight(c, self.tiers[q[0].tier]), self.quotas.held.get(c, 0))
            for c, q in sorted(queues.items())
        )
        caps = {c: self.quotas.cap(c, self.tiers[q[0].tier]) for c, q in queues.items()}
        while (customer := fair.next()) is not None:
            queue, cap = queues[customer], caps[customer]
            placed = False
            while queue and not placed:
                replica = queue.pop()
                tier = self.tiers[replica.tier]
                if cap is not None and self.quotas.at_cap(customer, cap):
                    reason = reasons.at_cap(customer, cap)
                    self.reasons[replica.key] = reason
                    for waiting in queue:
                        self.reasons[waiting.key] = reason
                    queue.clear()
                    break
                placed = self._place(replica, tier)
            if placed:
                fair.charge(customer)
            else:
                fair.drop(customer)

    def _place(self, replica: PendingReplica, tier: Tier) -> bool:
        cluster, affinity = self.cluster, replica.affinity
        target: Shape | int | None
        if affinity.worker is not None:
            target = self._named_worker(replica)
        else:
            target = cluster.shape_of(replica.type_name, affinity)
            if not target.groups:
                self.reasons[replica.key] = self._unmatched(replica)
                self.constrained.add(replica.customer_id)
                target = None
        if target is None:
            return False
        holds = self.quotas.hold_against(tier)
        if holds is not None:
            refusal = holds.refusal(
                replica.resources,
                cluster.free_slot_total,
                cluster.free_cpu_total.value,
                cluster.free_memory_total.value,
            )
            if refusal is not None:
                self.reasons[replica.key] = refusal
                return False
        if cluster.free_slot_total <= 0 and not self._may_preempt(tier, replica):
            self._wait(replica, tier)  # the cluster is full: nothing to search
            return False
        need = build_need(cluster, replica)
        result: int | Miss
        if isinstance(target, Shape):
            result = find_worker(cluster, target, need)
        elif cluster.key[target] is None:  # the named worker has no free slot
            result = Miss.NO_FIT
        else:
            refused = worker_allows(cluster, target, need)
            result = target if refused is None else refused
        if not isinstance(result, Miss):
            cluster.place(result, replica)
            self.quotas.charge(replica.customer_id, replica.tier, replica.resources)
            self._mark_busy(tier)
            self.placements.append(Placement(replica.key, cluster.views[result].id, replica.fence))
            return True
        if result is Miss.ANTI_AFFINITY:
            self.reasons[replica.key] = reasons.anti_affinity(affinity.anti)
            self.constrained.add(replica.customer_id)
        elif result is Miss.SPREAD:
            self.reasons[replica.key] = reasons.spread(affinity.spread or "")
            self.constrained.add(replica.customer_id)
        else:
            self._wait_for_capacity(replica, tier, need, target)
        return False

    def _named_worker(self, replica: PendingReplica) -> int | None:
        name = replica.affinity.worker or ""
        i = self.cluster.index.get(name)
        view = None if i is None else self.cluster.views[i]
        refusal = reasons.named_worker_refuses(
            name, view, replica.type_name, replica.affinity.required
        )
        if refusal is not None:
            self.reasons[replica.key] = refusal
            self.constrained.add(replica.customer_id)
            return None
        return i

    def _unmatched(self, replica: PendingReplica) -> str:
        key = (replica.type_name, replica.affinity.required)
        reason = self.unmatched.get(key)
        if reason is None:
            reason = reasons.no_matching_worker(
                self.cluster.views, replica.type_name, replica.affinity.required
            )
            self.unmatched[key] = reason
        return reason

    def _wait_for_capacity(
        self,
        replica: PendingReplica,
        tier: Tier,
        need: Need,
        target: Shape | int,
    ) -> None:
        if self._may_preempt(tier, replica):
            candidates: Sequence[int] = (
                (target,)
                if isinstance(target, int)
                else [i for g in target.groups for c in g.classes for i in c.members]
            )
            if self._preempt(replica, tier, need, candidates):
                self.quotas.note_waiting(tier, replica.resources)
                self._mark_busy(tier)
                return
        self._wait(replica, tier)

    def _may_preempt(self, tier: Tier, replica: PendingReplica) -> bool:
        lowest = self.lowest_running
        return (
            lowest is not None
            and lowest < tier.priority
            and (tier.may_preempt or self.quotas.entitled(tier, replica.resources))
        )

    def _wait(self, replica: PendingReplica, tier: Tier) -> None:
        """Leave ``replica`` pending for want of free capacity."""
        self.quotas.note_waiting(tier, replica.resources)
        ahead = self.highest_busy
        if ahead is not None and ahead.priority > tier.priority:
            self.reasons[replica.key] = reasons.waiting_behind(ahead.name)
        else:
            self.reasons[replica.key] = reasons.no_free_capacity(replica.resources)
        self._mark_busy(tier)

    def _mark_busy(self, tier: Tier) -> None:
        ahead = self.highest_busy
        if ahead is None or (tier.priority, tier.name) > (ahead.priority, ahead.name):
            self.highest_busy = tier

    def _preempt(
        self, replica: PendingReplica, tier: Tier, need: Need, candidates: Sequence[int]
    ) -> bool:
        cluster = self.cluster
        order = victim_order(self._priority)
        best: tuple[tuple[int, tuple[int, ...], int], tuple[RunningReplica, ...]] | None = None
        for i in candidates:
            if _blocked(cluster, i, need):
                continue
            victims = [
                r
                for r in cluster.running_on[i]
                if r.tier in self.tiers
                and self.tiers[r.tier].priority < tier.priority
                and r.key not in self.victims
            ]
            if not victims:
                continue
            slots, cpu, memory = self.promised.get(i, (0, 0.0, 0.0))
            short = (
                1 - (cluster.free_slots[i] + slots),
                need.cpu - (cluster.free_cpu[i] + cpu),
                need.memory - (cluster.free_memory[i] + memory),
            )
            if max(short) <= 0:
                continue  # it fits already: something other than capacity keeps it out
            chosen = fewest_victims(sorted(victims, key=order), *short)
            if chosen is None:
                continue
            rank = victims_rank(chosen, self._priority, i)
            if best is None or rank < best[0]:
                best = (rank, chosen)
        if best is None:
            return False
        (_, _, i), chosen = best
        worker = cluster.views[i].id
        self._claim(i, need, chosen)
        for victim in chosen:
            self.victims.add(victim.key)
            self.preemptions.append(Preemption(victim.key, worker, replica.key))
        self.reasons[replica.key] = reasons.preempting(len(chosen), worker)
        return True

    def _claim(self, i: int, need: Need, victims: Sequence[RunningReplica]) -> None:
        """The preemptor takes what its victims (and earlier victims' surplus) free first and
        the rest from free capacity, which is reserved now so that nobody placed later in the
        round takes it."""
        slots, cpu, memory = self.promised.get(i, (0, 0.0, 0.0))
        slots += len(victims)
        cpu += sum(v.resources.cpu for v in victims)
        memory += sum(v.resources.memory_mb for v in victims)
        from_free = (max(0, 1 - slots), max(0.0, need.cpu - cpu), max(0.0, need.memory - memory))
        self.cluster.reserve(i, *from_free)
        self.promised[i] = (
            slots - (1 - from_free[0]),
            cpu - (need.cpu - from_free[1]),
            memory - (need.memory - from_free[2]),
        )

    def _priority(self, tier: str) -> int:
        return self.tiers[tier].priority


def _blocked(cluster: Cluster, i: int, need: Need) -> bool:
    """Whether anti-affinity or spread keeps the replica off worker ``i`` whatever yields."""
    why = worker_allows(
        cluster,
        i,
        Need(0.0, 0.0, need.anti, need.spread_workers, need.topology_key, need.topology_used, None),
    )
    return why is not None
