"""The long-running processes: ``niyanta coordinator``, ``niyanta worker`` and ``niyanta dev``."""

from __future__ import annotations

import importlib
import os
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, cast

import typer

from niyanta import event_loop
from niyanta.cli.context import CliState
from niyanta.cli.selector import parse_labels
from niyanta.cli.store import DEFAULT_STORE_URL, StoreOption
from niyanta.client import parse_coordinator_urls
from niyanta.errors import InvalidInput

if TYPE_CHECKING:
    from niyanta.coordinator.settings import CoordinatorSettings

# The server side (coordinator, worker runtime, brokers, uvicorn) is imported inside the commands
# that run it: `niyanta status` and the other client commands start without loading it.


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


LogLevelOption = Annotated[
    str | None,
    typer.Option(
        envvar="NIYANTA_LOG_LEVEL",
        help="DEBUG, INFO, WARNING or ERROR (default INFO)",
        case_sensitive=False,
    ),
]
LogFormatOption = Annotated[
    str,
    typer.Option(
        help="json (one object a line), console (for humans) or auto (console on a terminal)",
        callback=lambda value: _choice(value, ("auto", "json", "console"), "--log-format"),
    ),
]


def _choice(value: str, choices: tuple[str, ...], name: str) -> str:
    if value not in choices:
        raise typer.BadParameter(f"{value!r}: use one of {', '.join(choices)}", param_hint=name)
    return value


def set_up_observability(service: str, level: str | None, fmt: str) -> None:
    """Logs on stderr and, when configured (``OTEL_*``, ``NIYANTA_TRACE_FILE``), traces."""
    from niyanta.observability.logging import LogFormat, configure_logging
    from niyanta.observability.tracing import configure_tracing

    try:
        configure_logging(level, cast("LogFormat", fmt))  # one of LogFormatOption's choices
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--log-level") from None
    configure_tracing(service)


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


def _labels_option(value: str, hint: str = "--labels") -> dict[str, str]:
    try:
        return parse_labels(value)
    except InvalidInput as error:
        raise typer.BadParameter(error.message, param_hint=hint) from None


class FleetScalerName(StrEnum):
    NONE = "none"
    KUBERNETES = "kubernetes"
    EC2 = "ec2"


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
    health_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            envvar="NIYANTA_WORKER_HEALTH_PORT",
            help="serve /health and /ready on this port for probes (default: no probe port)",
        ),
    ] = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = "auto",
) -> None:
    """Run a worker: join the coordinator, run replicas; SIGTERM/SIGINT drains it."""
    from niyanta.broker.factory import open_worker_link
    from niyanta.cli.runners import run_worker
    from niyanta.worker.config import WorkerSettings
    from niyanta.worker.runtime import Worker

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
        ("health_port", health_port),
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
    set_up_observability("niyanta-worker", log_level, log_format)
    event_loop.run(run_worker(Worker(settings, link)))


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
TiersOption = Annotated[
    str | None,
    typer.Option(
        "--tiers",
        envvar="NIYANTA_TIERS",
        help="TOML or JSON file of tiers, upserted at start (see docs/tiers.md)",
    ),
]


def _checked_tiers_file(path: str | None) -> str | None:
    """Fail at the command line, with the file's problem, rather than in the server's start."""
    if path is not None:
        from niyanta.coordinator.tier_file import load_tier_file

        try:
            load_tier_file(path)
        except InvalidInput as error:
            raise typer.BadParameter(error.message, param_hint="--tiers") from None
    return path


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
    tiers_file: str | None = None,
    control: dict[str, object] | None = None,
) -> CoordinatorSettings:
    """Settings from the command's options; options left unset keep the settings' defaults
    (or their ``NIYANTA_COORDINATOR_*`` environment values)."""
    from niyanta.coordinator.settings import CoordinatorSettings

    host, port = parse_listen(listen)
    fields: dict[str, object] = {"store_url": store, "broker": broker, "host": host, "port": port}
    for name, value in (
        ("coordinator_id", coordinator_id),
        ("lease_ttl_s", lease_ttl),
        ("heartbeat_interval_s", heartbeat),
        ("advertise_url", advertise_url),
        ("cluster", cluster),
        ("tiers_file", _checked_tiers_file(tiers_file)),
        *(control or {}).items(),
    ):
        if value is not None:
            fields[name] = value
    try:
        return CoordinatorSettings.model_validate(fields)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


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
    tiers: TiersOption = None,
    alert_webhook: Annotated[
        str | None,
        typer.Option(
            envvar="NIYANTA_COORDINATOR_ALERT_WEBHOOK",
            help="URL SLO alerts and resolutions are POSTed to as JSON",
        ),
    ] = None,
    slo_window: Annotated[
        float | None, typer.Option(min=1.0, help="seconds the SLO measures look back over")
    ] = None,
    fleet_scaler: Annotated[
        FleetScalerName | None,
        typer.Option(help="also resize worker pools: kubernetes Deployments or ec2 groups"),
    ] = None,
    fleet_pools: Annotated[
        str,
        typer.Option(help="pool=Deployment (kubernetes) or pool=group (ec2), comma-separated"),
    ] = "",
    kubernetes_api_url: Annotated[
        str | None,
        typer.Option(help="Kubernetes API URL (default: in-cluster, the service account)"),
    ] = None,
    kubernetes_namespace: Annotated[
        str | None, typer.Option(help="namespace of the worker Deployments")
    ] = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = "auto",
) -> None:
    """Run a coordinator: the HTTP API, the built-in broker, and (while it leads) the
    scheduler, lease monitor, SLO watch, autoscaler and fleet sizing. Several coordinators on
    one store elect a leader."""
    from niyanta.coordinator.server import run_coordinator

    settings = coordinator_settings(
        store=store,
        broker=broker,
        listen=listen,
        coordinator_id=coordinator_id,
        lease_ttl=lease_ttl,
        heartbeat=heartbeat,
        advertise_url=advertise_url,
        cluster=cluster,
        tiers_file=tiers,
        control={
            "alert_webhook": alert_webhook,
            "slo_window_s": slo_window,
            "fleet_scaler": fleet_scaler.value if fleet_scaler else None,
            "fleet_pools": _labels_option(fleet_pools, "--fleet-pools") or None,
            "kubernetes_api_url": kubernetes_api_url,
            "kubernetes_namespace": kubernetes_namespace,
        },
    )
    set_up_observability("niyanta-coordinator", log_level, log_format)
    run_coordinator(settings)


def dev(
    workers: Annotated[int, typer.Option("--workers", min=0, help="in-process workers")] = 2,
    import_modules: Annotated[
        str,
        typer.Option("--import", help="modules defining @workload types, comma-separated"),
    ] = "",
    listen: ListenOption = "127.0.0.1:8080",
    store: StoreOption = DEFAULT_STORE_URL,
    slots: Annotated[int, typer.Option(min=1, help="slots per worker")] = 4,
    tiers: TiersOption = None,
    log_level: LogLevelOption = None,
    log_format: LogFormatOption = "auto",
) -> None:
    """All in one process: a coordinator and N workers on SQLite and the in-memory broker,
    serving the HTTP API (for trying Niyanta out and for tests)."""
    from niyanta.cli.runners import run_dev

    if not store.startswith("sqlite:///"):
        raise typer.BadParameter("niyanta dev runs on SQLite: sqlite:///PATH", param_hint="--store")
    settings = coordinator_settings(store=store, broker="memory", listen=listen, tiers_file=tiers)
    import_workload_modules(import_modules)
    set_up_observability("niyanta-dev", log_level, log_format)
    typer.echo(f"niyanta dev: API on {settings.url}, {workers} worker(s), store {store}", err=True)
    event_loop.run(run_dev(settings, workers, slots))
