"""The operations behind the HTTP API: store calls plus what the running system must do about
them (wake the scheduler, tell a worker to stop a replica, announce a new type)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import structlog

from niyanta.broker.messages import Drain, LoadType
from niyanta.broker.nats import NatsEndpoint
from niyanta.coordinator.leader import LEADER_LEASE
from niyanta.coordinator.runtime import CoordinatorRuntime
from niyanta.coordinator.type_info import info_from_type
from niyanta.coordinator.worker_commands import StopReason
from niyanta.coordinator.worker_registry import WorkerRecord
from niyanta.errors import BrokerError, InvalidInput, NiyantaError, NotLeader, UnknownWorker
from niyanta.model import (
    AutoscalePolicy,
    Checkpoint,
    CoordinatorInfo,
    Customer,
    Event,
    LeaderLease,
    Page,
    Replica,
    ReplicaKey,
    Tier,
    Workload,
    WorkloadSpec,
    WorkloadType,
)
from niyanta.observability.tracing import context_from_traceparent, current_traceparent, tracer
from niyanta.states import ACTIVE, ReplicaState
from niyanta.store.base import CustomerUpdate, EventQuery, SubmitResult, WorkloadFilter

log = structlog.get_logger("niyanta.coordinator")

API_ACTOR = "api"


@dataclass(frozen=True, slots=True)
class WorkloadView:
    workload: Workload
    replicas: list[Replica]
    pending_reasons: dict[int, str] = field(default_factory=dict)
    """Why each pending replica (by index) is still waiting, as the last round decided."""


@dataclass(frozen=True, slots=True)
class ClusterView:
    coordinators: list[CoordinatorInfo]
    leader: LeaderLease | None
    this: str


class CoordinatorService:
    def __init__(self, runtime: CoordinatorRuntime) -> None:
        self._rt = runtime
        self._store = runtime.store

    # --- probes --------------------------------------------------------------------------------

    async def ready(self) -> str | None:
        """None when ready; otherwise what is not: the store (unreachable or not migrated), or,
        on the leader, the broker (a follower listens to no worker until it leads)."""
        try:
            store_ok = await self._store.ping()
        except Exception:
            store_ok = False
        if not store_ok:
            return "the store is unreachable or not migrated"
        endpoint = self._rt.endpoint
        if self.is_leader and isinstance(endpoint, NatsEndpoint):
            try:
                connected = endpoint.client.is_connected
            except BrokerError:
                connected = False
            if not connected:
                return "the leader is not connected to NATS"
        return None

    @property
    def coordinator_id(self) -> str:
        return self._rt.settings.coordinator_id

    @property
    def is_leader(self) -> bool:
        return self._rt.leader.is_leader

    # --- workload types ------------------------------------------------------------------------

    async def register_type(self, wtype: WorkloadType) -> WorkloadType:
        registered = await self._store.register_type(wtype)
        self._rt.catalog.invalidate_newest_type(wtype.name)
        log.info("type.registered", type=wtype.name, version=wtype.version, by=API_ACTOR)
        if registered.entrypoint is not None and self.is_leader:
            info = info_from_type(registered)
            try:
                await self._rt.endpoint.broadcast(LoadType(type=info))
            except BrokerError as exc:
                log.warning("type.broadcast_failed", type=wtype.name, error=str(exc))
        return registered

    async def list_types(self) -> list[WorkloadType]:
        return await self._store.list_types()

    # --- tiers and customers -------------------------------------------------------------------

    async def list_tiers(self) -> list[Tier]:
        return await self._store.list_tiers()

    async def put_tier(self, tier: Tier) -> Tier:
        result = await self._store.upsert_tier(tier)
        self._rt.catalog.invalidate_tenancy()
        return result

    async def create_customer(self, customer: Customer) -> Customer:
        created = await self._store.create_customer(customer)
        self._rt.catalog.invalidate_tenancy()
        return created

    async def get_customer(self, customer_id: str) -> Customer:
        return await self._store.get_customer(customer_id)

    async def list_customers(self) -> list[Customer]:
        return await self._store.list_customers()

    async def update_customer(self, customer_id: str, update: CustomerUpdate) -> Customer:
        updated = await self._store.update_customer(customer_id, update)
        self._rt.catalog.invalidate_tenancy()
        self._rt.wake_scheduler()
        return updated

    # --- workloads -----------------------------------------------------------------------------

    async def submit(self, spec: WorkloadSpec) -> tuple[SubmitResult, WorkloadView]:
        """The result and the workload: as just created (its replicas pending, fence 0, or as
        the leader placed them at once; without reading it back), or as it is now for a known
        idempotency key.

        The submit span starts the workload's trace (under the caller's, ``spec.traceparent``);
        its own context is what is stored with the workload."""
        attributes = {"niyanta.customer": spec.customer_id, "niyanta.type": spec.type_name}
        with tracer.start_as_current_span(
            "workload.submit",
            context=context_from_traceparent(spec.traceparent),
            attributes=attributes,
        ) as span:
            spec = replace(spec, traceparent=current_traceparent())
            result = await self._rt.submit(spec, API_ACTOR)
            span.set_attribute("niyanta.workload", result.workload.id)
            if not result.created:
                return result, await self.get_workload(result.workload.id)
            if not result.placed:
                self._rt.workload_submitted(result.workload.customer_id)
                # Let the woken round send its first read before this answer is built and sent.
                await asyncio.sleep(0)
            return result, self._submitted(result)

    async def submit_many(
        self, specs: list[WorkloadSpec], traceparent: str | None = None
    ) -> list[SubmitResult | NiyantaError]:
        """Many submits in one store transaction, each judged alone: per spec, in order, its
        result or the error that refused it. One ``workload.submit_batch`` span (under the
        caller's ``traceparent``) starts the trace of every workload of the batch."""
        with tracer.start_as_current_span(
            "workload.submit_batch",
            context=context_from_traceparent(traceparent),
            attributes={"niyanta.items": len(specs)},
        ):
            ours = current_traceparent()
            specs = [replace(spec, traceparent=ours) for spec in specs]
            results = await self._store.submit_workloads(specs, API_ACTOR)
        created = [r.workload for r in results if isinstance(r, SubmitResult) and r.created]
        for workload in created:
            self._accepted(workload)
        if created:
            self._rt.wake_scheduler()
        return results

    def _submitted(self, result: SubmitResult) -> WorkloadView:
        w = result.workload
        self._accepted(w)
        replicas = list(result.placed) or [
            Replica(w.id, i, ReplicaState.PENDING, fence=0, attempt=1, enqueued_at=w.created_at)
            for i in range(w.replicas)
        ]
        return WorkloadView(w, replicas)

    def _accepted(self, w: Workload) -> None:
        """A new workload: cached for placement, counted and logged."""
        self._rt.catalog.remember(w)
        self._rt.metrics.submitted.labels(
            customer=self._rt.metrics.customer_label(w.customer_id), type=w.type_name
        ).inc()
        log.info(
            "workload.submitted",
            customer=w.customer_id,
            workload=w.id,
            type=w.type_name,
            replicas=w.replicas,
        )

    async def get_workload(self, workload_id: str) -> WorkloadView:
        workload = await self._store.get_workload(workload_id)
        return self._view(workload, await self._store.list_replicas(workload_id))

    def _view(self, workload: Workload, replicas: list[Replica]) -> WorkloadView:
        reasons = self._rt.scheduling.pending_reasons
        waiting = {
            r.index: reasons[r.key]
            for r in replicas
            if r.state is ReplicaState.PENDING and r.key in reasons
        }
        return WorkloadView(workload, replicas, waiting)

    async def list_workloads(self, query: WorkloadFilter) -> tuple[list[WorkloadView], str | None]:
        page: Page = await self._store.list_workloads(query)
        replicas = await asyncio.gather(*(self._store.list_replicas(w.id) for w in page.items))
        views = [self._view(w, r) for w, r in zip(page.items, replicas, strict=True)]
        return views, page.next_cursor

    async def cancel(self, workload_id: str) -> WorkloadView:
        """Cancelled in the store at once (new fences: the worker can write nothing more), then
        the workers holding its replicas are told to stop."""
        before = await self._store.list_replicas(workload_id)
        workload = await self._store.cancel_workload(workload_id, API_ACTOR, "cancelled by API")
        await self._stop_active(before, StopReason.CANCEL, workload.customer_id)
        metrics = self._rt.metrics
        customer = metrics.customer_label(workload.customer_id)
        metrics.cancelled.labels(customer=customer, type=workload.type_name).inc()
        log.info("workload.cancelled", customer=workload.customer_id, workload=workload_id)
        self._rt.wake_scheduler()
        return await self.get_workload(workload_id)

    async def pause(self, workload_id: str) -> WorkloadView:
        """Queued replicas pause at once; running ones are asked to checkpoint and yield, and
        are released to paused when they do."""
        before = await self._store.list_replicas(workload_id)
        workload = await self._store.pause_workload(workload_id, API_ACTOR, "paused by API")
        await self._stop_active(before, StopReason.PAUSE, workload.customer_id)
        log.info("workload.paused", customer=workload.customer_id, workload=workload_id)
        return await self.get_workload(workload_id)

    async def resume(self, workload_id: str) -> WorkloadView:
        workload = await self._store.resume_workload(workload_id, API_ACTOR, "resumed by API")
        log.info("workload.resumed", customer=workload.customer_id, workload=workload_id)
        self._rt.wake_scheduler()
        return await self.get_workload(workload_id)

    async def _stop_active(self, replicas: list[Replica], reason: str, customer: str) -> None:
        if not self.is_leader:
            return  # the leader's next heartbeat reply fences them (cancel) on its own
        for replica in replicas:
            if replica.state in ACTIVE and replica.worker_id is not None:
                await self._rt.commands.stop(
                    replica.worker_id, replica.key, replica.fence, reason, customer
                )

    async def events(self, workload_id: str, after_id: int, limit: int) -> list[Event]:
        await self._store.get_workload(workload_id)
        return await self._store.list_events(
            EventQuery(workload_id=workload_id, after_id=after_id, limit=limit)
        )

    async def latest_checkpoint(self, workload_id: str, index: int) -> Checkpoint | None:
        await self._store.get_replica(ReplicaKey(workload_id, index))
        return await self._store.latest_checkpoint(ReplicaKey(workload_id, index))

    def reported_metrics(self, workload_id: str) -> dict[int, dict[str, float]]:
        return self._rt.progress.metrics_of(workload_id)

    # --- autoscaling policies ------------------------------------------------------------------

    async def put_autoscale_policy(self, policy: AutoscalePolicy) -> AutoscalePolicy:
        if policy.min_replicas > policy.max_replicas:
            raise InvalidInput("min_replicas must not exceed max_replicas")
        await self._store.get_customer(policy.customer_id)
        await self._store.get_type(policy.type_name)
        return await self._store.put_autoscale_policy(policy)

    async def get_autoscale_policy(self, customer_id: str, type_name: str) -> AutoscalePolicy:
        return await self._store.get_autoscale_policy(customer_id, type_name)

    async def list_autoscale_policies(self) -> list[AutoscalePolicy]:
        return await self._store.list_autoscale_policies()

    async def delete_autoscale_policy(self, customer_id: str, type_name: str) -> None:
        await self._store.delete_autoscale_policy(customer_id, type_name)

    # --- workers and cluster -------------------------------------------------------------------

    def list_workers(self) -> list[WorkerRecord]:
        return self._rt.registry.snapshot()

    async def drain_worker(self, worker_id: str) -> WorkerRecord:
        if not self.is_leader:  # the API forwards a drain to the leader first
            raise NotLeader("workers are drained through the leader coordinator")
        record = self._rt.registry.drain(worker_id)
        if record is None:
            raise UnknownWorker(f"no worker {worker_id!r} is connected to this coordinator")
        try:
            await self._rt.endpoint.send(worker_id, Drain(worker_id=worker_id))
        except BrokerError as exc:
            raise UnknownWorker(f"worker {worker_id!r} is not reachable: {exc}") from exc
        log.info("worker.drain", worker=worker_id)
        return record

    async def leader_url(self) -> str | None:
        """The URL of the coordinator holding a live leader lease, if any."""
        lease = await self._store.get_leader(LEADER_LEASE)
        if lease is None or lease.expires_at <= self._rt.clock.now():
            return None
        for info in await self._store.list_coordinators():
            if info.id == lease.holder:
                return info.url
        return None

    async def cluster(self) -> ClusterView:
        return ClusterView(
            coordinators=await self._store.list_coordinators(),
            leader=await self._store.get_leader(LEADER_LEASE),
            this=self.coordinator_id,
        )
