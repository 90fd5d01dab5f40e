"""Small, fast workloads for the demo and the end-to-end tests.

- ``demo-counter``: counts to ``steps``, sleeping ``step_s`` per step and checkpointing each
  step; stopped, it yields and resumes from the last count.
- ``demo-flaky``: fails transiently ``fail_times`` times, then succeeds. It counts its failures
  in its checkpoint, so the count survives retries on any worker.
- ``demo-permanent``: fails permanently at once.
- ``demo-partial-batch``: processes ``items`` numbered items with the batch helper; those in
  ``fail`` fail and are reported as failed items while the rest succeed.
- ``demo-dependency``: calls a dependency behind a circuit breaker; the dependency is down while
  the file ``health_file`` contains ``down``. While the breaker is open the call waits.
- ``demo-noop``: returns at once (throughput benchmarks).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from niyanta import PermanentError, TransientError, WorkloadContext, batch, workload


@workload("demo-counter", resources={"cpu": 0.1, "memory_mb": 32})
async def counter(ctx: WorkloadContext) -> dict[str, int]:
    steps = int(ctx.params.get("steps", 10))
    step_s = float(ctx.params.get("step_s", 0.1))
    state = ctx.checkpoint or {"count": 0}
    resumed_from = int(state["count"])
    while state["count"] < steps:
        if await ctx.sleep(step_s):
            break  # stop requested: the last checkpoint is where we resume
        state = {"count": state["count"] + 1}
        await ctx.save_checkpoint(state)
        await ctx.report_progress(state["count"] / steps)
    return {"count": int(state["count"]), "resumed_from": resumed_from}


@workload("demo-flaky", retry={"max_attempts": 5, "initial_backoff_s": 0.2, "max_backoff_s": 2.0})
async def flaky(ctx: WorkloadContext) -> dict[str, int]:
    fail_times = int(ctx.params.get("fail_times", 2))
    failures = int((ctx.checkpoint or {}).get("failures", 0))
    if failures < fail_times:
        await ctx.save_checkpoint({"failures": failures + 1})
        raise TransientError(f"simulated transient failure {failures + 1} of {fail_times}")
    return {"failures": failures}


@workload("demo-permanent")
async def permanent(ctx: WorkloadContext) -> None:
    raise PermanentError(str(ctx.params.get("message", "simulated permanent failure")))


@workload("demo-partial-batch")
async def partial_batch(ctx: WorkloadContext) -> dict[str, object]:
    failing = {int(i) for i in ctx.params.get("fail", [])}

    async def handle(item: int) -> int:
        if item in failing:
            raise ValueError(f"item {item} is bad")
        return item * item

    outcome = await batch(
        ctx,
        list(range(int(ctx.params.get("items", 10)))),
        handle,
        checkpoint_every=int(ctx.params.get("checkpoint_every", 5)),
    )
    return outcome.summary()


@workload("demo-dependency", breaker={"failure_threshold": 3, "cooldown_s": 0.5})
async def dependency(ctx: WorkloadContext) -> dict[str, int]:
    health_file = Path(str(ctx.params["health_file"]))
    calls = int(ctx.params.get("calls", 5))
    attempts = 0

    async def call_dependency() -> None:
        if await asyncio.to_thread(_is_down, health_file):
            raise TransientError("dependency is down")

    done = int((ctx.checkpoint or {}).get("done", 0))
    while done < calls and not ctx.cancelled:
        attempts += 1
        try:
            await ctx.call("flaky-service", call_dependency)
        except TransientError:
            await ctx.sleep(0.05)
            continue
        done += 1
        await ctx.save_checkpoint({"done": done})
    return {"done": done, "attempts": attempts}


def _is_down(health_file: Path) -> bool:
    return health_file.exists() and health_file.read_text().strip() == "down"


@workload("demo-noop")
async def noop(ctx: WorkloadContext) -> None:
    return None
