"""A workload for the observability tests: checkpoints ``steps`` times and logs each step through
``ctx.logger``, so that its lines (written by workload code) can be followed in the worker's log."""

from __future__ import annotations

from niyanta import WorkloadContext, workload


@workload("obs-steps")
async def steps(ctx: WorkloadContext) -> dict[str, int]:
    state = ctx.checkpoint or {"step": 0}
    while state["step"] < int(ctx.params.get("steps", 3)):
        state = {"step": state["step"] + 1}
        await ctx.save_checkpoint(state)
        ctx.logger.info("obs.step", step=state["step"])
    return {"steps": int(state["step"])}
