"""The coordinator's side of the worker protocol: one handler per message kind.

Writes go through the ordered writer (group commit, fence checked by the store); a request's reply
is an ``Ack`` once its write is durable, or a ``Refusal`` with the store's code (``fenced_out``).
Checkpoints and results are answered ``Deferred``: their write is queued in arrival order, and the
worker's next message is handled while it commits, so that many writes share one commit.
A repeated delivery of a message id is answered with the reply already given and does nothing
else; a stale write is refused by its fence, so duplicates are harmless either way.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

import structlog

from niyanta.broker.base import Deferred, Reply
from niyanta.broker.dedup import SeenIds
from niyanta.broker.messages import (
    Ack,
    AnyMessage,
    Bye,
    CheckpointMsg,
    Heartbeat,
    Hello,
    InventoryItem,
    LeaseGrant,
    Progress,
    Refusal,
    Result,
    Started,
    TypeInfo,
    Welcome,
)
from niyanta.clock import Clock
from niyanta.coordinator.catalog import Catalog
from niyanta.coordinator.ordered_writes import OrderedWriter
from niyanta.coordinator.progress_buffer import ProgressBuffer
from niyanta.coordinator.retry_policy import retry_at
from niyanta.coordinator.settings import CoordinatorSettings
from niyanta.coordinator.type_info import type_from_info
from niyanta.coordinator.worker_commands import StopReason, WorkerCommands
from niyanta.coordinator.worker_registry import WorkerRegistry
from niyanta.errors import (
    Conflict,
    NiyantaError,
    StoreUnavailable,
    UnknownWorkloadType,
)
from niyanta.model import (
    ErrorClass,
    ErrorInfo,
    Replica,
    ReplicaKey,
)
from niyanta.observability.metrics import CoordinatorMetrics
from niyanta.observability.tracing import (
    context_from_traceparent,
    message_context,
    trace_ids_of_workload,
    tracer,
)
from niyanta.states import ReplicaState
from niyanta.store.base import (
    CompleteReplica,
    FailReplica,
    FencedWrite,
    LeaseRenewal,
    MarkRunning,
    ReleaseReplica,
    Repeated,
    SaveCheckpoint,
    Store,
)

log = structlog.get_logger("niyanta.coordinator")

STARTED_RETRY_S = 0.2
"""Pause before writing a ``Started`` again that the store could not take."""

NOT_RETRIED = frozenset({ErrorClass.PERMANENT, ErrorClass.RESOURCE})
"""Error classes that fail a replica at once (``resource`` unless its type's retry policy says
``retry_resource_errors``); every other class (and an unknown one) retries."""


class RecentReplies:
    """The replies given to the last ``capacity`` message ids (None: no reply was due)."""

    def __init__(self, capacity: int = 65536) -> None:
        self._capacity = capacity
        self._replies: OrderedDict[str, AnyMessage | None] = OrderedDict()

    def __contains__(self, message_id: object) -> bool:
        return message_id in self._replies

    def get(self, message_id: str) -> AnyMessage | None:
        return self._replies.get(message_id)

    def forget(self, message_id: str) -> None:
        self._replies.pop(message_id, None)

    def put(self, message_id: str, reply: AnyMessage | None) -> None:
        self._replies[message_id] = reply
        while len(self._replies) > self._capacity:
            self._replies.popitem(last=False)


class RecentlyFinished:
    """(replica, fence) of the last ``capacity`` results committed: a heartbeat built before its
    replica's result was acknowledged still lists it, and that lease is not renewed (the replica
    is done), but the worker must not be told it lost the replica."""

    def __init__(self, capacity: int = 65536) -> None:
        self._capacity = capacity
        self._keys: OrderedDict[tuple[ReplicaKey, int], None] = OrderedDict()

    def add(self, key: ReplicaKey, fence: int) -> None:
        self._keys[(key, fence)] = None
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)

    def __contains__(self, key_and_fence: object) -> bool:
        return key_and_fence in self._keys


class MessageHandlers:
    def __init__(
        self,
        *,
        settings: CoordinatorSettings,
        store: Store,
        writer: OrderedWriter,
        registry: WorkerRegistry,
        catalog: Catalog,
        commands: WorkerCommands,
        progress: ProgressBuffer,
        metrics: CoordinatorMetrics,
        clock: Clock,
        is_leader: Callable[[], bool],
        wake_scheduler: Callable[[float | None], None],
        replica_ended: Callable[[ReplicaKey, bool], None],
    ) -> None:
        self._settings = settings
        self._store = store
        self._writer = writer
        self._registry = registry
        self._catalog = catalog
        self._commands = commands
        self._progress = progress
        self._metrics = metrics
        self._clock = clock
        self._is_leader = is_leader
        self._wake = wake_scheduler
        self._ended = replica_ended
        self._replies = RecentReplies()
        self._finished = RecentlyFinished()
        self._reported = SeenIds()
        """Results and checkpoints counted and logged, so that a repeat is not counted again."""

    def _fields(self, key: ReplicaKey, worker_id: str, fence: int) -> dict[str, object]:
        """The keys of a line about a replica; its trace ids even outside its spans (a fenced
        lease is found in heartbeat handling, which runs in no workload's trace)."""
        workload = self._catalog.cached(key.workload_id)
        return {
            "customer": workload.customer_id if workload is not None else None,
            "workload": key.workload_id,
            "replica": key.index,
            "worker": worker_id,
            "fence": fence,
            **trace_ids_of_workload(workload.traceparent if workload is not None else None),
        }

    async def handle(self, worker_id: str, message: AnyMessage) -> Reply:
        """The broker's entry point for every message from a worker."""
        if not self._is_leader():
            return None  # in flight while leadership was lost; the worker finds the leader
        if message.id in self._replies:
            return self._replies.get(message.id)
        self._replies.put(message.id, None)  # a repeat while this one is handled: no answer
        if isinstance(message, CheckpointMsg | Result):
            return Deferred(self._answer(worker_id, message))
        try:
            reply = await self._dispatch(worker_id, message)
        except Exception:
            self._replies.forget(message.id)  # not handled: a repeat must be handled afresh
            raise
        self._replies.put(message.id, reply)
        return reply

    async def _answer(self, worker_id: str, message: CheckpointMsg | Result) -> AnyMessage | None:
        try:
            reply = await self._dispatch(worker_id, message)
        except Exception as exc:  # the store is unreachable: the worker retries the request
            self._replies.forget(message.id)
            log.warning("message.unanswered", kind=type(message).__name__, error=repr(exc))
            return None
        self._replies.put(message.id, reply)
        return reply

    async def _dispatch(self, worker_id: str, message: AnyMessage) -> AnyMessage | None:
        with message_context(message.traceparent):
            return await self._dispatch_kind(worker_id, message)

    async def _dispatch_kind(self, worker_id: str, message: AnyMessage) -> AnyMessage | None:
        match message:
            case Hello():
                return await self.on_hello(worker_id, message)
            case Heartbeat():
                return await self.on_heartbeat(worker_id, message)
            case Started():
                self.on_started(worker_id, message)
                return None
            case Progress():
                key = ReplicaKey(message.workload_id, message.index)
                self._progress.record(key, message.fence, message.progress, message.metrics)
                return None
            case CheckpointMsg():
                # A child of the worker's checkpoint span: the commit as the coordinator sees it.
                with tracer.start_as_current_span(
                    "workload.checkpoint.commit",
                    context=context_from_traceparent(message.traceparent),
                    attributes={
                        "niyanta.workload": message.workload_id,
                        "niyanta.checkpoint_seq": message.seq,
                    },
                ):
                    return await self.on_checkpoint(worker_id, message)
            case Result():
                with tracer.start_as_current_span(
                    "workload.complete",
                    context=context_from_traceparent(message.traceparent),
                    attributes={
                        "niyanta.workload": message.workload_id,
                        "niyanta.outcome": message.outcome,
                    },
                ):
                    return await self.on_result(worker_id, message)
            case Bye():
                await self.on_leave(worker_id, "worker left")
                return None
            case _:
                log.warning("message.unexpected", kind=type(message).__name__, worker=worker_id)
                return None

    # --- join and leave ------------------------------------------------------------------------

    async def on_hello(self, worker_id: str, hello: Hello) -> AnyMessage:
        token = self._settings.worker_token
        if token is not None and hello.token != token:
            log.warning("worker.refused", worker=worker_id, reason="bad or missing token")
            return Refusal(code="unauthorized", reason="a Hello with the worker token is required")
        previous = self._registry.get(worker_id)
        record = self._registry.join(hello)
        for info in hello.types:
            await self.register_announced_type(info)
        # A Hello again on the same session (announcing new types) may race a StartReplica in
        # flight: only a new session hands back what its inventory lacks.
        same_session = previous is not None and previous.session == hello.session
        await self._reconcile(worker_id, hello.inventory, release_missing=not same_session)
        log.info(
            "worker.joined",
            worker=worker_id,
            session=hello.session,
            labels=record.labels,
            slots=record.capacity.slots,
            types=sorted(f"{n}@{v}" for n, v in record.types),
            inventory=len(hello.inventory),
        )
        self._wake(None)
        return Welcome(
            coordinator_id=self._settings.coordinator_id,
            heartbeat_interval_s=self._settings.heartbeat_interval_s,
            lease_ttl_s=self._settings.lease_ttl_s,
        )

    async def register_announced_type(self, info: TypeInfo) -> None:
        """Register a type a worker announced, unless that name and version exist already
        (a type registered through the API keeps its policies)."""
        try:
            await self._catalog.workload_type(info.name, info.version)
            return
        except UnknownWorkloadType:
            pass
        try:
            await self._store.register_type(type_from_info(info))
            log.info("type.registered", type=info.name, version=info.version, by="worker")
        except Conflict as exc:
            log.warning("type.conflict", type=info.name, version=info.version, error=exc.message)

    async def _reconcile(
        self, worker_id: str, inventory: list[InventoryItem], *, release_missing: bool
    ) -> None:
        """Keep what the worker runs at the store's current fence; stop anything else; hand
        back what the store has on this worker but the worker no longer runs."""
        held = {r.key: r for r in await self._store.active_replicas(worker_id)}
        for item in inventory:
            key = ReplicaKey(item.workload_id, item.index)
            replica = held.pop(key, None)
            if replica is None or replica.fence != item.fence:
                await self._commands.stop(worker_id, key, item.fence, StopReason.FENCED)
        for replica in held.values() if release_missing else ():
            log.info(
                "replica.missing_on_worker", **self._fields(replica.key, worker_id, replica.fence)
            )
            release = ReleaseReplica(replica.key, replica.fence, "not in the worker's inventory")
            self._writer.submit_detached(release)

    async def on_leave(self, worker_id: str, reason: str) -> None:
        """The worker is gone (Bye, or its connection dropped): its replicas go back to pending
        with new fence tokens at once, and are placed again."""
        self._registry.forget(worker_id)
        released = await self._store.release_worker(worker_id, reason)
        for replica in released:
            self._metrics.reassignments.labels(reason=reason).inc()
            log.info(
                "replica.released",
                reason=reason,
                **self._fields(replica.key, worker_id, replica.fence),
            )
        log.info("worker.left", worker=worker_id, reason=reason, released=len(released))
        self._wake(None)

    # --- leases --------------------------------------------------------------------------------

    async def on_heartbeat(self, worker_id: str, beat: Heartbeat) -> AnyMessage:
        known = self._registry.heartbeat(worker_id, beat) is not None
        if not known:
            log.info("worker.heartbeat_unknown", worker=worker_id)
        ttl = self._settings.lease_ttl_s
        renewals = [
            LeaseRenewal(ReplicaKey(item.workload_id, item.index), item.fence)
            for item in beat.inventory
        ]
        try:
            result = await self._store.renew_leases(worker_id, renewals, ttl)
        except StoreUnavailable as exc:
            # Nobody can take a replica away while the store is down, and every coordinator
            # extends all leases before it expires any after an outage: the worker keeps
            # running rather than fencing itself for an outage that is not its own.
            log.warning("lease.granted_during_outage", worker=worker_id, error=exc.message)
            return LeaseGrant(ttl_s=ttl, fenced=[], rejoin=not known)
        fenced_keys = set(result.fenced)
        fenced = [
            item
            for item in beat.inventory
            if (key := ReplicaKey(item.workload_id, item.index)) in fenced_keys
            and (key, item.fence) not in self._finished
        ]
        for item in fenced:
            key = ReplicaKey(item.workload_id, item.index)
            log.info("lease.fenced", **self._fields(key, worker_id, item.fence))
        return LeaseGrant(ttl_s=ttl, fenced=fenced, rejoin=not known)

    # --- writes --------------------------------------------------------------------------------

    def on_started(self, worker_id: str, started: Started) -> None:
        key = ReplicaKey(started.workload_id, started.index)

        def refused(write: FencedWrite, exc: NiyantaError) -> None:
            if isinstance(exc, StoreUnavailable):
                # Not a refusal: the store was out of reach (the write may even have committed;
                # a repeat of a committed start changes nothing). Write it again shortly.
                asyncio.get_running_loop().call_later(
                    STARTED_RETRY_S, self._writer.submit_detached, write, refused
                )
                return
            # Started for an assignment that moved on: the worker must stop it.
            log.info(
                "replica.start_refused", code=exc.code, **self._fields(key, worker_id, write.fence)
            )
            self._commands.spawn_stop(worker_id, key, write.fence, StopReason.FENCED)

        self._writer.submit_detached(MarkRunning(key, started.fence, worker_id), refused)
        log.debug("replica.started", **self._fields(key, worker_id, started.fence))

    async def on_checkpoint(self, worker_id: str, message: CheckpointMsg) -> AnyMessage:
        key = ReplicaKey(message.workload_id, message.index)
        write = SaveCheckpoint(key, message.fence, message.seq, message.data)
        try:
            saved = await self._writer.submit(write)
        except StoreUnavailable:
            raise  # no answer: the worker repeats the request until the store is back
        except NiyantaError as exc:
            return self._refused(worker_id, key, message.fence, exc, "checkpoint")
        # A Repeated write committed before while its caller saw a failure: reported now,
        # unless this coordinator reported it already (the same write re-sent under a new id).
        if self._reported.first_time(f"{key}@{message.fence}#{message.seq}"):
            labels = self._labels(key.workload_id)
            self._metrics.checkpoint_writes.labels(**labels).inc()
            self._metrics.checkpoint_bytes.labels(**labels).inc(len(message.data))
            log.debug(
                "checkpoint.saved",
                seq=message.seq,
                repeated=isinstance(saved, Repeated),
                **self._fields(key, worker_id, message.fence),
            )
        return Ack()

    async def on_result(self, worker_id: str, message: Result) -> AnyMessage:
        key = ReplicaKey(message.workload_id, message.index)
        self._progress.forget(key)
        try:
            write = await self._write_for(key, message)
            replica = await self._writer.submit(write)
        except StoreUnavailable:
            raise  # no answer: the worker repeats the request until the store is back
        except NiyantaError as exc:
            self._commands.stops.take(key, message.fence)
            return self._refused(worker_id, key, message.fence, exc, "result")
        self._commands.stops.take(key, message.fence)
        if isinstance(replica, Repeated):  # recorded before; its acknowledgement was lost
            replica = replica.state
        assert isinstance(replica, Replica)
        self._finished.add(key, message.fence)
        if self._reported.first_time(f"{key}@{message.fence}"):
            self._report(worker_id, message, replica)
        self._ended(key, replica.state is ReplicaState.PENDING)
        if replica.state is ReplicaState.RETRYING:
            self._wake(replica.not_before)
        return Ack()

    async def _write_for(self, key: ReplicaKey, message: Result) -> FencedWrite:
        fence = message.fence
        if message.outcome == "succeeded":
            return CompleteReplica(key, fence, message.result)
        if message.outcome == "yielded":
            # Read, not taken: a write that fails is retried and needs the reason again.
            reason = self._commands.stops.reason(key, fence) or StopReason.DRAIN
            to_state = {
                StopReason.PAUSE: ReplicaState.PAUSED,
                StopReason.CANCEL: ReplicaState.CANCELLED,
                # Scaled down: the replica is removed, its checkpoint is its last word.
                StopReason.SCALE_DOWN: ReplicaState.CANCELLED,
            }.get(reason, ReplicaState.PENDING)
            return ReleaseReplica(key, fence, f"yielded ({reason})", to_state)
        error_class = _error_class(message.error_class)
        error = ErrorInfo(
            error_class, message.error_message or error_class.value, tuple(message.failed_items)
        )
        workload = await self._catalog.workload(key.workload_id)
        wtype = await self._catalog.workload_type(workload.type_name, workload.type_version)
        retried_anyway = error_class is ErrorClass.RESOURCE and wtype.retry.retry_resource_errors
        if error_class in NOT_RETRIED and not retried_anyway:
            return FailReplica(key, fence, error, retry_at=None)
        replica = await self._store.get_replica(key)
        return FailReplica(
            key, fence, error, retry_at(wtype.retry, replica.attempt, self._clock.now())
        )

    def _labels(self, workload_id: str) -> dict[str, str]:
        """Metric labels of a workload (customer and type), from the cache."""
        workload = self._catalog.cached(workload_id)
        if workload is None:
            return {"customer": "unknown", "type": "unknown"}
        customer = self._metrics.customer_label(workload.customer_id)
        return {"customer": customer, "type": workload.type_name}

    def _count(self, message: Result, replica: Replica) -> None:
        labels = self._labels(replica.workload_id)
        m = self._metrics
        if replica.started_at is not None and replica.state is not ReplicaState.PENDING:
            m.run_time.labels(**labels).observe(max(0.0, self._clock.now() - replica.started_at))
        if replica.state is ReplicaState.SUCCEEDED:
            m.succeeded.labels(**labels).inc()
        elif replica.state in (ReplicaState.RETRYING, ReplicaState.FAILED):
            error_class = _error_class(message.error_class).value
            m.failed.labels(**labels, error_class=error_class).inc()
            if replica.state is ReplicaState.RETRYING:
                m.retried.labels(**labels).inc()
        elif replica.state is ReplicaState.PENDING:
            m.reassignments.labels(reason=message.outcome).inc()

    def _report(self, worker_id: str, message: Result, replica: Replica) -> None:
        self._count(message, replica)
        fields = self._fields(replica.key, worker_id, message.fence)
        if replica.state is ReplicaState.RETRYING:
            log.info(
                "replica.retrying",
                error_class=message.error_class,
                error=message.error_message,
                attempt=replica.attempt,
                retry_at=replica.not_before,
                **fields,
            )
        elif replica.state is ReplicaState.FAILED:
            log.warning(
                "replica.failed",
                error_class=message.error_class,
                error=message.error_message,
                attempt=replica.attempt,
                **fields,
            )
        else:
            log.info(
                f"replica.{replica.state.value}",
                outcome=message.outcome,
                attempt=replica.attempt,
                **fields,
            )

    def _refused(
        self, worker_id: str, key: ReplicaKey, fence: int, exc: NiyantaError, what: str
    ) -> Refusal:
        log.info(
            f"{what}.refused",
            code=exc.code,
            reason=exc.message,
            **self._fields(key, worker_id, fence),
        )
        if exc.code == "fenced_out":
            self._metrics.fenced_writes.labels(kind=what).inc()
        return Refusal(code=exc.code, reason=exc.message)


def _error_class(value: str | None) -> ErrorClass:
    """The reported class; an unknown or missing one counts as transient (retried)."""
    try:
        return ErrorClass(value) if value is not None else ErrorClass.TRANSIENT
    except ValueError:
        return ErrorClass.TRANSIENT
