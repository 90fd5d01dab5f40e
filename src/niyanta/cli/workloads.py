"""Workload commands: submit, status, list, cancel, pause, resume, events."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table

from niyanta.cli.context import open_client
from niyanta.cli.output import (
    OutputFormat,
    OutputOption,
    console,
    format_age,
    format_time,
    print_json,
    progress_cell,
    state_text,
    table_of,
    text,
)
from niyanta.cli.selector import parse_label, parse_selector, selector_to_json
from niyanta.client import JSONObject, NiyantaClient
from niyanta.errors import InvalidInput
from niyanta.model import LabelSelector, Mode
from niyanta.states import TERMINAL

TERMINAL_STATES = frozenset(state.value for state in TERMINAL)
WATCH_INTERVAL_S = 0.5
LIST_PAGE_SIZE = 500


def _selector_option(value: str | None, option: str) -> tuple[LabelSelector, ...] | None:
    if value is None:
        return None
    try:
        return parse_selector(value)
    except InvalidInput as error:
        raise typer.BadParameter(error.message, param_hint=option) from None


def _params_option(value: str) -> dict[str, Any]:
    try:
        params = json.loads(value)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not JSON: {error}", param_hint="--params") from None
    if not isinstance(params, dict):
        raise typer.BadParameter(
            "must be a JSON object, e.g. '{\"limit\": 1000}'", param_hint="--params"
        )
    return params


def _labels_option(values: Sequence[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        try:
            labels.update(parse_label(value))
        except InvalidInput as error:
            raise typer.BadParameter(error.message, param_hint="--label") from None
    return labels


def submit(
    ctx: typer.Context,
    type_name: Annotated[str, typer.Argument(metavar="TYPE", help="workload type name")],
    customer: Annotated[str, typer.Option("--customer", "-c", help="customer id")],
    params: Annotated[
        str, typer.Option("--params", "-p", help="parameters as a JSON object")
    ] = "{}",
    replicas: Annotated[int, typer.Option(min=1, help="number of replicas")] = 1,
    mode: Annotated[
        Mode, typer.Option(help="batch runs to completion; continuous keeps running")
    ] = Mode.BATCH,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="submitting again with the same key returns the first workload"),
    ] = None,
    affinity: Annotated[
        str | None,
        typer.Option(
            help="worker label selector every replica requires, e.g. 'gpu=true,zone in (a,b)'"
        ),
    ] = None,
    anti_affinity: Annotated[
        str | None,
        typer.Option(help="never beside a running workload whose labels match, e.g. 'app=db'"),
    ] = None,
    priority: Annotated[int, typer.Option(help="order within the customer's tier")] = 0,
    label: Annotated[
        list[str] | None, typer.Option(help="a workload label k=v (repeatable)")
    ] = None,
    type_version: Annotated[
        str | None, typer.Option(help="type version (default: the latest)")
    ] = None,
) -> None:
    """Submit a workload and print its id."""
    body_params = _params_option(params)
    required = _selector_option(affinity, "--affinity")
    anti = _selector_option(anti_affinity, "--anti-affinity")
    labels = _labels_option(label or [])
    affinity_json: JSONObject = {}
    if required:
        affinity_json["required"] = selector_to_json(required)
    if anti:
        affinity_json["anti"] = selector_to_json(anti)
    with open_client(ctx) as client:
        result = client.submit(
            customer,
            type_name,
            body_params,
            type_version=type_version,
            mode=mode.value,
            replicas=replicas,
            affinity=affinity_json or None,
            priority=priority,
            idempotency_key=idempotency_key,
            labels=labels,
        )
    typer.echo(result.workload["id"])
    if not result.created:
        typer.echo("(an existing workload with this idempotency key)", err=True)


def _replicas(workload: JSONObject) -> list[JSONObject]:
    replicas = workload.get("replicas")
    return list(replicas) if isinstance(replicas, list) else []


def workload_progress(workload: JSONObject) -> float:
    """A workload's progress: the mean of its replicas' (a succeeded replica counts as done)."""
    replicas = _replicas(workload)
    if not replicas:
        return 1.0 if workload.get("state") == "succeeded" else 0.0
    done = [
        1.0 if replica.get("state") == "succeeded" else float(replica.get("progress") or 0.0)
        for replica in replicas
    ]
    return sum(done) / len(done)


def _status_view(workload: JSONObject) -> Group:
    summary = Table.grid(padding=(0, 2))
    summary.add_row("workload", str(workload["id"]))
    summary.add_row("customer", text(workload.get("customer_id")))
    summary.add_row("type", f"{workload.get('type')} v{workload.get('type_version')}")
    summary.add_row("mode", text(workload.get("mode")))
    summary.add_row("state", state_text(workload.get("state")))
    summary.add_row("progress", progress_cell(workload_progress(workload)))
    summary.add_row("created", format_time(workload.get("created_at")))
    replicas = table_of(
        "replicas",
        ["#", "state", "worker", "fence", "attempt", "progress", "checkpoint", "resumed from"],
        (
            (
                str(replica.get("index")),
                state_text(replica.get("state")),
                text(replica.get("worker_id")),
                text(replica.get("fence")),
                text(replica.get("attempt")),
                progress_cell(replica.get("progress")),
                text(replica.get("checkpoint_seq") or None),
                text(replica.get("resumed_from_seq") or None),
            )
            for replica in _replicas(workload)
        ),
    )
    errors = [replica for replica in _replicas(workload) if replica.get("error")]
    parts: list[Any] = [summary, replicas]
    for replica in errors:
        error = replica["error"]
        parts.append(
            f"[red]replica {replica.get('index')} error[/] "
            f"({text(error.get('error_class'))}): {text(error.get('message'))}"
        )
    for replica in _replicas(workload):
        if replica.get("pending_reason"):
            parts.append(f"replica {replica.get('index')} waits: {replica['pending_reason']}")
    return Group(*parts)


def status(
    ctx: typer.Context,
    workload_id: Annotated[str, typer.Argument(metavar="ID")],
    output: OutputOption = OutputFormat.TABLE,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="refresh until the workload has finished")
    ] = False,
) -> None:
    """Show a workload, its replicas and their progress."""
    with open_client(ctx) as client:
        workload = client.get_workload(workload_id)
        if watch:
            workload = _watch(client, workload, live=output is OutputFormat.TABLE)
    if output is OutputFormat.JSON:
        print_json(workload)
    else:
        console.print(_status_view(workload))


def _watch(client: NiyantaClient, workload: JSONObject, *, live: bool) -> JSONObject:
    """Poll until the workload is in a terminal state, drawn live when ``live`` (the caller
    prints the final view)."""
    display = Live(_status_view(workload), console=console, transient=True) if live else None
    with display or nullcontext():
        while workload["state"] not in TERMINAL_STATES:
            time.sleep(WATCH_INTERVAL_S)
            workload = client.get_workload(str(workload["id"]))
            if display is not None:
                display.update(_status_view(workload))
    return workload


def list_workloads(
    ctx: typer.Context,
    customer: Annotated[str | None, typer.Option(help="only this customer's")] = None,
    state: Annotated[str | None, typer.Option(help="only workloads in this state")] = None,
    type_name: Annotated[str | None, typer.Option("--type", help="only this type")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 50,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List workloads, newest first."""
    with open_client(ctx) as client:
        # One more than asked tells whether there are more; pages follow the cursor.
        matching = client.iter_workloads(
            customer=customer,
            state=state,
            type_name=type_name,
            page_size=min(limit + 1, LIST_PAGE_SIZE),
        )
        items = list(itertools.islice(matching, limit + 1))
    more, items = len(items) > limit, items[:limit]
    if output is OutputFormat.JSON:
        print_json(items)
        return
    console.print(
        table_of(
            None,
            ["id", "customer", "type", "state", "progress", "replicas", "age"],
            (
                (
                    str(workload["id"]),
                    text(workload.get("customer_id")),
                    text(workload.get("type")),
                    state_text(workload.get("state")),
                    progress_cell(workload_progress(workload)),
                    text(workload.get("replica_count")),
                    format_age(workload.get("created_at")),
                )
                for workload in items
            ),
        )
    )
    if more:
        typer.echo(f"(more: raise --limit above {limit})", err=True)


def _control(ctx: typer.Context, workload_id: str, action: str) -> None:
    with open_client(ctx) as client:
        calls = {
            "cancel": client.cancel_workload,
            "pause": client.pause_workload,
            "resume": client.resume_workload,
        }
        workload = calls[action](workload_id)
    typer.echo(f"{workload_id} {workload.get('state', action)}")


def cancel(ctx: typer.Context, workload_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a workload: its replicas stop at once; a finished workload stays as it is."""
    _control(ctx, workload_id, "cancel")


def pause(ctx: typer.Context, workload_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Pause a workload: running replicas checkpoint and yield; nothing is placed until resumed."""
    _control(ctx, workload_id, "pause")


def resume(ctx: typer.Context, workload_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Resume a paused workload from its last checkpoint."""
    _control(ctx, workload_id, "resume")


def events(
    ctx: typer.Context,
    workload_id: Annotated[str, typer.Argument(metavar="ID")],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show a workload's event log, oldest first."""
    with open_client(ctx) as client:
        items = list(client.iter_events(workload_id))
    if output is OutputFormat.JSON:
        print_json(items)
        return
    console.print(
        table_of(
            None,
            ["time", "kind", "replica", "actor", "reason", "data"],
            (
                (
                    format_time(event.get("at")),
                    text(event.get("kind")),
                    text(event.get("index")),
                    text(event.get("actor")),
                    text(event.get("reason")),
                    text(event.get("data") or None),
                )
                for event in items
            ),
        )
    )
