"""The long-running processes: ``niyanta coordinator``, ``niyanta worker`` and ``niyanta dev``."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
from typing import Annotated

import typer

from niyanta.broker.factory import open_worker_link
from niyanta.cli.context import CliState
from niyanta.cli.selector import parse_labels
from niyanta.client import parse_coordinator_urls
from niyanta.errors import InvalidInput
from niyanta.observability.logging import configure_logging
from niyanta.worker.config import WorkerSettings
from niyanta.worker.runtime import Worker

BrokerOption = Annotated[
    str,
    typer.Option(
        envvar="NIYANTA_BROKER",
        help="builtin (the coordinator's WebSocket endpoint) or nats://HOST:PORT",
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
    configure_logging()
    try:
        link = open_worker_link(broker, settings.worker_id, urls=urls, token=settings.token)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--broker") from None
    asyncio.run(_run_worker(Worker(settings, link)))
