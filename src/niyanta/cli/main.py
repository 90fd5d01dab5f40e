"""The ``niyanta`` command: one root group, the command modules plugged into it."""

from __future__ import annotations

from typing import Annotated

import typer

from niyanta.cli import autoscale, cluster, customers, demo, serve, store, types, workers, workloads
from niyanta.cli.context import CliState, NiyantaGroup
from niyanta.client import DEFAULT_COORDINATOR_URL, parse_coordinator_urls

app = typer.Typer(
    name="niyanta",
    cls=NiyantaGroup,
    no_args_is_help=True,
    help="Niyanta: long-running, customer-specific workloads on a fleet of Python workers.",
    pretty_exceptions_show_locals=False,
)


def _coordinator_option(value: str) -> str:
    try:
        parse_coordinator_urls(value)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return value


@app.callback()
def main(
    ctx: typer.Context,
    coordinator: Annotated[
        str,
        typer.Option(
            envvar="NIYANTA_COORDINATOR",
            callback=_coordinator_option,
            help="coordinator URL; several, comma-separated, are tried in turn",
        ),
    ] = DEFAULT_COORDINATOR_URL,
) -> None:
    ctx.obj = CliState(coordinator=coordinator)


app.command()(workloads.submit)
app.command()(workloads.status)
app.command("list")(workloads.list_workloads)
app.command()(workloads.cancel)
app.command()(workloads.pause)
app.command()(workloads.resume)
app.command()(workloads.events)
app.command()(workers.workers)
app.command()(workers.drain)
app.command()(cluster.cluster)
app.command()(types.types)
app.command()(serve.coordinator)
app.command()(serve.worker)
app.command()(serve.dev)
app.command()(demo.demo)
app.add_typer(customers.app, name="customers")
app.add_typer(autoscale.app, name="autoscale")
app.add_typer(store.app, name="store")
