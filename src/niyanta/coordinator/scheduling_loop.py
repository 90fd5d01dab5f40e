"""Scheduling rounds: build the scheduler's input from the store and the worker registry, place,
assign (new fence tokens and leases, one transaction), and send the starts and preemptions.

Rounds are event-driven: a submit, a freed slot, a new worker or a resume calls ``wake()`` and a
round runs at once (wakes during a round coalesce into one more round); a retry's backoff wakes
the loop when it ends; a timer is the backstop for anything else (another coordinator's submit).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog

from niyanta.broker.base import CoordinatorEndpoint
from niyanta.clock import Clock
from niyanta.coordinator.catalog import Catalog, Tenancy
from niyanta.coordinator.ordered_writes import OrderedWriter
from niyanta.coordinator.placement_claims import PlacementClaims
from niyanta.coordinator.settings import CoordinatorSettings
from niyanta.coordinator.stopper import Stopper
from niyanta.coordinator.worker_commands import StopReason, WorkerCommands
from niyanta.coordinator.worker_registry import WorkerRegistry
from niyanta.errors import NiyantaError
from niyanta.model import (
    Event,
    Replica,
    ReplicaKey,
    Workload,
    WorkloadSpec,
    WorkloadType,
    new_workload_id,
)
from niyanta.observability.metrics import CoordinatorMetrics, QueueKey
from niyanta.observability.tracing import context_from_traceparent, tracer
from niyanta.scheduler import schedule
from niyanta.scheduler.linger import Lingering, lingering_use, observe_demand
from niyanta.scheduler.types import (
    PendingReplica,
    Preemption,
    RunningReplica,
    SchedulerDecision,
    SchedulerInput,
    WorkerView,
)
from niyanta.store.base import Assignment, Placed, ReleaseReplica, Store, SubmitResult

log = structlog.get_logger("niyanta.coordinator")

MAX_PENDING_PER_ROUND = 10_000
MIN_PER_CUSTOMER = 16
"""A round reads no more than ``max(MIN_PER_CUSTOMER, 2 x the fleet's slots)`` replicas of one
customer (the first in its queue order): it could not place more of them anyway, and a flooding
customer's backlog then costs a round nothing. Reading, decoding and ordering 200 replicas a
customer took 6-8 ms of a round under a 2,000-replica bronze flood, and a platinum arrival waits
for the round in flight and then its own. When a customer's window came back whole and some of it
stayed pending for where it may run (affinity, spread; ``SchedulerDecision.constrained``) rather
than for capacity, the next round reads twice as many of each customer's, up to
``MAX_PENDING_PER_ROUND``, so that placeable replicas behind unplaceable ones are reached."""
NO_WORKERS = "no schedulable worker"
SCHEDULER_ACTOR = "scheduler"
PREEMPTING_EVENT = "replica.preempting"
"""Recorded on a victim when the scheduler asks it to yield for a higher tier."""
ERROR_PAUSE_S = 0.5
QUEUE_GAUGES_EVERY_S = 1.0
REQUEUE_SWEEP_S = 1.0
"""At most this long between looks for retrying replicas whose backoff ended that this
coordinator did not record itself (``SchedulingLoop._requeue_due``)."""


def per_customer_window(workers: tuple[WorkerView, ...]) -> int:
    """How many of one customer's pending replicas a round reads (``MIN_PER_CUSTOMER``)."""
    slots = sum(w.slots for w in workers if w.schedulable)
    return max(MIN_PER_CUSTOMER, 2 * slots)


def whole_windows(pending: list[Replica], workloads: dict[str, Workload], window: int) -> set[str]:
    """The customers whose read came back a whole ``window``: they may have more pending than
    the round read."""
    read = Counter(workloads[r.workload_id].customer_id for r in pending)
    return {customer_id for customer_id, n in read.items() if n >= window}


@dataclass(frozen=True, slots=True)
class ArrivalView:
    """What the last regular round read and left: the work in flight, and the highest tier
    priority among the replicas it left waiting. An arrival of a higher tier than anything
    waiting is placed on it at once (``SchedulingLoop.submit``)."""

    token: int
    """The round's claims token, held open while this view is: every placement decided
    since is in ``PlacementClaims.unseen_by(token)``."""
    running: tuple[RunningReplica, ...]
    waiting_top: float
    """-inf when it left nothing pending; inf when it could not tell (a customer it did not
    know, or a read cut off before every customer's queue)."""


class SchedulingLoop:
    def __init__(
        self,
        *,
        settings: CoordinatorSettings,
        store: Store,
        endpoint: CoordinatorEndpoint,
        registry: WorkerRegistry,
        catalog: Catalog,
        commands: WorkerCommands,
        writer: OrderedWriter,
        metrics: CoordinatorMetrics,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._store = store
        self._endpoint = endpoint
        self._registry = registry
        self._catalog = catalog
        self._commands = commands
        self._writer = writer
        self._metrics = metrics
        self._clock = clock
        self._wake = asyncio.Event()
        self.pending_reasons: dict[ReplicaKey, str] = {}
        """Why each replica the last round left pending stays there (for the API)."""
        self._queue_observed_at = -math.inf
        self._widening = 1
        """The factor on the next round's per-customer window (``MIN_PER_CUSTOMER``)."""
        self._claims = PlacementClaims()
        self._tenancy: Tenancy | None = None
        """As the last round saw it (``submitted()`` ranks an arrival with it, without I/O)."""
        self._in_round = False
        self._reading_up_to = math.inf
        """The highest tier priority among the replicas the regular round in flight read (inf
        until its read is in: an arrival then waits for it, no express round)."""
        self._arrived_while_reading = -math.inf
        """The highest tier priority submitted while the regular round in flight read (inf:
        a customer the last round did not know)."""
        self._express: asyncio.Task[None] | None = None
        self._lingering: dict[str, Lingering] = {}
        """Per tier, the guaranteed capacity it needed lately, as the rounds saw it."""
        self._backoffs: list[float] = []
        """A heap of the store times at which retries this coordinator recorded end."""
        self._requeue_sweep_at = -math.inf
        self._view: ArrivalView | None = None
        self._queued_top = -math.inf
        """The highest tier priority queued since the view's round began its read, as far as
        this coordinator knows (inf: work of unknown tier, e.g. a replica requeued)."""
        self._queued_in_round = -math.inf
        """The same since the regular round in flight began its read."""
        self._ended_since_view: set[ReplicaKey] = set()
        """Replicas that left their worker since the view's round began its read: the view
        may still count them as running."""
        self._ended_in_round: set[ReplicaKey] = set()

    def wake(self, at: float | None = None) -> None:
        """Run a round now (pending work may have been queued: no arrival is placed ahead of
        it until a round has read it), or at store time ``at`` (a retry's backoff ends)."""
        if at is None:
            self._queued(math.inf)
            self._wake.set()
            return
        heapq.heappush(self._backoffs, at)
        delay = max(0.0, at - self._clock.now())
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    def ended(self, key: ReplicaKey, requeued: bool) -> None:
        """A replica left its worker (ended, or ``requeued``: handed back to pending): its
        capacity is free; run a round now."""
        self._ended_since_view.add(key)
        self._ended_in_round.add(key)
        if requeued:
            self._queued(math.inf)
        self._wake.set()

    def _queued(self, priority: float) -> None:
        self._queued_top = max(self._queued_top, priority)
        self._queued_in_round = max(self._queued_in_round, priority)

    def submitted(self, customer_id: str) -> None:
        """A workload of ``customer_id`` was submitted here: wake a round. When the round in
        flight read nothing of as high a tier, place it in an express round beside that one
        at once, rather than after it: under a flood of lower-tier work rounds run back to
        back, and a platinum arrival would otherwise wait out the bronze round in flight. An
        arrival while that round still reads is decided when its read is in (``_read_in``)."""
        known = self._tier_priority(customer_id)
        # A customer the last round did not know may be of any tier: count it as the highest,
        # as ``_top_priority`` does.
        priority = math.inf if known is None else known
        self._queued(priority)
        self._wake.set()
        if self._express is not None or not self._in_round:
            return
        if self._reading_up_to == math.inf:
            self._arrived_while_reading = max(self._arrived_while_reading, priority)
        elif priority > self._reading_up_to:
            self._start_express()

    def _read_in(self, top: float) -> None:
        """The regular round in flight read queues up to tier priority ``top``: an arrival of a
        higher tier during its read is not among them (it would have raised ``top``)."""
        self._reading_up_to = top
        if self._arrived_while_reading > top and self._express is None:
            self._start_express()

    def _start_express(self) -> None:
        self._express = asyncio.create_task(self._express_round(), name="scheduler:express")

    async def run(self, stopper: Stopper) -> None:
        """Rounds until ``stopper`` stops (then ``wake()`` to end a wait at once)."""
        self._keep_view(None)  # read in an earlier term: another leader has placed since
        try:
            loop = asyncio.get_running_loop()
            while not stopper.stopped:
                # The timer is the backstop; a wake resumes this task in the next loop pass
                # (``wait_for`` would take three: its inner task, its waiter, then this one).
                backstop = loop.call_later(self._settings.schedule_interval_s, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    backstop.cancel()
                self._wake.clear()
                if stopper.stopped:
                    return
                self._in_round, self._reading_up_to = True, math.inf
                self._queued_in_round = -math.inf
                self._ended_in_round = set()
                self._arrived_while_reading = -math.inf
                try:
                    await self.round()
                except Exception as exc:  # a store outage: log, pause, try again
                    log.warning("scheduler.round_failed", error=repr(exc))
                    await stopper.pause(ERROR_PAUSE_S)
                finally:
                    self._in_round = False
        finally:
            self._keep_view(None)
            if self._express is not None:
                await asyncio.gather(self._express, return_exceptions=True)

    async def _express_round(self) -> None:
        try:
            await self._place(express=True)
        except Exception as exc:  # as a regular round's: the next regular round carries on
            log.warning("scheduler.round_failed", error=repr(exc), express=True)
        finally:
            self._express = None

    def _tier_priority(self, customer_id: str | None) -> int | None:
        tenancy = self._tenancy
        customer = (
            None if tenancy is None or customer_id is None else tenancy.customers.get(customer_id)
        )
        tier = None if customer is None or tenancy is None else tenancy.tiers.get(customer.tier)
        return None if tier is None else tier.priority

    def _top_priority(self, pending: list[Replica], workloads: dict[str, Workload]) -> float:
        """The highest tier priority among ``pending`` (unknown ones count as the highest)."""
        top = -math.inf
        for r in pending:
            priority = self._tier_priority(workloads[r.workload_id].customer_id)
            if priority is None:
                return math.inf
            top = max(top, priority)
        return top

    async def round(self) -> int:
        """One placement round; the number of replicas started. The queue gauges follow the
        placements, at most once a ``QUEUE_GAUGES_EVERY_S``: counting every pending replica
        takes 1-4 ms under a backlog, which a submit would otherwise wait for before its start."""
        started = await self._place()
        now = asyncio.get_running_loop().time()
        if self._metrics.enabled and now - self._queue_observed_at >= QUEUE_GAUGES_EVERY_S:
            self._queue_observed_at = now
            await self._observe_queue()
        return started

    async def _place(self, express: bool = False) -> int:
        token = self._claims.open_round()
        view: ArrivalView | None = None
        try:
            started, view = await self._place_round(token, express)
            return started
        finally:
            if not express:  # an express round leaves the regular round's view as it is
                self._keep_view(view)
                self._queued_top = self._queued_in_round
                self._ended_since_view = self._ended_in_round
            if view is None:
                self._claims.close_round(token)

    def _keep_view(self, view: ArrivalView | None) -> None:
        """Replace the arrival view (closing the claims round the old one held open)."""
        old, self._view = self._view, view
        if old is not None:
            self._claims.close_round(old.token)

    async def _place_round(self, token: int, express: bool) -> tuple[int, ArrivalView | None]:
        """The replicas started, and (a regular round) what it read and left."""
        workers = self._registry.views(
            self._endpoint.connected_workers(), self._settings.lease_ttl_s
        )
        window = min(MAX_PENDING_PER_ROUND, per_customer_window(workers) * self._widening)
        view = await self._store.placement_view(
            MAX_PENDING_PER_ROUND, per_customer=window, requeue_due=self._requeue_due()
        )
        pending, active = view.pending, view.active
        if not pending:
            self.pending_reasons = {}
            if express:
                return 0, None
            in_flight = {r.workload_id: await self._catalog.workload(r.workload_id) for r in active}
            tenancy = await self._tenancy_of(in_flight.values())
            running = tuple(await self._running_views(active, in_flight, tenancy))
            return 0, ArrivalView(token, running, -math.inf)
        if not any(w.schedulable for w in workers):
            self.pending_reasons = dict.fromkeys((r.key for r in pending), NO_WORKERS)
            return 0, None
        workloads = {r.workload_id: await self._catalog.workload(r.workload_id) for r in pending}
        tenancy = await self._tenancy_of(workloads.values())
        if not express:
            self._read_in(self._top_priority(pending, workloads))
        running_only = {r.workload_id for r in active} - workloads.keys()
        if running_only:
            added = [await self._catalog.workload(i) for i in running_only]
            workloads.update((w.id, w) for w in added)
            tenancy = await self._tenancy_of(added)
        pending_views = await self._pending_views(pending, workloads, tenancy)
        running_views = await self._running_views(active, workloads, tenancy)
        decision = self._decide(token, pending_views, running_views, tenancy, workers)
        self.pending_reasons = {p.key: p.reason for p in decision.pending}
        cut = whole_windows(pending, workloads, window)
        # Left pending for where they may run, not for capacity, behind a whole window.
        widen = window < MAX_PENDING_PER_ROUND and bool(cut & decision.constrained)
        self._widening = self._widening * 2 if widen else 1
        keys = [p.key for p in decision.placements]
        assigned: list[Replica] = []
        try:
            assigned = await self._store.assign_replicas(
                [
                    Assignment(p.key, p.worker_id, self._settings.lease_ttl_s, p.fence)
                    for p in decision.placements
                ]
            )
        finally:
            self._claims.settle(keys, (r.key for r in assigned))
        if assigned:
            await asyncio.gather(*(self._start(r, workloads[r.workload_id]) for r in assigned))
        for preemption in decision.preemptions:
            await self._preempt(preemption, active)
        if express:
            return len(assigned), None
        # Its own placements are claims committed after ``token``: ``unseen_by(token)`` counts
        # them with the view.
        waiting = self._waiting_top(pending, workloads, cut, {r.key for r in assigned})
        return len(assigned), ArrivalView(token, tuple(running_views), waiting)

    def _waiting_top(
        self,
        pending: list[Replica],
        workloads: dict[str, Workload],
        cut: set[str],
        assigned: set[ReplicaKey],
    ) -> float:
        """The highest tier priority among the replicas a round leaves pending: those it read
        and did not place, and the unread rest of each customer of ``cut`` (``whole_windows``);
        inf when the read was cut off before every customer's queue."""
        if len(pending) >= MAX_PENDING_PER_ROUND:
            return math.inf
        left = {workloads[r.workload_id].customer_id for r in pending if r.key not in assigned}
        left |= cut
        top = -math.inf
        for customer_id in left:
            priority = self._tier_priority(customer_id)
            top = max(top, math.inf if priority is None else priority)
        return top

    def _requeue_due(self) -> bool:
        """Whether this round should move retrying replicas whose backoff is over to pending:
        when one this coordinator recorded is due, and at least every ``REQUEUE_SWEEP_S`` for
        those it did not (recorded before it led). Looking costs a round trip, which a round
        woken by a submit would otherwise wait for every time."""
        now = self._clock.now()
        due = bool(self._backoffs) and self._backoffs[0] <= now
        if not due and now < self._requeue_sweep_at:
            return False
        while self._backoffs and self._backoffs[0] <= now:
            heapq.heappop(self._backoffs)
        self._requeue_sweep_at = now + REQUEUE_SWEEP_S
        return True

    async def _tenancy_of(self, workloads: Iterable[Workload]) -> Tenancy:
        """Tiers and customers, fresh enough to know every customer of ``workloads``."""
        tenancy = await self._catalog.tenancy()
        if any(w.customer_id not in tenancy.customers for w in workloads):
            self._catalog.invalidate_tenancy()  # a customer created since the last refresh
            tenancy = await self._catalog.tenancy()
        self._tenancy = tenancy
        return tenancy

    async def _observe_queue(self) -> None:
        """Queue depth and oldest pending age per customer and tier (all pending replicas, not
        only the heads of queue a round reads)."""
        tenancy = await self._catalog.tenancy()
        now = self._clock.now()
        depth: dict[QueueKey, int] = {}
        oldest: dict[QueueKey, float] = {}
        for queue in await self._store.queue_depths():
            customer = tenancy.customers.get(queue.customer_id)
            key = QueueKey(
                self._metrics.customer_label(queue.customer_id),
                customer.tier if customer is not None else "unknown",
            )
            depth[key] = depth.get(key, 0) + queue.pending
            oldest[key] = max(oldest.get(key, 0.0), now - queue.oldest_enqueued_at)
        self._metrics.observe_queue(depth, oldest)

    async def _pending_views(
        self, pending: list[Replica], workloads: dict[str, Workload], tenancy: Tenancy
    ) -> list[PendingReplica]:
        views = []
        for r in pending:
            w = workloads[r.workload_id]
            customer = tenancy.customers.get(w.customer_id)
            if customer is None:
                continue
            wtype = await self._catalog.workload_type(w.type_name, w.type_version)
            views.append(
                PendingReplica(
                    key=r.key,
                    customer_id=w.customer_id,
                    tier=customer.tier,
                    type_name=w.type_name,
                    resources=wtype.resources,
                    affinity=w.affinity,
                    priority=w.priority,
                    enqueued_at=r.enqueued_at,
                    previous_worker=r.previous_worker,
                    workload_labels=w.labels,
                    fence=r.fence,
                )
            )
        return views

    async def _running_views(
        self, active: list[Replica], workloads: dict[str, Workload], tenancy: Tenancy
    ) -> list[RunningReplica]:
        views = []
        for r in active:
            w = workloads[r.workload_id]
            customer = tenancy.customers.get(w.customer_id)
            if r.worker_id is None or customer is None:
                continue
            wtype = await self._catalog.workload_type(w.type_name, w.type_version)
            views.append(
                RunningReplica(
                    key=r.key,
                    customer_id=w.customer_id,
                    tier=customer.tier,
                    worker_id=r.worker_id,
                    resources=wtype.resources,
                    workload_labels=w.labels,
                    priority=w.priority,
                    last_checkpoint_at=r.checkpoint_at,
                    started_at=r.started_at or 0.0,
                )
            )
        return views

    def _decide(
        self,
        round_token: int,
        pending: Iterable[PendingReplica],
        running: Iterable[RunningReplica],
        tenancy: Tenancy,
        workers: tuple[WorkerView, ...],
        arrival: bool = False,
    ) -> SchedulerDecision:
        """The scheduler's decision over what the round of ``round_token`` read and what was
        claimed since (``PlacementClaims``); the new placements are claimed before it returns.
        It does not await: no other decision is taken in between. ``arrival``: an arrival's
        placement (``submit``), not a round (the round metric counts rounds)."""
        claimed = self._claims.claimed()
        running_views = list(running)
        seen = {r.key for r in running_views}
        running_views += [r for r in self._claims.unseen_by(round_token) if r.key not in seen]
        now = self._clock.now()
        scheduler_input = SchedulerInput(
            pending=tuple(p for p in pending if p.key not in claimed),
            workers=workers,
            running=tuple(running_views),
            tiers=tenancy.tiers,
            customers=tenancy.policies,
            now=now,
            lingering=lingering_use(self._lingering, tenancy.tiers, now),
        )
        started = time.perf_counter()
        decision = schedule(scheduler_input)
        if not arrival:
            self._metrics.scheduler_round.observe(time.perf_counter() - started)
        self._lingering = observe_demand(self._lingering, decision.tier_demand, tenancy.tiers, now)
        placed = {p.key: p.worker_id for p in decision.placements}
        self._claims.claim(
            RunningReplica(
                key=p.key,
                customer_id=p.customer_id,
                tier=p.tier,
                worker_id=placed[p.key],
                resources=p.resources,
                workload_labels=p.workload_labels,
                priority=p.priority,
                started_at=scheduler_input.now,
            )
            for p in scheduler_input.pending
            if p.key in placed
        )
        return decision

    # --- arrivals placed by their submit ----------------------------------------------------------

    async def submit(
        self, spec: WorkloadSpec, write: Callable[[Placed | None], Awaitable[SubmitResult]]
    ) -> SubmitResult:
        """Submit ``spec`` through ``write``. When its tier is higher than anything waiting
        (nothing waiting: any tier), the arrival is placed here first, by the same
        ``schedule()``, on the last regular round's view of the work in flight and every
        placement claimed since: the submit then writes its replicas assigned and they are
        started before this returns. That saves a round's read and its assignment (two store
        round trips) on the way to their start, and a platinum arrival under a bronze flood
        waits for no round. Otherwise, or when the scheduler would not place every replica
        without preempting, the submit writes them pending and the caller wakes a round
        (``submitted()``)."""
        arrival = await self._place_arrival(spec)
        if arrival is None:
            return await write(None)
        keys = [ReplicaKey(arrival.workload_id, i) for i in range(len(arrival.worker_ids))]
        try:
            result = await write(arrival)
        except BaseException:
            self._claims.settle(keys, ())
            raise
        self._claims.settle(keys, (r.key for r in result.placed))
        if result.placed:
            await asyncio.gather(*(self._start(r, result.workload) for r in result.placed))
        return result

    def _view_for(self, priority: float) -> ArrivalView | None:
        """The view to place an arrival of tier ``priority`` on: when nothing waiting, nor
        queued since, is of as high a tier, and no retry's backoff has ended unread."""
        view = self._view
        if view is None or priority <= max(view.waiting_top, self._queued_top):
            return None
        due = bool(self._backoffs) and self._backoffs[0] <= self._clock.now()
        return None if due else view

    async def _place_arrival(self, spec: WorkloadSpec) -> Placed | None:
        if spec.replicas < 1 or self._view is None:
            return None
        try:
            tenancy = await self._catalog.tenancy()
            wtype = await self._arrival_type(spec)
        except NiyantaError:  # an unknown type: the submit names it
            return None
        customer = tenancy.customers.get(spec.customer_id)
        tier = None if customer is None else tenancy.tiers.get(customer.tier)
        view = None if tier is None else self._view_for(tier.priority)
        if customer is None or view is None:
            return None
        workers = self._registry.views(
            self._endpoint.connected_workers(), self._settings.lease_ttl_s
        )
        if spec.replicas > sum(w.slots for w in workers if w.schedulable):
            return None  # more than could run (and not worth a decision: it is unbounded)
        workload_id = new_workload_id()
        now = self._clock.now()
        replicas = [
            PendingReplica(
                key=ReplicaKey(workload_id, i),
                customer_id=spec.customer_id,
                tier=customer.tier,
                type_name=spec.type_name,
                resources=wtype.resources,
                affinity=spec.affinity,
                priority=spec.priority,
                enqueued_at=now,
                workload_labels=spec.labels,
            )
            for i in range(spec.replicas)
        ]
        # Replicas the view read as running that have ended since: their capacity is free. (A
        # placement since the view is a claim, counted whatever ended: a retried replica may
        # have ended once and been placed again.)
        ended = self._ended_since_view
        running = [r for r in view.running if r.key not in ended]
        decision = self._decide(view.token, replicas, running, tenancy, workers, arrival=True)
        placed = {p.key: p.worker_id for p in decision.placements}
        if len(placed) < len(replicas) or decision.preemptions:
            self._claims.settle(placed, ())  # the round it wakes decides
            return None
        return Placed(
            workload_id, tuple(placed[p.key] for p in replicas), self._settings.lease_ttl_s
        )

    async def _arrival_type(self, spec: WorkloadSpec) -> WorkloadType:
        if spec.type_version is not None:
            return await self._catalog.workload_type(spec.type_name, spec.type_version)
        return await self._catalog.newest_type(spec.type_name)

    async def _start(self, replica: Replica, workload: Workload) -> None:
        """Start a placed replica: the schedule span continues the trace stored at submit (so a
        retry or a reassignment joins the same trace), its dispatch span travels with the
        StartReplica and becomes the parent of the worker's execute span."""
        attributes: dict[str, str | int] = {
            "niyanta.workload": replica.workload_id,
            "niyanta.replica": replica.index,
            "niyanta.attempt": replica.attempt,
            "niyanta.fence": replica.fence,
        }
        with tracer.start_as_current_span(
            "workload.schedule",
            context=context_from_traceparent(workload.traceparent),
            attributes=attributes,
        ):
            checkpoint = None
            if replica.checkpoint_seq > 0:
                checkpoint = await self._store.latest_checkpoint(replica.key)
            self._count_start(replica, workload, resumed=checkpoint is not None)
            with tracer.start_as_current_span(
                "workload.dispatch", attributes={"niyanta.worker": replica.worker_id or ""}
            ):
                delivered = await self._commands.start(replica, workload, checkpoint)
        if not delivered:
            # The worker went away between placement and start: hand the replica back now
            # rather than at lease expiry.
            self._writer.submit_detached(
                ReleaseReplica(replica.key, replica.fence, "start not delivered")
            )
            self.wake()

    def _count_start(self, replica: Replica, workload: Workload, *, resumed: bool) -> None:
        labels = {
            "customer": self._metrics.customer_label(workload.customer_id),
            "type": workload.type_name,
        }
        self._metrics.started.labels(**labels).inc()
        self._metrics.queue_wait.labels(**labels).observe(
            max(0.0, self._clock.now() - replica.enqueued_at)
        )
        if resumed:
            self._metrics.resumed.labels(**labels).inc()

    async def _preempt(self, preemption: Preemption, active: list[Replica]) -> None:
        """Record the decision in the victim's event log, then ask it to checkpoint and yield
        (its ``replica.pending`` event with reason ``yielded (preempt)`` follows)."""
        victim = next((r for r in active if r.key == preemption.victim), None)
        if victim is None or self._commands.stops.asked(victim.key, victim.fence):
            return
        await self._store.append_event(
            Event(
                id=0,
                kind=PREEMPTING_EVENT,
                at=self._clock.now(),
                actor=SCHEDULER_ACTOR,
                workload_id=victim.workload_id,
                index=victim.index,
                customer_id=self._catalog.customer_of(victim.workload_id),
                correlation_id=preemption.for_replica.workload_id,
                reason=f"yielding to {preemption.for_replica}",
                data={
                    "for": str(preemption.for_replica),
                    "worker": preemption.worker_id,
                    "fence": victim.fence,
                    "checkpoint_seq": victim.checkpoint_seq,
                },
            )
        )
        workload = self._catalog.cached(victim.workload_id)
        if workload is not None:
            customer = self._metrics.customer_label(workload.customer_id)
            self._metrics.preempted.labels(customer=customer, type=workload.type_name).inc()
        log.info(
            "replica.preempt",
            workload=victim.workload_id,
            replica=victim.index,
            worker=preemption.worker_id,
            fence=victim.fence,
            for_replica=str(preemption.for_replica),
        )
        await self._commands.stop(
            preemption.worker_id, victim.key, victim.fence, StopReason.PREEMPT
        )
