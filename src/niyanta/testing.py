"""Test workloads with no infrastructure: ``await run_workload(handler, params)``.

The handler runs in this event loop with an in-memory context that records every checkpoint,
progress report and metric. It can simulate what the platform does to a workload: a stop
request after N checkpoints (``stop_after_checkpoints``, e.g. a preemption) and a fence refusal
of the Nth write (``fence_after_writes``). The outcome is decided by the same rules the worker
uses, so ``run.outcome`` is what the coordinator would record. Types declared with
``isolation="process"`` run in-process here.

```python
from niyanta.testing import run_workload

async def test_resumes_from_checkpoint():
    first = await run_workload(count_primes, {"limit": 100}, stop_after_checkpoints=2)
    assert first.outcome == "yielded"
    second = await run_workload(count_primes, {"limit": 100}, checkpoint=first.last_checkpoint)
    assert second.result["found"] == 25
```
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from niyanta.errors import FencedOut
from niyanta.model import JSON, ErrorClass
from niyanta.worker.circuit_breaker import BreakerBoard, BreakerPolicy, CircuitBreaker
from niyanta.worker.context import (
    UNKNOWN_FENCE,
    WorkloadContext,
    decode_json,
    encode_json,
)
from niyanta.worker.outcome import decide_outcome
from niyanta.worker.registry import Handler, Registry, WorkloadDefinition, default_registry

__all__ = ["WorkloadRun", "run_workload"]


@dataclass(slots=True)
class WorkloadRun:
    """What a workload did in one run."""

    outcome: str
    """``succeeded``, ``failed``, ``yielded`` or ``silent`` (fenced out or cancelled)."""
    result: JSON = None
    error: BaseException | None = None
    error_class: ErrorClass | None = None
    failed_items: list[JSON] = field(default_factory=list)
    checkpoints: list[JSON] = field(default_factory=list)
    """Every committed checkpoint, in order (decoded JSON)."""
    progress: list[float] = field(default_factory=list)
    metrics: list[tuple[str, float]] = field(default_factory=list)
    refused_writes: int = 0
    """Checkpoints the simulated coordinator refused as fenced out (after the first refusal
    the SDK itself stops any further write before it is sent)."""

    @property
    def last_checkpoint(self) -> JSON:
        return self.checkpoints[-1] if self.checkpoints else None


class _RecordingBackend:
    def __init__(
        self,
        run: WorkloadRun,
        definition: WorkloadDefinition | None,
        breakers: BreakerBoard,
        stop_after_checkpoints: int | None,
        stop_reason: str,
        fence_after_writes: int | None,
    ) -> None:
        self._run = run
        self._definition = definition
        self._breakers = breakers
        self._stop_after = stop_after_checkpoints
        self._stop_reason = stop_reason
        self._fence_after = fence_after_writes
        self._writes = 0
        self.ctx: WorkloadContext | None = None

    async def write_checkpoint(self, seq: int, data: bytes) -> None:
        ctx = self._context()
        self._writes += 1
        if self._fence_after is not None and self._writes > self._fence_after:
            self._run.refused_writes += 1
            raise FencedOut(ctx.workload_id, ctx.replica, ctx.fence_token, UNKNOWN_FENCE)
        await asyncio.sleep(0)  # a real write yields to the event loop too
        self._run.checkpoints.append(decode_json(data))
        if self._stop_after is not None and len(self._run.checkpoints) >= self._stop_after:
            ctx.request_stop(self._stop_reason)

    def report(self, progress: float | None, metrics: Mapping[str, float]) -> None:
        if progress is not None:
            self._run.progress.append(progress)
        self._run.metrics.extend(metrics.items())

    async def acquire_dependency(self, dependency: str) -> None:
        await self._breaker(dependency).acquire()

    def release_dependency(self, dependency: str, failure: bool | None) -> None:
        self._breaker(dependency).release(failure)

    def _breaker(self, dependency: str) -> CircuitBreaker:
        policy = self._definition.breaker if self._definition else BreakerPolicy()
        return self._breakers.get(self._context().type_name, dependency, policy)

    def _context(self) -> WorkloadContext:
        assert self.ctx is not None
        return self.ctx


async def run_workload(
    handler_or_name: Handler | str,
    params: Mapping[str, JSON] | None = None,
    checkpoint: JSON = None,
    *,
    checkpoint_seq: int | None = None,
    version: str = "1",
    attempt: int = 1,
    customer: str = "test-customer",
    workload_id: str = "test-workload",
    replica: int = 0,
    worker_id: str = "test-worker",
    fence: int = 1,
    stop_after_checkpoints: int | None = None,
    stop_reason: str = "preempt",
    fence_after_writes: int | None = None,
    breakers: BreakerBoard | None = None,
    registry: Registry | None = None,
) -> WorkloadRun:
    """Run a workload (a handler, or a registered type's name) once and report what it did.

    ``checkpoint`` is the state to resume from (JSON round-tripped, as in production);
    ``stop_after_checkpoints=N`` asks the workload to stop (``stop_reason``) once its Nth
    checkpoint is committed; ``fence_after_writes=N`` refuses every checkpoint after the Nth as
    fenced out. Pass one ``breakers`` board to several runs to share circuit breakers.
    """
    definition = _definition_for(handler_or_name, version, registry)
    handler = definition.handler if definition is not None else handler_or_name
    assert callable(handler)
    run = WorkloadRun(outcome="")
    backend = _RecordingBackend(
        run,
        definition,
        breakers if breakers is not None else BreakerBoard(),
        stop_after_checkpoints,
        stop_reason,
        fence_after_writes,
    )
    resume = decode_json(encode_json(checkpoint)) if checkpoint is not None else None
    ctx = WorkloadContext(
        backend=backend,
        params=decode_json(encode_json(dict(params or {}), "params")),
        checkpoint=resume,
        checkpoint_seq=checkpoint_seq if checkpoint_seq is not None else int(resume is not None),
        fence_token=fence,
        attempt=attempt,
        customer=customer,
        workload_id=workload_id,
        replica=replica,
        worker_id=worker_id,
        type_name=definition.type.name if definition is not None else _name_of(handler),
    )
    backend.ctx = ctx
    result: JSON = None
    error: BaseException | None = None
    try:
        result = await handler(ctx)
        encode_json(result, "result")  # a result must be JSON, as it is stored
    except Exception as exc:
        error = exc
    outcome = decide_outcome(
        stop_reason=ctx.stop_reason,
        fenced=ctx.fenced,
        failed_items=ctx.failed_items,
        result=result,
        error=error,
    )
    run.outcome = outcome.kind.value
    run.result = outcome.result
    run.error = error
    run.error_class = outcome.error_class
    run.failed_items = outcome.failed_items
    return run


def _definition_for(
    handler_or_name: Handler | str, version: str, registry: Registry | None
) -> WorkloadDefinition | None:
    if isinstance(handler_or_name, str):
        return (registry or default_registry).get(handler_or_name, version)
    definition: WorkloadDefinition | None = getattr(handler_or_name, "__niyanta_workload__", None)
    return definition


def _name_of(handler: object) -> str:
    return str(getattr(handler, "__name__", "workload"))
