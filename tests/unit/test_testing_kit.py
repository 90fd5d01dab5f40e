"""``niyanta.testing.run_workload``: the kit users test their workloads with."""

from __future__ import annotations

from typing import Any

import pytest

from niyanta import FencedOut, PermanentError, Registry, WorkloadContext, workload
from niyanta.testing import run_workload

REGISTRY = Registry()


@workload("steps", registry=REGISTRY)
async def steps(ctx: WorkloadContext) -> dict[str, Any]:
    state = ctx.checkpoint or {"i": 0}
    while state["i"] < ctx.params["n"]:
        if ctx.cancelled:
            return {"stopped_at": state["i"]}
        state = {"i": state["i"] + 1}
        await ctx.save_checkpoint(state)
        await ctx.report_progress(state["i"] / ctx.params["n"])
        await ctx.report_metric("backlog", ctx.params["n"] - state["i"])
    return {"i": state["i"], "who": [ctx.customer, ctx.workload_id, ctx.replica, ctx.attempt]}


async def test_runs_a_handler_and_records_checkpoints_progress_and_metrics() -> None:
    run = await run_workload(steps, {"n": 3}, customer="acme", attempt=2)
    assert run.outcome == "succeeded"
    assert run.result == {"i": 3, "who": ["acme", "test-workload", 0, 2]}
    assert run.checkpoints == [{"i": 1}, {"i": 2}, {"i": 3}]
    assert run.progress == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert run.metrics[-1] == ("backlog", 0.0)


async def test_runs_a_registered_type_by_name() -> None:
    run = await run_workload("steps", {"n": 1}, registry=REGISTRY)
    assert run.result["i"] == 1


async def test_simulated_stop_after_n_checkpoints_yields_and_resumes() -> None:
    first = await run_workload(steps, {"n": 10}, stop_after_checkpoints=4)
    assert first.outcome == "yielded"
    assert first.last_checkpoint == {"i": 4}
    second = await run_workload(steps, {"n": 10}, checkpoint=first.last_checkpoint)
    assert second.checkpoints[0] == {"i": 5}
    assert second.result["i"] == 10


async def test_cancel_reports_nothing() -> None:
    run = await run_workload(steps, {"n": 10}, stop_after_checkpoints=1, stop_reason="cancel")
    assert run.outcome == "silent"


async def test_simulated_fence_refusal_raises_fenced_out_and_blocks_later_writes() -> None:
    attempts: list[str] = []

    async def stubborn(ctx: WorkloadContext) -> None:
        for i in range(5):
            try:
                await ctx.save_checkpoint({"i": i})
            except FencedOut:
                attempts.append("refused")

    run = await run_workload(stubborn, fence_after_writes=2)
    assert run.checkpoints == [{"i": 0}, {"i": 1}]
    assert attempts == ["refused"] * 3
    assert run.refused_writes == 1  # later writes never leave the SDK
    assert run.outcome == "silent"


async def test_errors_are_classified_as_the_worker_would() -> None:
    async def bad(ctx: WorkloadContext) -> None:
        raise PermanentError("no")

    async def oops(ctx: WorkloadContext) -> None:
        raise RuntimeError("oops")

    permanent = await run_workload(bad)
    assert (permanent.outcome, permanent.error_class) == ("failed", "permanent")
    assert isinstance(permanent.error, PermanentError)
    unknown = await run_workload(oops)
    assert (unknown.outcome, unknown.error_class) == ("failed", "transient")


async def test_non_json_checkpoints_and_results_fail_as_in_production() -> None:
    async def bad_state(ctx: WorkloadContext) -> None:
        await ctx.save_checkpoint({"when": object()})

    async def bad_result(ctx: WorkloadContext) -> object:
        return {1, 2}

    assert (await run_workload(bad_state)).outcome == "failed"
    assert (await run_workload(bad_result)).outcome == "failed"
