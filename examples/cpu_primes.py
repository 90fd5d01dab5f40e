"""Count the primes below ``limit`` in chunks, in a child process (``isolation="process"``).

The work is pure CPU, so it runs in a process of its own: it cannot stall the worker's event
loop (heartbeats, other replicas), and its memory limit and CPU niceness/affinity come from the
type's resources. Checkpoint: ``{"chunk": <chunks done>, "found": <primes so far>}`` after every
chunk; a resumed replica starts at the next chunk.

Params: ``limit`` (default 200000), ``chunk_size`` (default 20000).
"""

from __future__ import annotations

import math

from niyanta import WorkloadContext, workload


@workload(
    "count-primes",
    resources={"cpu": 1.0, "memory_mb": 256},
    isolation="process",
    checkpoint={"interval_s": 5.0},
)
async def count_primes(ctx: WorkloadContext) -> dict[str, int]:
    limit = int(ctx.params.get("limit", 200_000))
    chunk_size = int(ctx.params.get("chunk_size", 20_000))
    chunks = math.ceil(limit / chunk_size)
    state = ctx.checkpoint or {"chunk": 0, "found": 0}
    while state["chunk"] < chunks and not ctx.cancelled:
        low = state["chunk"] * chunk_size
        high = min(limit, low + chunk_size)
        state = {"chunk": state["chunk"] + 1, "found": state["found"] + primes_between(low, high)}
        await ctx.save_checkpoint(state)
        await ctx.report_progress(state["chunk"] / chunks)
    return {"found": int(state["found"]), "chunks": int(state["chunk"])}


def primes_between(low: int, high: int) -> int:
    """The number of primes p with low <= p < high (a segmented sieve)."""
    if high <= 2:
        return 0
    low = max(low, 2)
    segment = bytearray([1]) * (high - low)
    for p in range(2, math.isqrt(high - 1) + 1):
        first = max(p * p, (low + p - 1) // p * p)
        segment[first - low :: p] = bytes(len(range(first, high, p)))
    return sum(segment)
