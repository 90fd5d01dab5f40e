"""Workloads for the observability tests: they checkpoint ``steps`` times and log each step
through ``ctx.logger``, so that their lines (written by workload code, in the worker or in a
child process) can be followed in the worker's log."""

from __future__ import annotations

from niyanta import WorkloadContext, workload


async def _count_steps(ctx: WorkloadContext) -> dict[str, int]:
    state = ctx.checkpoint or {"step": 0}
    while state["step"] < int(ctx.params.get("steps", 3)):
        state = {"step": state["step"] + 1}
        await ctx.save_checkpoint(state)
        ctx.logger.info("obs.step", step=state["step"])
    return {"steps": int(state["step"])}


@workload("obs-steps")
async def steps(ctx: WorkloadContext) -> dict[str, int]:
    return await _count_steps(ctx)


@workload("obs-steps-isolated", isolation="process")
async def steps_isolated(ctx: WorkloadContext) -> dict[str, int]:
    return await _count_steps(ctx)
