"""``niyanta workers`` and ``niyanta drain``."""

from __future__ import annotations

from typing import Annotated

import typer

from niyanta.cli.context import open_client
from niyanta.cli.output import (
    OutputFormat,
    OutputOption,
    console,
    format_age,
    format_labels,
    print_json,
    state_text,
    table_of,
    text,
)
from niyanta.client import JSONObject


def _slots(worker: JSONObject) -> str:
    capacity = worker.get("capacity") or {}
    free = worker.get("free") or {}
    return f"{text(free.get('slots'))}/{text(capacity.get('slots'))}"


def workers(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """List the workers the coordinator knows, with their labels and free capacity."""
    with open_client(ctx) as client:
        items = client.list_workers()
    if output is OutputFormat.JSON:
        print_json(items)
        return
    console.print(
        table_of(
            None,
            ["id", "state", "labels", "free/slots", "running", "last seen"],
            (
                (
                    str(worker["id"]),
                    state_text(worker.get("state")),
                    format_labels(worker.get("labels")),
                    _slots(worker),
                    str(len(worker.get("running") or [])),
                    format_age(worker.get("last_seen")),
                )
                for worker in items
            ),
        )
    )


def drain(
    ctx: typer.Context,
    worker_id: Annotated[str, typer.Argument(metavar="WORKER")],
) -> None:
    """Drain a worker: its replicas checkpoint and move elsewhere; it takes no new work."""
    with open_client(ctx) as client:
        client.drain_worker(worker_id)
    typer.echo(f"{worker_id} draining")
