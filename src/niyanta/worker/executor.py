"""Runs one replica's handler where its type asks: in this event loop (``async``) or in a child
process (``process``), within the type's ``timeout_s``."""

from __future__ import annotations

import asyncio

from niyanta.model import JSON, Isolation
from niyanta.worker.context import ContextBackend, WorkloadContext
from niyanta.worker.outcome import WorkloadTimedOut
from niyanta.worker.process_executor import CpuPlanner, run_in_child
from niyanta.worker.registry import WorkloadDefinition


class Executor:
    def __init__(self) -> None:
        self._cpu = CpuPlanner()

    async def run(
        self, definition: WorkloadDefinition, ctx: WorkloadContext, backend: ContextBackend
    ) -> JSON:
        """Return what the handler returned, or raise what it raised."""
        timeout_s = definition.type.timeout_s
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                if definition.type.isolation is Isolation.PROCESS:
                    return await run_in_child(definition, ctx, backend, self._cpu)
                return await definition.handler(ctx)
        except TimeoutError:
            if deadline.expired():
                raise WorkloadTimedOut(f"ran longer than its timeout of {timeout_s} s") from None
            raise
