"""One coordinator process's moving parts, wired together: the broker endpoint, the message
handlers, leader election, and the loops only the leader runs (scheduling, lease monitor,
progress flush, SLO watch and its webhook, autoscaler, fleet sizing)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Coroutine
from typing import Any

import structlog

from niyanta.autoscale.fleet import PoolBounds
from niyanta.broker.base import CoordinatorEndpoint
from niyanta.clock import Clock
from niyanta.coordinator.alert_webhook import AlertWebhook
from niyanta.coordinator.autoscaler_loop import AutoscalerLoop
from niyanta.coordinator.catalog import Catalog
from niyanta.coordinator.fleet_loop import FleetLoop, fleet_scaler_from
from niyanta.coordinator.leader import LeaderElection
from niyanta.coordinator.lease_monitor import LeaseMonitor
from niyanta.coordinator.message_handlers import MessageHandlers
from niyanta.coordinator.ordered_writes import OrderedWriter
from niyanta.coordinator.progress_buffer import ProgressBuffer
from niyanta.coordinator.scheduling_loop import SchedulingLoop
from niyanta.coordinator.settings import CoordinatorSettings
from niyanta.coordinator.slo_watch import SloWatch
from niyanta.coordinator.stopper import Stopper
from niyanta.coordinator.worker_commands import WorkerCommands
from niyanta.coordinator.worker_registry import WorkerRegistry
from niyanta.gc_tuning import freeze_startup_heap
from niyanta.model import WorkloadSpec
from niyanta.observability.metrics import DEFAULT_POOL, CoordinatorMetrics, WorkerSample
from niyanta.slo.evaluator import SloWindow
from niyanta.store.base import Store, SubmitResult
from niyanta.store.group_commit import GroupCommitter

log = structlog.get_logger("niyanta.coordinator")

STOP_GRACE_S = 5.0


class CoordinatorRuntime:
    def __init__(
        self,
        *,
        settings: CoordinatorSettings,
        store: Store,
        endpoint: CoordinatorEndpoint,
        clock: Clock,
        metrics: CoordinatorMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.endpoint = endpoint
        self.clock = clock
        self.metrics = metrics
        self.committer = GroupCommitter(store)
        self.writer = OrderedWriter(self.committer)
        self.registry = WorkerRegistry(clock)
        self.catalog = Catalog(store, clock)
        self.commands = WorkerCommands(endpoint, settings.lease_ttl_s)
        self.progress = ProgressBuffer(self.writer)
        self.scheduling = SchedulingLoop(
            settings=settings,
            store=store,
            endpoint=endpoint,
            registry=self.registry,
            catalog=self.catalog,
            commands=self.commands,
            writer=self.writer,
            metrics=metrics,
            clock=clock,
        )
        self.leader = LeaderElection(
            settings=settings,
            store=store,
            metrics=metrics,
            clock=clock,
            on_gained=self._lead,
            on_lost=self._follow,
        )
        self.handlers = MessageHandlers(
            settings=settings,
            store=store,
            writer=self.writer,
            registry=self.registry,
            catalog=self.catalog,
            commands=self.commands,
            progress=self.progress,
            metrics=metrics,
            clock=clock,
            is_leader=lambda: self.leader.is_leader,
            wake_scheduler=self.scheduling.wake,
            replica_ended=self.scheduling.ended,
        )
        self.leases = LeaseMonitor(
            store=store,
            catalog=self.catalog,
            metrics=metrics,
            clock=clock,
            interval_s=settings.lease_check_interval_s,
            lease_ttl_s=settings.lease_ttl_s,
            wake_scheduler=self.scheduling.wake,
        )
        self.webhook = AlertWebhook(settings.alert_webhook) if settings.alert_webhook else None
        self.slo_watch = SloWatch(
            store=store,
            catalog=self.catalog,
            metrics=metrics,
            clock=clock,
            window=SloWindow(settings.slo_window_s, settings.slo_min_samples),
            interval_s=settings.slo_interval_s,
            webhook=self.webhook,
        )
        self.autoscaler = AutoscalerLoop(
            store=store,
            catalog=self.catalog,
            progress=self.progress,
            commands=self.commands,
            clock=clock,
            interval_s=settings.autoscale_interval_s,
            yield_grace_s=settings.lease_ttl_s,
            wake_scheduler=self.scheduling.wake,
        )
        self.fleet = FleetLoop(
            store=store,
            catalog=self.catalog,
            registry=self.registry,
            metrics=metrics,
            bounds=PoolBounds(
                settings.fleet_min_workers,
                settings.fleet_max_workers,
                settings.fleet_slots_per_worker,
            ),
            interval_s=settings.fleet_interval_s,
            scaler=fleet_scaler_from(settings),
            scaled_pools=frozenset(settings.fleet_pools),
        )
        metrics.before_scrape(self._observe_workers)
        self._election: asyncio.Task[None] | None = None
        self._electing = Stopper()
        self._loops: list[asyncio.Task[None]] = []
        self._leading = Stopper()

    async def start(self) -> None:
        freeze_startup_heap()
        self.endpoint.on_message(self.handlers.handle)
        self.endpoint.on_disconnect(self._on_disconnect)
        await self.leader.tick()
        self._election = asyncio.create_task(
            self.leader.run(self._electing), name="coordinator:election"
        )

    async def stop(self) -> None:
        if self._election is not None:
            self._electing.stop()
            await _finish([self._election])
            self._election = None
        await self._stop_loops()
        self.progress.flush()
        await self.writer.drain()
        await self.leader.resign()
        await self.endpoint.stop()
        await self.committer.close()

    def wake_scheduler(self) -> None:
        if self.leader.is_leader:
            self.scheduling.wake()

    async def submit(self, spec: WorkloadSpec, actor: str) -> SubmitResult:
        """Write a submit; on the leader, placed at once when its tier is above anything
        waiting (``SchedulingLoop.submit``)."""
        write = functools.partial(self.store.submit_workload, spec, actor)
        if not self.leader.is_leader:
            return await write(None)
        return await self.scheduling.submit(spec, write)

    def workload_submitted(self, customer_id: str) -> None:
        if self.leader.is_leader:
            self.scheduling.submitted(customer_id)

    async def _lead(self, term: int) -> None:
        self.registry.clear()
        self.commands.stops.clear()
        # Only the leader listens to workers: a follower's endpoint refuses connections (a
        # worker dials the next coordinator in its list) and, over NATS, is not subscribed.
        await self.endpoint.start()
        self._leading.reset()
        self._spawn(self.scheduling.run(self._leading), "scheduling")
        self._spawn(self.leases.run(self._leading), "lease-monitor")
        self._spawn(self.progress.run(self._leading), "progress")
        self._spawn(self.slo_watch.run(self._leading), "slo-watch")
        self._spawn(self.autoscaler.run(self._leading), "autoscaler")
        self._spawn(self.fleet.run(self._leading), "fleet")
        if self.webhook is not None:
            self._spawn(self.webhook.run(self._leading), "alert-webhook")
        self.scheduling.wake()

    async def _follow(self) -> None:
        await self._stop_loops()
        self.metrics.observe_queue({}, {})  # the new leader reports the queue now
        self.registry.clear()
        self.commands.stops.clear()
        # Drop every worker connection, so that the workers find the new leader.
        await self.endpoint.stop()

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        self._loops.append(asyncio.create_task(coroutine, name=f"coordinator:{name}"))

    async def _stop_loops(self) -> None:
        loops, self._loops = self._loops, []
        self._leading.stop()
        self.scheduling.wake()
        await _finish(loops)

    def _observe_workers(self) -> None:
        self.metrics.observe_workers(
            WorkerSample(
                pool=record.labels.get("pool", DEFAULT_POOL),
                state=record.state.value if record.healthy else "unhealthy",
                slots=record.capacity.slots,
                free_slots=record.free.slots,
                reported=record.metrics,
            )
            for record in self.registry.snapshot()
        )

    async def _on_disconnect(self, worker_id: str) -> None:
        if not self.leader.is_leader:
            return
        if worker_id in self.registry:  # not after a Bye
            self.metrics.workers_lost.inc()
        await self.handlers.on_leave(worker_id, "connection lost")


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    """Let loops end after their step in flight; cancel any still running after the grace."""
    if not tasks:
        return
    _, late = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
    for task in late:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
