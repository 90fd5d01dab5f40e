"""A started coordinator and a started worker have frozen their start-up heap (a full collection
then walks only what they built since: 60-69 ms pauses of the event loop on the tier flood fleet
before, 4-8 ms after) and made full collections ten times rarer (see ``niyanta/gc_tuning.py``)."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from tests.integration.coordinator_fixtures import eventually, running_coordinator

from niyanta.gc_tuning import FULL_COLLECTION_EVERY
from niyanta.worker import Worker, WorkerSettings


async def test_coordinator_and_worker_freeze_their_start_up_heap(tmp_path: Path) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    gc.set_threshold(700, 10, 10)
    async with running_coordinator(f"sqlite:///{tmp_path / 'gc.db'}") as running:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (700, 10, FULL_COLLECTION_EVERY)
        gc.unfreeze()
        worker = Worker(WorkerSettings(worker_id="w1", slots=1), running.hub.worker_link("w1"))
        task = asyncio.create_task(worker.run())
        await eventually(lambda: len(running.runtime.registry) == 1, what="the worker joined")
        assert gc.get_freeze_count() > 0
        await worker.close()
        await task
