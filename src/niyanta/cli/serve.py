"""The long-running processes: ``niyanta coordinator``, ``niyanta worker`` and ``niyanta dev``."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from types import FrameType
from typing import Annotated

import typer
import uvicorn

from niyanta.broker.factory import open_worker_link
from niyanta.broker.memory import MemoryHub
from niyanta.cli.context import CliState
from niyanta.cli.selector import parse_labels
from niyanta.cli.store import DEFAULT_STORE_URL, StoreOption
from niyanta.client import parse_coordinator_urls
from niyanta.coordinator.app import build_app
from niyanta.coordinator.server import run_coordinator
from niyanta.coordinator.settings import CoordinatorSettings
from niyanta.errors import InvalidInput
from niyanta.observability.logging import configure_logging
from niyanta.worker.config import WorkerSettings
from niyanta.worker.runtime import Worker


def _broker_option(spec: str) -> str:
    """The transports that join separate processes (``memory`` only works inside one: dev)."""
    if spec != "builtin" and not spec.startswith(("ws://", "wss://", "nats://", "tls://")):
        raise typer.BadParameter(
            f"{spec!r}: use builtin (the coordinator's WebSocket endpoint) or nats://HOST:PORT"
            + (" (the memory broker is for `niyanta dev`)" if spec == "memory" else "")
        )
    return spec


BrokerOption = Annotated[
    str,
    typer.Option(
        envvar="NIYANTA_BROKER",
        callback=_broker_option,
        help="builtin (the coordinator's WebSocket endpoint) or nats://HOST:PORT",
    ),
]


ClusterOption = Annotated[
    str,
    typer.Option(
        envvar="NIYANTA_CLUSTER",
        help="cluster name: separates clusters sharing one NATS (its subjects' prefix)",
    ),
]


def import_workload_modules(modules: str) -> list[str]:
    """Import each comma-separated module so that its ``@workload`` types register.

    The working directory is importable first (as with ``python -m``), so that a project's own
    packages (``examples.demo_jobs``) load from where the command runs.
    """
    names = [name.strip() for name in modules.split(",") if name.strip()]
    if names and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as error:
            raise typer.BadParameter(
                f"cannot import {name!r}: {error}", param_hint="--import"
            ) from None
    return names


def _labels_option(value: str) -> dict[str, str]:
    try:
        return parse_labels(value)
    except InvalidInput as error:
        raise typer.BadParameter(error.message) from None


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


async def _run_worker(worker: Worker) -> None:
    _install_drain_on_signals(worker)
    await worker.run()


def worker(
    ctx: typer.Context,
    coordinator: Annotated[
        str | None,
        typer.Option(
            help="coordinator URL(s), comma-separated, tried in turn "
            "(default: the global --coordinator / NIYANTA_COORDINATOR)",
        ),
    ] = None,
    broker: BrokerOption = "builtin",
    import_modules: Annotated[
        str,
        typer.Option(
            "--import",
            envvar="NIYANTA_IMPORTS",
            help="modules defining @workload types, comma-separated (e.g. examples.demo_jobs)",
        ),
    ] = "",
    worker_id: Annotated[
        str | None, typer.Option("--id", help="worker id (default: HOSTNAME-PID)")
    ] = None,
    labels: Annotated[str, typer.Option(help="labels k=v,k=v that affinity selectors match")] = "",
    slots: Annotated[int, typer.Option(min=1, help="replicas run at once")] = 4,
    cpu: Annotated[float | None, typer.Option(min=0.0, help="CPUs offered (default: all)")] = None,
    memory_mb: Annotated[
        int | None, typer.Option(min=0, help="memory offered in MB (default: all)")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(envvar="NIYANTA_WORKER_TOKEN", help="shared worker token, if required"),
    ] = None,
    cluster: ClusterOption = "default",
) -> None:
    """Run a worker: join the coordinator, run replicas; SIGTERM/SIGINT drains it."""
    state = ctx.find_object(CliState)
    urls_text = coordinator or (state.coordinator if state else "")
    try:
        urls = parse_coordinator_urls(urls_text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--coordinator") from None
    import_workload_modules(import_modules)
    fields: dict[str, object] = {"labels": _labels_option(labels), "slots": slots}
    for name, value in (
        ("worker_id", worker_id),
        ("cpu", cpu),
        ("memory_mb", memory_mb),
        ("token", token),
    ):
        if value is not None:
            fields[name] = value
    settings = WorkerSettings.model_validate(fields)
    try:
        link = open_worker_link(
            broker, settings.worker_id, urls=urls, token=settings.token, cluster=cluster
        )
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--broker") from None
    configure_logging()
    asyncio.run(_run_worker(Worker(settings, link)))


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) as (host, port)."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, e.g. 127.0.0.1:8080, not {value!r}")
    return host, int(port_text)


ListenOption = Annotated[
    str, typer.Option(envvar="NIYANTA_LISTEN", help="HOST:PORT the HTTP API listens on")
]
LeaseTtlOption = Annotated[
    float | None,
    typer.Option(min=0.1, help="seconds a replica's lease lasts without a heartbeat"),
]
HeartbeatOption = Annotated[
    float | None, typer.Option(min=0.05, help="seconds between worker heartbeats")
]


def coordinator_settings(
    *,
    store: str,
    broker: str,
    listen: str,
    coordinator_id: str | None = None,
    lease_ttl: float | None = None,
    heartbeat: float | None = None,
    advertise_url: str | None = None,
    cluster: str | None = None,
) -> CoordinatorSettings:
    """Settings from the command's options; options left unset keep the settings' defaults
    (or their ``NIYANTA_COORDINATOR_*`` environment values)."""
    host, port = parse_listen(listen)
    fields: dict[str, object] = {"store_url": store, "broker": broker, "host": host, "port": port}
    for name, value in (
        ("coordinator_id", coordinator_id),
        ("lease_ttl_s", lease_ttl),
        ("heartbeat_interval_s", heartbeat),
        ("advertise_url", advertise_url),
        ("cluster", cluster),
    ):
        if value is not None:
            fields[name] = value
    return CoordinatorSettings.model_validate(fields)


def coordinator(
    store: StoreOption = DEFAULT_STORE_URL,
    broker: BrokerOption = "builtin",
    listen: ListenOption = "127.0.0.1:8080",
    coordinator_id: Annotated[
        str | None,
        typer.Option(
            "--id", envvar="NIYANTA_COORDINATOR_ID", help="coordinator id (default: host-pid)"
        ),
    ] = None,
    lease_ttl: LeaseTtlOption = None,
    heartbeat: HeartbeatOption = None,
    advertise_url: Annotated[
        str | None,
        typer.Option(help="URL others reach this coordinator at (default: http://LISTEN)"),
    ] = None,
    cluster: ClusterOption = "default",
) -> None:
    """Run a coordinator: the HTTP API, the built-in broker, and (while it leads) the
    scheduler and lease monitor. Several coordinators on one store elect a leader."""
    settings = coordinator_settings(
        store=store,
        broker=broker,
        listen=listen,
        coordinator_id=coordinator_id,
        lease_ttl=lease_ttl,
        heartbeat=heartbeat,
        advertise_url=advertise_url,
        cluster=cluster,
    )
    configure_logging()
    run_coordinator(settings)


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


async def _run_dev(settings: CoordinatorSettings, worker_count: int, slots: int) -> None:
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


def dev(
    workers: Annotated[int, typer.Option("--workers", min=0, help="in-process workers")] = 2,
    import_modules: Annotated[
        str,
        typer.Option("--import", help="modules defining @workload types, comma-separated"),
    ] = "",
    listen: ListenOption = "127.0.0.1:8080",
    store: StoreOption = DEFAULT_STORE_URL,
    slots: Annotated[int, typer.Option(min=1, help="slots per worker")] = 4,
) -> None:
    """All in one process: a coordinator and N workers on SQLite and the in-memory broker,
    serving the HTTP API (for trying Niyanta out and for tests)."""
    if not store.startswith("sqlite:///"):
        raise typer.BadParameter("niyanta dev runs on SQLite: sqlite:///PATH", param_hint="--store")
    settings = coordinator_settings(store=store, broker="memory", listen=listen)
    import_workload_modules(import_modules)
    configure_logging()
    typer.echo(f"niyanta dev: API on {settings.url}, {workers} worker(s), store {store}", err=True)
    asyncio.run(_run_dev(settings, workers, slots))
