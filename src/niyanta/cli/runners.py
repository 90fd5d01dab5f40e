"""What the long-running commands run once their options are checked: a worker process with
signal-driven drain, and ``niyanta dev``'s coordinator and in-process workers. Imported only by
those commands, so that the client commands start without loading the server side."""

from __future__ import annotations

import asyncio
import signal
from types import FrameType

import uvicorn

from niyanta.broker.memory import MemoryHub
from niyanta.coordinator.app import build_app
from niyanta.coordinator.settings import CoordinatorSettings
from niyanta.worker.config import WorkerSettings
from niyanta.worker.runtime import Worker


def _install_drain_on_signals(worker: Worker) -> None:
    """SIGTERM or SIGINT drains (replicas checkpoint and are handed back); a second one leaves
    at once."""
    loop = asyncio.get_running_loop()
    signals_seen = 0
    closing: list[asyncio.Task[None]] = []

    def on_signal() -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            worker.request_drain()
        else:
            closing.append(loop.create_task(worker.close()))

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


async def run_worker(worker: Worker) -> None:
    _install_drain_on_signals(worker)
    await worker.run()


class _DevServer(uvicorn.Server):
    """uvicorn serving ``niyanta dev``: SIGINT/SIGTERM first drain the in-process workers (their
    replicas checkpoint and are handed back while the coordinator still runs), then stop the
    server; a second signal stops at once."""

    def __init__(self, config: uvicorn.Config, workers: list[Worker]) -> None:
        super().__init__(config)
        self.workers = workers
        self._stopping: list[asyncio.Task[None]] = []

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._stopping:
            self.should_exit = True
            self.force_exit = True
            return
        loop = asyncio.get_event_loop()
        self._stopping.append(loop.create_task(self._drain_then_exit()))

    async def _drain_then_exit(self) -> None:
        await asyncio.gather(*(worker.drain() for worker in self.workers), return_exceptions=True)
        self.should_exit = True


async def run_dev(settings: CoordinatorSettings, worker_count: int, slots: int) -> None:
    hub = MemoryHub()
    workers = [
        Worker(
            WorkerSettings(worker_id=f"dev-worker-{number}", slots=slots),
            hub.worker_link(f"dev-worker-{number}"),
        )
        for number in range(1, worker_count + 1)
    ]
    config = uvicorn.Config(
        build_app(settings, hub=hub),
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="on",
        access_log=False,
    )
    server = _DevServer(config, workers)
    serving = asyncio.create_task(server.serve())
    # Links retry until the coordinator endpoint has started in the app's lifespan.
    running = [asyncio.create_task(worker.run()) for worker in workers]
    await serving
    for worker in workers:
        await worker.close()
    await asyncio.gather(*running, return_exceptions=True)
