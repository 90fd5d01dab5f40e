"""The worker runtime driven as the coordinator drives it, over the in-memory broker: a fake
coordinator endpoint answers Hello/Heartbeat/Checkpoint/Result the way docs/architecture.md
("Coordinator <-> worker protocol") says, and the tests check what the worker sends back."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import pytest
import structlog

from niyanta import FencedOut, PermanentError, Registry, TransientError, WorkloadContext, workload
from niyanta.broker.memory import MemoryHub
from niyanta.broker.messages import (
    Ack,
    AnyMessage,
    Bye,
    CheckpointMsg,
    Drain,
    Heartbeat,
    Hello,
    InventoryItem,
    LeaseGrant,
    LoadType,
    Progress,
    Refusal,
    Result,
    Started,
    StartReplica,
    StopReplica,
    TypeInfo,
    Welcome,
    new_id,
)
from niyanta.clock import FakeClock
from niyanta.errors import BrokerError
from niyanta.model import ReplicaKey
from niyanta.worker.config import WorkerSettings
from niyanta.worker.runtime import JoinRefused, Worker

M = TypeVar("M", bound=AnyMessage)

REGISTRY = Registry()
seen: dict[str, Any] = {}


@workload("two-checkpoints", registry=REGISTRY)
async def two_checkpoints(ctx: WorkloadContext) -> dict[str, Any]:
    seen["checkpoint"] = ctx.checkpoint
    state = dict(ctx.checkpoint or {"i": 0})
    for _ in range(2):
        state["i"] += 1
        await ctx.save_checkpoint(state)
        await ctx.report_progress(state["i"] / 2)
    return {"i": state["i"], "attempt": ctx.attempt, "customer": ctx.customer}


@workload("loop", registry=REGISTRY)
async def loop_until_stopped(ctx: WorkloadContext) -> dict[str, int]:
    state = dict(ctx.checkpoint or {"i": 0})
    while not await ctx.sleep(float(ctx.params.get("step_s", 0.02))):
        state["i"] += 1
        await ctx.save_checkpoint(state)
    await ctx.save_checkpoint({"i": state["i"], "final": True})
    return state


@workload("ignores-stop", registry=REGISTRY)
async def ignores_stop(ctx: WorkloadContext) -> None:
    await asyncio.sleep(30)


@workload("fenced-writer", registry=REGISTRY)
async def fenced_writer(ctx: WorkloadContext) -> None:
    try:
        await ctx.save_checkpoint({"step": 1})
    except FencedOut:
        seen["fenced_out"] = True
    with pytest.raises(FencedOut):
        await ctx.save_checkpoint({"step": 2})
    with pytest.raises(FencedOut):
        await ctx.report_progress(0.5)


@workload("raises", registry=REGISTRY)
async def raises(ctx: WorkloadContext) -> None:
    kind = ctx.params["kind"]
    if kind == "transient":
        raise TransientError("try later")
    if kind == "permanent":
        raise PermanentError("never")
    raise KeyError("surprise")


@workload("chatty", registry=REGISTRY)
async def chatty(ctx: WorkloadContext) -> None:
    for i in range(1, 101):
        await ctx.report_progress(i / 100)
    await ctx.report_metric("backlog", 7)


@workload("guarded", registry=REGISTRY, breaker={"failure_threshold": 1, "cooldown_s": 60})
async def guarded(ctx: WorkloadContext) -> None:
    with pytest.raises(TransientError):
        async with ctx.dependency("db"):
            raise TransientError("db down")
    await ctx.sleep(30)


@workload("slow", registry=REGISTRY, timeout_s=0.1)
async def slow(ctx: WorkloadContext) -> None:
    await asyncio.sleep(30)


@workload("logs", registry=REGISTRY)
async def logs(ctx: WorkloadContext) -> None:
    ctx.logger.info("working", step=1)


@workload("oversized", registry=REGISTRY)
async def oversized(ctx: WorkloadContext) -> str:
    if ctx.params.get("checkpoint"):
        try:
            await ctx.save_checkpoint("x" * 100_000)
        except PermanentError:
            seen["checkpoint_refused"] = True
            raise
    return "x" * 100_000


@workload("oversized-in-child", registry=REGISTRY, isolation="process")
async def oversized_in_child(ctx: WorkloadContext) -> str:
    try:
        await ctx.save_checkpoint("x" * 100_000)
    except PermanentError:
        return "refused"
    return "accepted"


@workload("in-child", registry=REGISTRY, isolation="process", resources={"cpu": 0.5})
async def in_child(ctx: WorkloadContext) -> dict[str, Any]:
    state = dict(ctx.checkpoint or {"i": 0})
    state["i"] += 1
    await ctx.save_checkpoint(state)
    await ctx.report_progress(1.0)
    return {
        "pid": os.getpid(),
        "i": state["i"],
        "nice": os.nice(0),
        "cores": len(os.sched_getaffinity(0)),
    }


@workload("child-loop", registry=REGISTRY, isolation="process")
async def child_loop(ctx: WorkloadContext) -> dict[str, int]:
    state = dict(ctx.checkpoint or {"i": 0})
    while not await ctx.sleep(0.02):
        state["i"] += 1
        await ctx.save_checkpoint(state)
    return state


@workload(
    "child-dependency",
    registry=REGISTRY,
    isolation="process",
    breaker={"failure_threshold": 1, "cooldown_s": 60},
)
async def child_dependency(ctx: WorkloadContext) -> None:
    try:
        async with ctx.dependency("db"):
            raise TransientError("db down")
    except TransientError:
        await ctx.save_checkpoint({"failed": True})
    await ctx.sleep(30)


@workload("child-busy", registry=REGISTRY, isolation="process")
async def child_busy(ctx: WorkloadContext) -> None:
    await ctx.save_checkpoint({"started": True})
    while True:  # CPU-bound and never looks at ctx.cancelled
        pass


@workload("memory-hog", registry=REGISTRY, isolation="process", resources={"memory_mb": 64})
async def memory_hog(ctx: WorkloadContext) -> int:
    hoard = bytearray(1024 * 1024 * 1024)
    return len(hoard)


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


# --- a fake coordinator -------------------------------------------------------------------------


@dataclass
class FakeCoordinator:
    hub: MemoryHub
    heartbeat_interval_s: float = 0.05
    lease_ttl_s: float = 5.0
    grant_leases: bool = True
    refuse_fences: set[int] = field(default_factory=set)
    fence_in_next_grant: list[InventoryItem] = field(default_factory=list)
    ask_rejoin: bool = False
    """Answer heartbeats with ``rejoin=true`` (a new leader that does not know us) until a
    Hello is answered."""
    unanswered_hellos: int = 0
    unanswered_results: int = 0
    checkpoint_delay_s: float = 0.0
    refuse_hello: bool = False
    received: list[AnyMessage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.endpoint = self.hub.coordinator_endpoint()
        self.endpoint.on_message(self._handle)

    async def _handle(self, worker_id: str, message: AnyMessage) -> AnyMessage | None:
        self.received.append(message)
        if isinstance(message, Hello):
            if self.unanswered_hellos > 0:
                self.unanswered_hellos -= 1
                return None
            self.ask_rejoin = False
            if self.refuse_hello:
                return Refusal(code="unauthorized", reason="bad token")
            return Welcome(
                coordinator_id="fake",
                heartbeat_interval_s=self.heartbeat_interval_s,
                lease_ttl_s=self.lease_ttl_s,
            )
        if isinstance(message, Heartbeat):
            if not self.grant_leases:
                return None
            fenced, self.fence_in_next_grant = self.fence_in_next_grant, []
            return LeaseGrant(ttl_s=self.lease_ttl_s, fenced=fenced, rejoin=self.ask_rejoin)
        if isinstance(message, Result) and self.unanswered_results > 0:
            self.unanswered_results -= 1
            return None
        if isinstance(message, CheckpointMsg) and self.checkpoint_delay_s:
            await asyncio.sleep(self.checkpoint_delay_s)
        if isinstance(message, CheckpointMsg | Result):
            if message.fence in self.refuse_fences:
                return Refusal(code="fenced_out", reason="newer fence")
            return Ack()
        return None

    def of(self, kind: type[M]) -> list[M]:
        return [m for m in self.received if isinstance(m, kind)]

    async def wait_for(
        self, kind: type[M], where: Callable[[M], bool] = lambda m: True, within: float = 10.0
    ) -> M:
        async with asyncio.timeout(within):
            while True:
                for message in self.of(kind):
                    if where(message):
                        return message
                await asyncio.sleep(0.005)

    async def start(self, worker_id: str, type_name: str, fence: int = 7, **extra: Any) -> None:
        await self.endpoint.send(
            worker_id,
            StartReplica(
                workload_id=extra.pop("workload_id", "w1"),
                index=extra.pop("index", 0),
                fence=fence,
                attempt=extra.pop("attempt", 1),
                customer_id="acme",
                type_name=type_name,
                type_version="1",
                **extra,
            ),
        )


@dataclass
class Rig:
    coordinator: FakeCoordinator
    worker: Worker
    task: asyncio.Task[None]


@pytest.fixture
async def hub() -> AsyncIterator[MemoryHub]:
    hub = MemoryHub()
    yield hub
    await hub.coordinator_endpoint().stop()


async def start_rig(
    hub: MemoryHub,
    coordinator: FakeCoordinator | None = None,
    clock: FakeClock | None = None,
    **settings: Any,
) -> Rig:
    coordinator = coordinator or FakeCoordinator(hub)
    await coordinator.endpoint.start()
    values: dict[str, Any] = {
        "worker_id": "w-1",
        "slots": 4,
        "cpu": 4.0,
        "memory_mb": 4096,
        "labels": {"zone": "a"},
        "request_timeout_s": 0.5,
        "stop_grace_s": 2.0,
    }
    values.update(settings)
    worker = Worker(WorkerSettings(**values), hub.worker_link("w-1"), REGISTRY, clock=clock)
    task = asyncio.create_task(worker.run())
    await coordinator.wait_for(Heartbeat)
    return Rig(coordinator, worker, task)


@pytest.fixture
async def rig(hub: MemoryHub) -> AsyncIterator[Rig]:
    rig = await start_rig(hub)
    yield rig
    await rig.worker.close()
    await rig.task


@pytest.fixture(autouse=True)
def clear_seen() -> None:
    seen.clear()


# --- joining and heartbeats ---------------------------------------------------------------------


async def test_hello_announces_labels_capacity_and_types(rig: Rig) -> None:
    hello = rig.coordinator.of(Hello)[0]
    assert hello.worker_id == "w-1"
    assert hello.labels == {"zone": "a"}
    assert (hello.capacity.slots, hello.capacity.cpu, hello.capacity.memory_mb) == (4, 4.0, 4096)
    types = {t.name: t for t in hello.types}
    assert types["in-child"].isolation == "process"
    assert types["in-child"].resources_cpu == 0.5
    assert types["memory-hog"].resources_memory_mb == 64
    assert rig.worker.heartbeat_interval_s == 0.05  # adopted from Welcome


async def test_heartbeat_reports_inventory_free_capacity_and_breakers(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "guarded", fence=3)
    beat = await rig.coordinator.wait_for(
        Heartbeat, lambda m: m.metrics.get("breaker.guarded.db") == 2.0
    )
    assert [(i.workload_id, i.index, i.fence) for i in beat.inventory] == [("w1", 0, 3)]
    assert beat.free.slots == 3


async def test_hello_refused_ends_run_with_join_refused(hub: MemoryHub) -> None:
    coordinator = FakeCoordinator(hub, refuse_hello=True)
    await coordinator.endpoint.start()
    worker = Worker(WorkerSettings(worker_id="w-1"), hub.worker_link("w-1"), REGISTRY)
    with pytest.raises(JoinRefused):
        await asyncio.wait_for(worker.run(), 5)


async def test_a_link_that_cannot_connect_ends_run_with_its_error(hub: MemoryHub) -> None:
    class BrokenLink:
        connected = False

        def on_message(self, handler: object) -> None: ...

        def on_connect(self, handler: object) -> None: ...

        async def connect(self) -> None:
            raise BrokerError("no route to coordinator")

        async def close(self) -> None: ...

    worker = Worker(WorkerSettings(worker_id="w-1"), BrokenLink(), REGISTRY)  # type: ignore[arg-type]
    with pytest.raises(BrokerError, match="no route"):
        await asyncio.wait_for(worker.run(), 5)


async def test_reconnect_sends_hello_again_with_inventory(hub: MemoryHub, rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop", fence=4)
    await rig.coordinator.wait_for(CheckpointMsg)
    await hub.drop("w-1")
    hello = await rig.coordinator.wait_for(Hello, lambda m: bool(m.inventory))
    assert [(i.workload_id, i.fence) for i in hello.inventory] == [("w1", 4)]
    assert hello.session == rig.coordinator.of(Hello)[0].session
    assert hello.inventory[0].checkpoint_seq >= 1


async def test_a_grant_asking_to_rejoin_gets_one_hello_again_with_inventory(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop", fence=4)
    await rig.coordinator.wait_for(CheckpointMsg)
    rig.coordinator.ask_rejoin = True
    hello = await rig.coordinator.wait_for(Hello, lambda m: bool(m.inventory))
    assert [(i.workload_id, i.fence) for i in hello.inventory] == [("w1", 4)]
    assert hello.session == rig.coordinator.of(Hello)[0].session
    await asyncio.sleep(0.3)  # heartbeats go on (every 50 ms); nobody asks again
    assert len(rig.coordinator.of(Hello)) == 2
    assert ReplicaKey("w1", 0) in rig.worker.running  # the replica kept running throughout


async def test_a_lost_rejoin_hello_is_sent_again_while_heartbeats_go_on(rig: Rig) -> None:
    rig.coordinator.unanswered_hellos = 1
    rig.coordinator.ask_rejoin = True
    await eventually(lambda: not rig.coordinator.ask_rejoin, within=5)  # the second got through
    assert len(rig.coordinator.of(Hello)) == 3
    beats = len(rig.coordinator.of(Heartbeat))
    await eventually(lambda: len(rig.coordinator.of(Heartbeat)) > beats + 2)


# --- starting and writing -------------------------------------------------------------------------


async def test_start_reports_started_checkpoints_and_result_with_its_fence(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "two-checkpoints", fence=7, attempt=2)
    result = await rig.coordinator.wait_for(Result)
    assert result.outcome == "succeeded"
    assert result.result == {"i": 2, "attempt": 2, "customer": "acme"}
    checkpoints = rig.coordinator.of(CheckpointMsg)
    assert [(c.seq, c.fence, c.data) for c in checkpoints] == [
        (1, 7, b'{"i":1}'),
        (2, 7, b'{"i":2}'),
    ]
    order = [type(m) for m in rig.coordinator.received if type(m) in (Started, CheckpointMsg)]
    assert order[0] is Started and rig.coordinator.of(Started)[0].fence == 7
    assert result.fence == 7
    assert seen["checkpoint"] is None


async def test_resumes_from_the_checkpoint_it_is_started_with(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "two-checkpoints", checkpoint=b'{"i": 5}', checkpoint_seq=3)
    result = await rig.coordinator.wait_for(Result)
    assert seen["checkpoint"] == {"i": 5}
    assert result.result["i"] == 7
    assert [c.seq for c in rig.coordinator.of(CheckpointMsg)] == [4, 5]


async def test_fenced_refusal_raises_fenced_out_and_nothing_more_is_written(rig: Rig) -> None:
    rig.coordinator.refuse_fences.add(9)
    await rig.coordinator.start("w-1", "fenced-writer", fence=9)
    await rig.coordinator.wait_for(CheckpointMsg)
    await eventually(lambda: not rig.worker.running)
    await asyncio.sleep(0.1)
    assert seen["fenced_out"] is True
    assert len(rig.coordinator.of(CheckpointMsg)) == 1
    assert rig.coordinator.of(Result) == []
    assert rig.coordinator.of(Progress) == []


@pytest.mark.parametrize(
    ("kind", "error_class"),
    [("transient", "transient"), ("permanent", "permanent"), ("unknown", "transient")],
)
async def test_failures_are_reported_with_their_error_class(
    rig: Rig, kind: str, error_class: str
) -> None:
    await rig.coordinator.start("w-1", "raises", params={"kind": kind})
    result = await rig.coordinator.wait_for(Result)
    assert (result.outcome, result.error_class) == ("failed", error_class)
    assert result.error_message


async def test_unknown_type_fails_permanently(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "no-such-type")
    result = await rig.coordinator.wait_for(Result)
    assert (result.outcome, result.error_class) == ("failed", "permanent")
    assert "no-such-type" in (result.error_message or "")


async def test_a_workload_over_its_timeout_fails_with_error_class_timeout(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "slow")
    result = await rig.coordinator.wait_for(Result, within=5)
    assert (result.outcome, result.error_class) == ("failed", "timeout")


async def test_ctx_logger_lines_carry_the_replica_context(rig: Rig) -> None:
    with structlog.testing.capture_logs() as lines:
        await rig.coordinator.start("w-1", "logs", fence=4)
        await rig.coordinator.wait_for(Result)
    line = next(line for line in lines if line["event"] == "working")
    assert {k: line[k] for k in ("customer", "workload", "replica", "fence", "worker")} == {
        "customer": "acme",
        "workload": "w1",
        "replica": 0,
        "fence": 4,
        "worker": "w-1",
    }
    assert line["step"] == 1


@pytest.mark.parametrize("checkpoint", [False, True])
async def test_an_oversized_result_or_checkpoint_fails_permanently(
    checkpoint: bool,
) -> None:
    hub = MemoryHub(max_message_bytes=64 * 1024)
    rig = await start_rig(hub)
    try:
        await rig.coordinator.start("w-1", "oversized", params={"checkpoint": checkpoint})
        result = await rig.coordinator.wait_for(Result, within=5)
        assert (result.outcome, result.error_class) == ("failed", "permanent")
        assert "too_large" in (result.error_message or "")
        assert seen.get("checkpoint_refused", False) is checkpoint
        assert rig.coordinator.of(CheckpointMsg) == []
    finally:
        await rig.worker.close()
        await rig.task
        await hub.coordinator_endpoint().stop()


async def test_a_refused_checkpoint_reaches_the_workload_in_a_child() -> None:
    hub = MemoryHub(max_message_bytes=64 * 1024)
    rig = await start_rig(hub)
    try:
        await rig.coordinator.start("w-1", "oversized-in-child")
        result = await rig.coordinator.wait_for(Result, within=30)
        assert (result.outcome, result.result) == ("succeeded", "refused")
    finally:
        await rig.worker.close()
        await rig.task
        await hub.coordinator_endpoint().stop()


async def test_progress_bursts_coalesce_and_the_latest_wins(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "chatty")
    await rig.coordinator.wait_for(Result)
    progress = rig.coordinator.of(Progress)
    assert 1 <= len(progress) <= 3
    assert progress[-1].progress == 1.0
    assert progress[-1].metrics == {"backlog": 7.0}


async def test_a_checkpoint_cut_off_by_a_dropped_connection_is_sent_again_after_rejoining(
    hub: MemoryHub,
) -> None:
    coordinator = FakeCoordinator(hub, checkpoint_delay_s=0.2)
    rig = await start_rig(hub, coordinator)
    try:
        await coordinator.start("w-1", "two-checkpoints")
        await coordinator.wait_for(CheckpointMsg)
        await hub.drop("w-1")
        coordinator.checkpoint_delay_s = 0
        result = await coordinator.wait_for(Result)
        assert result.outcome == "succeeded"
        sent = [(c.id, c.seq) for c in coordinator.of(CheckpointMsg)]
        assert sent[0] == sent[1]  # the same message again, after a new Hello
        assert [seq for _, seq in sent[1:]] == [1, 2]
        kinds = [type(m) for m in coordinator.received]
        second_hello = [i for i, kind in enumerate(kinds) if kind is Hello][1]
        resent = [i for i, kind in enumerate(kinds) if kind is CheckpointMsg][1]
        assert second_hello < resent
    finally:
        await rig.worker.close()
        await rig.task


async def test_result_is_retried_with_the_same_id_until_acknowledged(hub: MemoryHub) -> None:
    coordinator = FakeCoordinator(hub, unanswered_results=2)
    rig = await start_rig(hub, coordinator, request_timeout_s=0.1)
    try:
        await coordinator.start("w-1", "two-checkpoints")
        await eventually(lambda: len(coordinator.of(Result)) >= 3)
        assert len({r.id for r in coordinator.of(Result)}) == 1
        await asyncio.sleep(0.3)
        assert len(coordinator.of(Result)) == 3
    finally:
        await rig.worker.close()
        await rig.task


# --- duplicate delivery: every command twice (and late) has one effect --------------------------


def _start_message(type_name: str, fence: int) -> StartReplica:
    return StartReplica(
        workload_id="w1",
        index=0,
        fence=fence,
        attempt=1,
        customer_id="acme",
        type_name=type_name,
        type_version="1",
    )


def _resent(message: M) -> M:
    """The same command under a new id (a coordinator that sends it again)."""
    return msgspec.structs.replace(message, id=new_id())


async def test_start_delivered_twice_or_late_runs_the_replica_once(rig: Rig) -> None:
    start = _start_message("two-checkpoints", fence=7)
    for message in (start, start, _resent(start)):
        await rig.coordinator.endpoint.send("w-1", message)
    await rig.coordinator.wait_for(Result)
    await rig.coordinator.endpoint.send("w-1", _resent(start))  # after the attempt ended
    await asyncio.sleep(0.2)
    assert len(rig.coordinator.of(Result)) == 1
    assert [c.seq for c in rig.coordinator.of(CheckpointMsg)] == [1, 2]
    assert not rig.worker.running


async def test_a_stale_start_after_a_newer_one_is_ignored(rig: Rig) -> None:
    await rig.coordinator.endpoint.send("w-1", _start_message("loop", fence=6))
    await rig.coordinator.wait_for(CheckpointMsg)
    await rig.coordinator.endpoint.send("w-1", _start_message("loop", fence=5))
    await asyncio.sleep(0.2)
    assert {m.fence for m in rig.coordinator.of(Started)} == {6}
    assert {m.fence for m in rig.coordinator.of(CheckpointMsg)} == {6}
    assert rig.worker.running


async def test_stop_delivered_twice_yields_once(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop", fence=5)
    await rig.coordinator.wait_for(CheckpointMsg)
    stop = StopReplica(workload_id="w1", index=0, fence=5, reason="preempt")
    for message in (stop, stop, _resent(stop)):
        await rig.coordinator.endpoint.send("w-1", message)
    await rig.coordinator.wait_for(Result)
    await asyncio.sleep(0.2)
    assert [(r.outcome, r.fence) for r in rig.coordinator.of(Result)] == [("yielded", 5)]


async def test_drain_delivered_twice_yields_and_says_bye_once(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop")
    await rig.coordinator.wait_for(CheckpointMsg)
    drain = Drain(worker_id="w-1")
    for message in (drain, drain, _resent(drain)):
        await rig.coordinator.endpoint.send("w-1", message)
    await asyncio.wait_for(rig.task, 5)
    assert [r.outcome for r in rig.coordinator.of(Result)] == ["yielded"]
    assert len(rig.coordinator.of(Bye)) == 1


async def test_a_late_grant_naming_an_older_fence_leaves_the_replica_running(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop", fence=5)
    await rig.coordinator.wait_for(CheckpointMsg)
    rig.coordinator.fence_in_next_grant = [InventoryItem(workload_id="w1", index=0, fence=4)]
    beats = len(rig.coordinator.of(Heartbeat))
    await eventually(lambda: len(rig.coordinator.of(Heartbeat)) >= beats + 3)
    assert rig.worker.running and rig.coordinator.of(Result) == []


# --- stopping ----------------------------------------------------------------------------------


async def test_preempt_stop_checkpoints_then_yields(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop", fence=5)
    await rig.coordinator.wait_for(CheckpointMsg, lambda m: m.seq >= 2)
    await rig.coordinator.endpoint.send(
        "w-1", StopReplica(workload_id="w1", index=0, fence=5, reason="preempt")
    )
    result = await rig.coordinator.wait_for(Result)
    assert (result.outcome, result.fence) == ("yielded", 5)
    last = rig.coordinator.of(CheckpointMsg)[-1]
    assert b'"final":true' in last.data
    assert rig.coordinator.received.index(last) < rig.coordinator.received.index(result)


async def test_cancel_stop_sends_no_result(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop", fence=5)
    await rig.coordinator.wait_for(CheckpointMsg)
    await rig.coordinator.endpoint.send(
        "w-1", StopReplica(workload_id="w1", index=0, fence=5, reason="cancel")
    )
    await eventually(lambda: not rig.worker.running)
    assert rig.coordinator.of(Result) == []


async def test_stop_for_an_older_fence_is_ignored(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop", fence=5)
    await rig.coordinator.endpoint.send(
        "w-1", StopReplica(workload_id="w1", index=0, fence=4, reason="preempt")
    )
    await asyncio.sleep(0.2)
    assert rig.worker.running
    assert rig.coordinator.of(Result) == []


async def test_workload_ignoring_a_stop_is_cut_off_after_the_grace_period(hub: MemoryHub) -> None:
    rig = await start_rig(hub, stop_grace_s=0.1)
    try:
        await rig.coordinator.start("w-1", "ignores-stop", fence=2)
        await rig.coordinator.wait_for(Started)
        await rig.coordinator.endpoint.send(
            "w-1", StopReplica(workload_id="w1", index=0, fence=2, reason="pause")
        )
        result = await rig.coordinator.wait_for(Result, within=2)
        assert result.outcome == "yielded"
    finally:
        await rig.worker.close()
        await rig.task


async def test_lease_grant_naming_a_replica_fences_it_at_once(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop", fence=5)
    await rig.coordinator.wait_for(CheckpointMsg)
    rig.coordinator.fence_in_next_grant = [InventoryItem(workload_id="w1", index=0, fence=5)]
    await eventually(lambda: not rig.worker.running)
    writes = len(rig.coordinator.of(CheckpointMsg))
    await asyncio.sleep(0.1)
    assert len(rig.coordinator.of(CheckpointMsg)) == writes
    assert rig.coordinator.of(Result) == []


async def test_replica_self_fences_when_no_grant_arrives_within_the_lease_ttl(
    hub: MemoryHub,
) -> None:
    clock = FakeClock()
    coordinator = FakeCoordinator(hub, grant_leases=False)
    rig = await start_rig(hub, coordinator, clock=clock)
    try:
        await coordinator.start("w-1", "loop", fence=5, lease_ttl_s=5.0)
        await coordinator.wait_for(CheckpointMsg, lambda m: m.seq >= 2)
        assert rig.worker.running  # within its lease
        clock.advance(5.5)
        await eventually(lambda: not rig.worker.running)
        writes = len(coordinator.of(CheckpointMsg))
        await asyncio.sleep(0.1)
        assert len(coordinator.of(CheckpointMsg)) == writes
        assert coordinator.of(Result) == []
        assert all(not beat.inventory for beat in coordinator.of(Heartbeat)[-1:])
    finally:
        await rig.worker.close()
        await rig.task


async def test_granted_heartbeats_keep_a_replica_past_its_first_lease(hub: MemoryHub) -> None:
    coordinator = FakeCoordinator(hub, lease_ttl_s=0.5)
    rig = await start_rig(hub, coordinator)
    try:
        await coordinator.start("w-1", "loop", fence=5, lease_ttl_s=0.5)
        await asyncio.sleep(1.2)
        assert rig.worker.running
        seq = coordinator.of(CheckpointMsg)[-1].seq
        await coordinator.wait_for(CheckpointMsg, lambda m: m.seq > seq)
    finally:
        await rig.worker.close()
        await rig.task


# --- draining ------------------------------------------------------------------------------------


async def test_drain_yields_every_replica_then_says_bye(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop", workload_id="a")
    await rig.coordinator.start("w-1", "loop", workload_id="b")
    await rig.coordinator.wait_for(CheckpointMsg, lambda m: m.workload_id == "b")
    await rig.worker.drain()
    await asyncio.wait_for(rig.task, 5)
    results = {r.workload_id: r.outcome for r in rig.coordinator.of(Result)}
    assert results == {"a": "yielded", "b": "yielded"}
    assert not rig.coordinator.of(Heartbeat)[-1].healthy  # no new work while draining
    bye = rig.coordinator.of(Bye)
    assert len(bye) == 1
    assert all(
        rig.coordinator.received.index(bye[0]) > rig.coordinator.received.index(r)
        for r in rig.coordinator.of(Result)
    )


async def test_drain_message_from_the_coordinator_ends_the_worker(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "loop")
    await rig.coordinator.wait_for(CheckpointMsg)
    await rig.coordinator.endpoint.send("w-1", Drain(worker_id="w-1"))
    await asyncio.wait_for(rig.task, 5)
    assert [r.outcome for r in rig.coordinator.of(Result)] == ["yielded"]
    assert rig.coordinator.of(Bye)


async def test_request_drain_works_from_a_signal_handler(rig: Rig) -> None:
    rig.worker.request_drain()
    await asyncio.wait_for(rig.task, 5)
    assert rig.coordinator.of(Bye)


# --- runtime registration ------------------------------------------------------------------------


async def test_load_type_imports_the_entrypoint_and_announces_it(rig: Rig) -> None:
    info = TypeInfo(name="runtime-noop", version="2", entrypoint="examples.demo_jobs:noop")
    await rig.coordinator.endpoint.send("w-1", LoadType(type=info))
    hello = await rig.coordinator.wait_for(
        Hello, lambda m: any(t.name == "runtime-noop" for t in m.types)
    )
    assert hello.session == rig.coordinator.of(Hello)[0].session
    await rig.coordinator.endpoint.send(
        "w-1",
        StartReplica(
            workload_id="rt",
            index=0,
            fence=1,
            attempt=1,
            customer_id="acme",
            type_name="runtime-noop",
            type_version="2",
        ),
    )
    result = await rig.coordinator.wait_for(Result)
    assert result.outcome == "succeeded"


async def test_load_type_that_cannot_be_imported_changes_nothing(rig: Rig) -> None:
    info = TypeInfo(name="nope", entrypoint="no_such_module_here:fn")
    await rig.coordinator.endpoint.send("w-1", LoadType(type=info))
    await asyncio.sleep(0.2)
    assert len(rig.coordinator.of(Hello)) == 1


# --- process isolation --------------------------------------------------------------------------


async def test_process_isolation_runs_in_a_child_and_proxies_the_context(rig: Rig) -> None:
    await rig.coordinator.start(
        "w-1", "in-child", fence=3, checkpoint=b'{"i": 1}', checkpoint_seq=1
    )
    result = await rig.coordinator.wait_for(Result, within=30)
    assert result.outcome == "succeeded", result.error_message
    assert result.result["pid"] != os.getpid()
    assert result.result["i"] == 2
    assert result.result["nice"] >= 5  # cpu 0.5: a nicer child, pinned to one core
    assert result.result["cores"] == 1
    checkpoint = rig.coordinator.of(CheckpointMsg)[0]
    assert (checkpoint.seq, checkpoint.fence, checkpoint.data) == (2, 3, b'{"i":2}')
    assert rig.coordinator.of(Progress)[-1].progress == 1.0


async def test_memory_hog_in_a_child_fails_with_error_class_resource(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "memory-hog")
    result = await rig.coordinator.wait_for(Result, within=30)
    assert (result.outcome, result.error_class) == ("failed", "resource")


async def test_a_child_dependency_failure_opens_the_breaker_in_the_worker(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "child-dependency")
    await rig.coordinator.wait_for(CheckpointMsg, within=30)
    await rig.coordinator.wait_for(
        Heartbeat, lambda m: m.metrics.get("breaker.child-dependency.db") == 2.0
    )


async def test_stopped_child_checkpoints_and_yields(rig: Rig) -> None:
    await rig.coordinator.start("w-1", "child-loop", fence=8)
    await rig.coordinator.wait_for(CheckpointMsg, lambda m: m.seq >= 2, within=30)
    await rig.coordinator.endpoint.send(
        "w-1", StopReplica(workload_id="w1", index=0, fence=8, reason="scale_down")
    )
    result = await rig.coordinator.wait_for(Result)
    assert result.outcome == "yielded"


async def test_a_child_ignoring_a_stop_is_killed_after_the_grace_period(hub: MemoryHub) -> None:
    rig = await start_rig(hub, stop_grace_s=0.2)
    try:
        await rig.coordinator.start("w-1", "child-busy", fence=6)
        await rig.coordinator.wait_for(CheckpointMsg, within=30)
        children = multiprocessing.active_children()
        await rig.coordinator.endpoint.send(
            "w-1", StopReplica(workload_id="w1", index=0, fence=6, reason="preempt")
        )
        result = await rig.coordinator.wait_for(Result, within=10)
        assert result.outcome == "yielded"
        assert children and all(not child.is_alive() for child in children)
    finally:
        await rig.worker.close()
        await rig.task


async def test_closing_the_worker_kills_its_children(hub: MemoryHub) -> None:
    rig = await start_rig(hub, stop_grace_s=30)
    await rig.coordinator.start("w-1", "child-loop")
    await rig.coordinator.wait_for(CheckpointMsg, within=30)
    children = multiprocessing.active_children()
    assert children
    await rig.worker.close()
    await rig.task
    assert all(not child.is_alive() for child in children)
    assert rig.coordinator.of(Result) == []
