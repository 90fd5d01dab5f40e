"""The worker: joins the coordinator, heartbeats, keeps its leases, runs replicas, drains.

It follows the message flow in ``docs/architecture.md`` ("Coordinator <-> worker protocol"):
Hello/Welcome on every (re)connection; a Heartbeat request every interval answered by a
LeaseGrant (the replicas it lists as fenced stop at once); self-fencing when a replica's lease
has not been renewed for the lease TTL; StartReplica -> Started; fenced CheckpointMsg/Result
requests; StopReplica; Drain or SIGTERM -> stop everything with reason ``drain``, wait for the
yields to be acknowledged, Bye.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import OrderedDict
from collections.abc import Callable

import structlog

from niyanta.broker.base import WorkerLink
from niyanta.broker.messages import (
    AnyMessage,
    Bye,
    Capacity,
    Drain,
    Heartbeat,
    Hello,
    InventoryItem,
    LeaseGrant,
    LoadType,
    Refusal,
    Started,
    StartReplica,
    StopReplica,
    Welcome,
)
from niyanta.clock import Clock, SystemClock
from niyanta.errors import BrokerError, MessageRefused, NiyantaError
from niyanta.gc_tuning import freeze_startup_heap
from niyanta.model import ReplicaKey
from niyanta.observability.tracing import message_context
from niyanta.worker.circuit_breaker import BreakerBoard
from niyanta.worker.config import WorkerSettings
from niyanta.worker.executor import Executor
from niyanta.worker.health import HealthServer
from niyanta.worker.registry import Registry, WorkloadDefinition, default_registry
from niyanta.worker.replica import ReplicaRun

ENDED_REMEMBERED = 4096
"""How many ended assignments a worker remembers to ignore late repeats of their start."""

RETRY_PAUSE_S = 0.05
"""Pause between attempts to deliver a request while disconnected."""


class JoinRefused(BrokerError):
    """The coordinator refused this worker's Hello (e.g. a bad token)."""

    code = "join_refused"


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        link: WorkerLink,
        registry: Registry | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.registry = registry if registry is not None else default_registry
        self.breakers = BreakerBoard(self.clock)
        self.executor = Executor()
        self.session = uuid.uuid4().hex
        self.heartbeat_interval_s = settings.heartbeat_interval_s
        self.lease_ttl_s = settings.lease_ttl_s
        self.coordinator_id: str | None = None
        self._link = link
        self._runs: dict[ReplicaKey, ReplicaRun] = {}
        self._ended: OrderedDict[tuple[ReplicaKey, int], None] = OrderedDict()
        """Assignments (replica, fence) that ran here and ended: a late repeat of their
        StartReplica must not run the workload again."""
        self._joined = asyncio.Event()
        self._finished = asyncio.Event()
        self._draining = False
        self._closing = False
        self._shut_down = False
        self._refusal: Refusal | None = None
        self._rejoining: asyncio.Future[None] | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.health: HealthServer | None = None
        if settings.health_port is not None:
            self.health = HealthServer(
                settings.health_host, settings.health_port, lambda: self.ready
            )
        self.log = structlog.get_logger("niyanta.worker").bind(worker=settings.worker_id)
        link.on_message(self._on_message)
        link.on_connect(self._join)

    # --- public control --------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect and work until drained or closed."""
        freeze_startup_heap()
        self._loop = asyncio.get_running_loop()
        if self.health is not None:
            await self.health.start()
        connecting = asyncio.create_task(self._link.connect())
        finished = asyncio.create_task(self._finished.wait())
        try:
            await asyncio.wait({connecting, finished}, return_when=asyncio.FIRST_COMPLETED)
            failure = connecting.exception() if connecting.done() else None
            if failure is not None:
                await self._shutdown()
                raise failure
            if not finished.done():
                self._loops = [
                    asyncio.create_task(self._heartbeat_loop(), name="worker:heartbeat"),
                    asyncio.create_task(self._lease_watchdog(), name="worker:leases"),
                ]
                await finished
        finally:
            for task in (connecting, finished):
                task.cancel()
            await asyncio.gather(connecting, finished, return_exceptions=True)
        if self._refusal is not None:
            raise JoinRefused(f"{self._refusal.code}: {self._refusal.reason}")

    async def drain(self) -> None:
        """Stop every replica with reason ``drain``, wait until their yields are acknowledged,
        say Bye and leave."""
        if self._draining or self._closing:
            await self._finished.wait()
            return
        self._draining = True
        self.log.info("draining", replicas=len(self._runs))
        if self._joined.is_set():
            self._spawn(self._heartbeat())  # unhealthy at once: place nothing more here
        for run in list(self._runs.values()):
            run.stop("drain")
        deadline = asyncio.get_running_loop().time() + self.settings.drain_timeout_s
        # Replicas started while draining are stopped at once (see _start) and waited for too.
        while tasks := [run.task for run in self._runs.values() if run.task is not None]:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                self.log.warning("drain timed out; leaving anyway", unfinished=len(tasks))
                break
            await asyncio.wait(tasks, timeout=remaining)
        with contextlib.suppress(BrokerError):
            await self._link.send(Bye(worker_id=self.settings.worker_id))
        await self._shutdown()

    def request_drain(self) -> None:
        """For signal handlers (any thread): start a drain on the worker's event loop."""
        loop = self._loop
        if loop is None:  # not running yet: only a handler on the event loop's thread
            loop = asyncio.get_running_loop()
        loop.call_soon_threadsafe(lambda: self._spawn(self.drain()))

    async def close(self) -> None:
        """Leave at once: running replicas are cut off and write nothing more (their leases
        lapse at the coordinator). For tests and fatal errors; use ``drain`` to leave politely."""
        if self._closing:
            await self._finished.wait()
            return
        self._closing = True
        self.log.info("closing; cutting off running replicas", replicas=len(self._runs))
        for run in list(self._runs.values()):
            run.abandon()
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        if tasks:
            await asyncio.wait(tasks)
        await self._shutdown()

    @property
    def ready(self) -> bool:
        """Joined to a coordinator over a live connection (the probe port's ``/ready``)."""
        return self._joined.is_set() and self._link.connected and not self._shut_down

    @property
    def running(self) -> dict[ReplicaKey, WorkloadDefinition | None]:
        """The replicas this worker runs now (for inspection)."""
        return {key: run.definition for key, run in self._runs.items()}

    # --- joining ---------------------------------------------------------------------------------

    async def _join(self) -> None:
        """on_connect: a new connection is not joined until the coordinator welcomes us."""
        self._joined.clear()
        await self._say_hello()

    async def _say_hello(self) -> None:
        """Hello as a request; Welcome sets the heartbeat interval and lease TTL."""
        reply = await self._link.request(self._hello(), timeout=self.settings.request_timeout_s)
        if isinstance(reply, Welcome):
            self.heartbeat_interval_s = reply.heartbeat_interval_s
            self.lease_ttl_s = reply.lease_ttl_s
            self.coordinator_id = reply.coordinator_id
            self._joined.set()
            self.log.info(
                "joined",
                coordinator=reply.coordinator_id,
                heartbeat_interval_s=reply.heartbeat_interval_s,
                lease_ttl_s=reply.lease_ttl_s,
                inventory=len(self._runs),
            )
        elif isinstance(reply, Refusal):
            self.log.error("coordinator refused this worker", code=reply.code, reason=reply.reason)
            self._refusal = reply
            self._spawn(self.close())
        else:
            raise BrokerError(f"unexpected answer to Hello: {type(reply).__name__}")

    def _hello(self) -> Hello:
        return Hello(
            worker_id=self.settings.worker_id,
            session=self.session,
            labels=dict(self.settings.labels),
            capacity=Capacity(
                slots=self.settings.slots,
                cpu=self.settings.cpu,
                memory_mb=self.settings.memory_mb,
            ),
            types=self.registry.type_infos(),
            inventory=self._inventory(),
            token=self.settings.token,
        )

    async def _announce(self) -> None:
        """Send Hello again on a live connection (new types; a coordinator that does not know
        us). Heartbeats go on meanwhile: if this Hello is lost, the next grant asks again."""
        try:
            await self._say_hello()
        except (BrokerError, TimeoutError) as exc:
            self.log.warning("could not announce new types", error=str(exc))

    def _rejoin(self) -> None:
        """The coordinator does not know this worker (a new leader over NATS, where no
        reconnection prompts a Hello): say Hello again, with the inventory, once at a time."""
        if self._rejoining is not None or self._draining or self._closing:
            return
        self.log.info("coordinator does not know this worker; joining again")
        self._rejoining = asyncio.ensure_future(self._announce())
        self._rejoining.add_done_callback(self._rejoined)

    def _rejoined(self, task: asyncio.Future[None]) -> None:
        self._rejoining = None

    # --- heartbeats and leases -------------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        while True:
            if self._joined.is_set() and self._link.connected:
                self._spawn(self._heartbeat())
            await asyncio.sleep(self.heartbeat_interval_s)

    async def _heartbeat(self) -> None:
        runs = {key: run.fence for key, run in self._runs.items() if not run.ctx.fenced}
        message = Heartbeat(
            worker_id=self.settings.worker_id,
            healthy=not self._draining,
            free=self._free(),
            inventory=self._inventory(),
            metrics=self.breakers.metrics(),
        )
        sent_at = self.clock.monotonic()
        timeout = min(self.settings.request_timeout_s, max(self.heartbeat_interval_s, 0.05))
        try:
            reply = await self._link.request(message, timeout=timeout)
        except (BrokerError, TimeoutError) as exc:
            self.log.debug("heartbeat unanswered", error=str(exc))
            return
        if isinstance(reply, LeaseGrant):
            self._apply_grant(reply, runs, sent_at)
            if reply.rejoin:
                self._rejoin()
        elif isinstance(reply, Refusal):
            self.log.warning("heartbeat refused", code=reply.code, reason=reply.reason)

    def _apply_grant(self, grant: LeaseGrant, runs: dict[ReplicaKey, int], sent_at: float) -> None:
        fenced: set[ReplicaKey] = set()
        for item in grant.fenced:
            key = ReplicaKey(item.workload_id, item.index)
            run = self._runs.get(key)
            # A grant may name the fence we presented or the store's newer one; a replica
            # started here since with a higher fence is a new assignment and stays.
            if run is not None and item.fence >= run.fence:
                fenced.add(key)
                run.fence_out("lease not renewed", at_once=True)
        for key, fence in runs.items():
            run = self._runs.get(key)
            if run is not None and run.fence == fence and key not in fenced:
                run.lease_from = max(run.lease_from, sent_at)
                run.lease_ttl_s = grant.ttl_s

    async def _lease_watchdog(self) -> None:
        """Self-fencing: a replica whose lease was not renewed within its TTL stops at once."""
        while True:
            now = self.clock.monotonic()
            for run in list(self._runs.values()):
                if not run.ctx.fenced and run.lease_expired(now):
                    run.fence_out("lease expired without renewal", at_once=True)
            await asyncio.sleep(min(0.25, max(0.01, self.lease_ttl_s / 20)))

    # --- messages from the coordinator -----------------------------------------------------------

    async def _on_message(self, message: AnyMessage) -> AnyMessage | None:
        with message_context(message.traceparent):
            return self._handle(message)

    def _handle(self, message: AnyMessage) -> AnyMessage | None:
        if isinstance(message, StartReplica):
            return self._start(message)
        if isinstance(message, StopReplica):
            self._stop(message)
        elif isinstance(message, Drain):
            self._spawn(self.drain())
        elif isinstance(message, LoadType):
            self._load(message)
        else:
            self.log.debug("ignored message", kind=type(message).__name__)
        return None

    def _start(self, message: StartReplica) -> Started | None:
        key = ReplicaKey(message.workload_id, message.index)
        current = self._runs.get(key)
        started = Started(
            workload_id=message.workload_id,
            index=message.index,
            fence=message.fence,
            traceparent=message.traceparent,
        )
        if (key, message.fence) in self._ended:
            self.log.debug("repeated start of an ended attempt ignored", fence=message.fence)
            return None
        if current is not None:
            if current.fence == message.fence:
                return started  # a re-sent StartReplica: already running
            if current.fence > message.fence:
                return None  # stale
            current.fence_out("reassigned with a newer fence", at_once=True)
        if self._closing:
            return None
        definition: WorkloadDefinition | None = None
        lookup_error: NiyantaError | None = None
        try:
            definition = self.registry.get(message.type_name, message.type_version)
        except NiyantaError as exc:
            lookup_error = exc
        run = ReplicaRun(self, message, definition, lookup_error)
        self._runs[key] = run
        run.launch(self._finished_run)
        if self._draining:
            run.stop("drain")
        return started

    def _stop(self, message: StopReplica) -> None:
        run = self._runs.get(ReplicaKey(message.workload_id, message.index))
        if run is None or message.fence < run.fence:
            return
        run.stop(message.reason)

    def _load(self, message: LoadType) -> None:
        try:
            self.registry.load(message.type)
        except Exception as exc:
            self.log.info("cannot load workload type", type=message.type.name, error=str(exc))
            return
        self.log.info("loaded workload type", type=message.type.name, version=message.type.version)
        self._spawn(self._announce())

    def _finished_run(self, run: ReplicaRun) -> None:
        if self._runs.get(run.key) is run:
            del self._runs[run.key]
        self._ended[(run.key, run.fence)] = None
        while len(self._ended) > ENDED_REMEMBERED:
            self._ended.popitem(last=False)
        task = run.task
        if task is not None and not task.cancelled() and task.exception() is not None:
            run.log.error("replica run crashed", exc_info=task.exception())

    # --- ReplicaPort -----------------------------------------------------------------------------

    async def deliver(self, message: AnyMessage, wanted: Callable[[], bool]) -> AnyMessage | None:
        while wanted() and not self._closing:
            if not self._joined.is_set() or not self._link.connected:
                await asyncio.sleep(RETRY_PAUSE_S)
                continue
            try:
                return await self._link.request(message, timeout=self.settings.request_timeout_s)
            except MessageRefused as exc:
                # Refused before it left (too large): sending it again cannot help.
                code, _, reason = exc.message.partition(": ")
                return Refusal(code=code, reason=reason)
            except TimeoutError:
                self.log.debug("request unanswered; retrying", kind=type(message).__name__)
            except BrokerError as exc:
                self.log.debug("request not sent; retrying", error=str(exc))
                await asyncio.sleep(RETRY_PAUSE_S)
        return None

    async def post(self, message: AnyMessage) -> None:
        try:
            await self._link.send(message)
        except BrokerError as exc:
            self.log.debug("message dropped", kind=type(message).__name__, error=str(exc))

    # --- helpers ---------------------------------------------------------------------------------

    def _inventory(self) -> list[InventoryItem]:
        return [run.inventory_item() for run in self._runs.values() if not run.ctx.fenced]

    def _free(self) -> Capacity:
        runs = list(self._runs.values())
        return Capacity(
            slots=max(0, self.settings.slots - len(runs)),
            cpu=max(0.0, self.settings.cpu - sum(run.resources_cpu for run in runs)),
            memory_mb=max(0, self.settings.memory_mb - sum(r.resources_memory_mb for r in runs)),
        )

    async def _shutdown(self) -> None:
        if self._shut_down:
            await self._finished.wait()
            return
        self._shut_down = True
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        await self._link.close()
        if self.health is not None:
            await self.health.stop()
        self._finished.set()
        self.log.info("worker stopped")

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
