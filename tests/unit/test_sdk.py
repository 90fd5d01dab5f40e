"""The public SDK: what ``niyanta`` exports, the ``@workload`` decorator and its registry, the
circuit breaker and the batch helper."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import niyanta
from niyanta import (
    BreakerPolicy,
    BreakerState,
    CircuitBreaker,
    PermanentError,
    Registry,
    TransientError,
    WorkloadContext,
    batch,
    workload,
)
from niyanta.broker.messages import TypeInfo
from niyanta.coordinator.type_info import type_from_info
from niyanta.errors import NiyantaError, UnknownWorkloadType
from niyanta.model import Isolation
from niyanta.testing import run_workload
from niyanta.worker.circuit_breaker import BreakerBoard


async def module_level_handler(ctx: WorkloadContext) -> str:
    return "ok"


def test_the_sdk_names_are_exported() -> None:
    for name in ("workload", "WorkloadContext", "TransientError", "PermanentError", "FencedOut"):
        assert name in niyanta.__all__
        assert getattr(niyanta, name) is not None
    assert issubclass(niyanta.FencedOut, NiyantaError)


# --- decorator and registry ---------------------------------------------------------------------


def test_decorator_registers_the_type_with_its_policies() -> None:
    registry = Registry()

    @workload(
        "resize",
        version="3",
        resources={"cpu": 0.5, "memory_mb": 128},
        retry={"max_attempts": 7, "initial_backoff_s": 0.5},
        checkpoint={"interval_s": 2.0},
        timeout_s=30,
        registry=registry,
    )
    async def resize(ctx: WorkloadContext) -> None:
        return None

    definition = registry.get("resize", "3")
    assert definition.handler is resize
    assert definition.type.resources.memory_mb == 128
    assert definition.type.retry.max_attempts == 7
    assert definition.type.checkpoint.interval_s == 2.0
    assert definition.type.timeout_s == 30
    assert definition.type.isolation is Isolation.ASYNC
    info = registry.type_infos()[0]
    assert (info.name, info.version, info.resources_cpu, info.isolation) == (
        "resize",
        "3",
        0.5,
        "async",
    )
    assert info.entrypoint is None  # a local function cannot be imported by another process
    assert info.retry["max_attempts"] == 7 and info.checkpoint["interval_s"] == 2.0
    assert info.timeout_s == 30
    # The coordinator registers an announced type with the policies the worker declared.
    assert type_from_info(info) == definition.type


def test_decorator_rejects_unknown_policy_fields_and_bad_isolation() -> None:
    with pytest.raises(ValueError, match="unknown resources"):
        workload("x", resources={"gpus": 1}, registry=Registry())
    with pytest.raises(ValueError):
        workload("x", isolation="thread", registry=Registry())


def test_process_isolation_needs_an_importable_handler() -> None:
    async def local(ctx: WorkloadContext) -> None:
        return None

    with pytest.raises(ValueError, match="importable"):
        workload("x", isolation="process", registry=Registry())(local)
    registry = Registry()
    workload("y", isolation="process", registry=registry)(module_level_handler)
    assert registry.get("y", "1").type.entrypoint == f"{__name__}:module_level_handler"


def test_a_type_cannot_be_registered_twice_with_different_code() -> None:
    registry = Registry()

    async def first(ctx: WorkloadContext) -> None:
        return None

    async def second(ctx: WorkloadContext) -> None:
        return None

    workload("dup", registry=registry)(first)
    workload("dup", registry=registry)(first)  # the same code again is fine
    with pytest.raises(ValueError, match="already registered"):
        workload("dup", registry=registry)(second)
    workload("dup", version="2", registry=registry)(second)  # another version is another type


def test_unknown_type_lookup_raises() -> None:
    with pytest.raises(UnknownWorkloadType):
        Registry().get("missing", "1")


def test_registry_loads_a_module_function_entrypoint_at_runtime() -> None:
    registry = Registry()
    info = TypeInfo(
        name="loaded",
        version="5",
        entrypoint="examples.demo_jobs:counter",
        resources_cpu=2.0,
        retry={"max_attempts": 9},
        timeout_s=12.0,
    )
    definition = registry.load(info)
    assert registry.get("loaded", "5") is definition
    # What was registered wins over the decorator.
    assert definition.type.resources.cpu == 2.0
    assert definition.type.retry.max_attempts == 9
    assert definition.type.timeout_s == 12.0
    assert definition.handler.__name__ == "counter"
    with pytest.raises(ModuleNotFoundError):
        registry.load(TypeInfo(name="x", entrypoint="nope_mod:fn"))
    with pytest.raises(ValueError, match="module:function"):
        registry.load(TypeInfo(name="x", entrypoint="no-colon"))


# --- circuit breaker ----------------------------------------------------------------------------


async def test_breaker_opens_after_consecutive_transient_failures() -> None:
    breaker = CircuitBreaker("t/db", BreakerPolicy(failure_threshold=3, cooldown_s=60))
    for _ in range(2):
        breaker.record_failure()
    breaker.record_success()  # resets the run of failures
    for _ in range(2):
        breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN


async def test_open_breaker_makes_callers_wait_then_a_healthy_probe_closes_it() -> None:
    breaker = CircuitBreaker("t/db", BreakerPolicy(failure_threshold=1, cooldown_s=0.2))
    breaker.record_failure()
    loop = asyncio.get_running_loop()
    opened = loop.time()
    waiters = [asyncio.create_task(breaker.acquire()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert not any(w.done() for w in waiters)  # waiting, not failing
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    assert loop.time() - opened >= 0.19
    assert len(done) == 1  # exactly one probe
    assert breaker.state is BreakerState.HALF_OPEN
    await asyncio.sleep(0.05)
    assert all(not w.done() for w in pending)
    breaker.record_success()
    await asyncio.wait_for(asyncio.gather(*pending), 1)
    assert breaker.state is BreakerState.CLOSED


async def test_failed_probe_opens_the_breaker_for_another_cooldown() -> None:
    breaker = CircuitBreaker("t/db", BreakerPolicy(failure_threshold=5, cooldown_s=0.1))
    for _ in range(5):
        breaker.record_failure()
    await breaker.acquire()
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.record_failure()
    assert breaker.state is BreakerState.OPEN
    waiter = asyncio.create_task(breaker.acquire())
    await asyncio.sleep(0.05)
    assert not waiter.done()
    await asyncio.wait_for(waiter, 1)


async def test_dependency_failures_count_when_transient_but_not_when_permanent() -> None:
    async def call_dependency(ctx: WorkloadContext) -> None:
        async with ctx.dependency("db"):
            raise PermanentError("bad input") if ctx.params["permanent"] else TransientError("down")

    registry = Registry()
    workload("db-user", breaker={"failure_threshold": 1, "cooldown_s": 60}, registry=registry)(
        call_dependency
    )
    board = BreakerBoard()
    await run_workload("db-user", {"permanent": True}, breakers=board, registry=registry)
    breaker = board.get("db-user", "db", BreakerPolicy())
    assert breaker.state is BreakerState.CLOSED
    await run_workload("db-user", {"permanent": False}, breakers=board, registry=registry)
    assert breaker.state is BreakerState.OPEN


async def test_replicas_of_a_type_share_a_breaker_through_ctx_dependency() -> None:
    registry = Registry()
    calls: list[str] = []

    @workload("dep-user", breaker={"failure_threshold": 2, "cooldown_s": 0.1}, registry=registry)
    async def dep_user(ctx: WorkloadContext) -> str:
        async def call() -> str:
            calls.append(ctx.params["mode"])
            if ctx.params["mode"] == "fail":
                raise TransientError("down")
            return "up"

        return await ctx.call("api", call)

    board = BreakerBoard()
    for _ in range(2):
        failed = await run_workload(dep_user, {"mode": "fail"}, breakers=board)
        assert failed.error_class == "transient"
    breaker = board.get("dep-user", "api", BreakerPolicy())
    assert breaker.state is BreakerState.OPEN
    assert board.metrics() == {"breaker.dep-user.api": 2.0}
    healthy = await run_workload(dep_user, {"mode": "ok"}, breakers=board)  # waits, then probes
    assert healthy.result == "up"
    assert breaker.state is BreakerState.CLOSED


# --- batch helper -------------------------------------------------------------------------------


async def double_unless_bad(item: int) -> int:
    if item % 4 == 3:
        raise ValueError(f"bad item {item}")
    return item * 2


async def test_batch_continues_past_failing_items_and_records_them() -> None:
    async def handler(ctx: WorkloadContext) -> dict[str, Any]:
        outcome = await batch(ctx, list(range(10)), double_unless_bad, checkpoint_every=4)
        return {"summary": outcome.summary(), "results": outcome.results}

    run = await run_workload(handler)
    assert run.outcome == "succeeded"
    assert run.result["summary"] == {"total": 10, "succeeded": 8, "failed": 2}
    assert run.result["results"] == [0, 2, 4, 8, 10, 12, 16, 18]
    assert [(f["index"], f["item"]) for f in run.failed_items] == [(3, 3), (7, 7)]
    assert "bad item 3" in run.failed_items[0]["error"]
    assert [c["niyanta.batch"]["next"] for c in run.checkpoints] == [4, 8, 10]
    assert run.progress[-1] == 1.0


async def test_batch_resumes_after_its_checkpoint_without_repeating_items() -> None:
    processed: list[int] = []

    async def record(item: int) -> int:
        processed.append(item)
        return await double_unless_bad(item)

    async def handler(ctx: WorkloadContext) -> dict[str, Any]:
        outcome = await batch(
            ctx, list(range(10)), record, checkpoint_every=2, extra_state=lambda: {"v": 1}
        )
        return {"stopped": outcome.stopped, **outcome.summary()}

    first = await run_workload(handler, stop_after_checkpoints=2)
    assert first.outcome == "yielded"
    assert processed == [0, 1, 2, 3]
    assert first.last_checkpoint["v"] == 1
    processed.clear()
    second = await run_workload(handler, checkpoint=first.last_checkpoint)
    assert processed == [4, 5, 6, 7, 8, 9]
    assert second.result == {"stopped": False, "total": 10, "succeeded": 8, "failed": 2}
    assert [f["index"] for f in second.failed_items] == [3, 7]  # earlier failures still reported
