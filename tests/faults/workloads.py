"""The workload the fault tests run (``--import tests.faults.workloads``).

``fault-steps`` counts to ``steps``, one checkpoint per step, and leaves a trace a test reads
after the fact: one JSON line per event in ``<trace_dir>/<workload>-<replica>.jsonl`` (appends
of one short line are atomic, so the runs of one replica on several workers interleave safely):

- ``start``: this attempt began (fence, worker, the checkpoint seq and count it resumed from);
- ``step``: step ``n`` is about to run (``n`` counted from 1 over the whole replica);
- ``write``: a checkpoint write of ``seq`` was attempted ``at`` and was acknowledged (``ok``),
  or not (``how``: ``refused``, or ``cut_off`` unanswered when the runtime fenced the replica);
- ``done``: the attempt returned its result.

Without ``trace_dir`` it leaves no trace (bursts of thousands). With ``blocking`` each step
blocks the event loop (CPU-bound work): a worker frozen mid-step wakes up and writes before its
lease watchdog gets a turn, so its stale write reaches the coordinator's fence.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from niyanta import FencedOut, WorkloadContext, workload

TYPE = "fault-steps"


def _trace(ctx: WorkloadContext, event: str, **fields: Any) -> None:
    if "trace_dir" not in ctx.params:
        return
    path = Path(ctx.params["trace_dir"]) / f"{ctx.workload_id}-{ctx.replica}.jsonl"
    line = json.dumps(
        {"e": event, "t": time.time(), "fence": ctx.fence_token, "worker": ctx.worker_id, **fields}
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@workload(TYPE, resources={"cpu": 0.01, "memory_mb": 1})
async def fault_steps(ctx: WorkloadContext) -> dict[str, int]:
    steps = int(ctx.params["steps"])
    step_s = float(ctx.params.get("step_s", 0.1))
    blocking = bool(ctx.params.get("blocking", False))
    count = int((ctx.checkpoint or {"count": 0})["count"])
    _trace(ctx, "start", seq=ctx.checkpoint_seq, count=count)
    while count < steps:
        if blocking:
            time.sleep(step_s)  # noqa: ASYNC251 (blocking on purpose: see above)
            if ctx.cancelled:
                return {"count": count}
        elif await ctx.sleep(step_s):
            return {"count": count}  # stopped: resumes from the last checkpoint
        _trace(ctx, "step", n=count + 1)
        attempted_at = time.time()
        try:
            await ctx.save_checkpoint({"count": count + 1})
        except (FencedOut, asyncio.CancelledError) as exc:
            # Refused, or cut off unanswered when the runtime fenced the replica meanwhile.
            how = "refused" if isinstance(exc, FencedOut) else "cut_off"
            _trace(ctx, "write", seq=ctx.checkpoint_seq + 1, at=attempted_at, ok=False, how=how)
            raise
        count += 1
        _trace(ctx, "write", seq=ctx.checkpoint_seq, at=attempted_at, ok=True)
    _trace(ctx, "done", count=count)
    return {"count": count}
