"""``niyanta autoscale``: autoscaling policies per customer and workload type (set, get, list,
delete)."""

from __future__ import annotations

import re
from typing import Annotated

import typer

from niyanta.cli.context import open_client
from niyanta.cli.output import OutputFormat, OutputOption, console, print_json, table_of, text
from niyanta.client import JSONObject

app = typer.Typer(
    help="Autoscaling policies: scale a customer's continuous workloads of a type.",
    no_args_is_help=True,
)

_COLUMNS = ["customer", "type", "min", "max", "metric", "target", "cooldown", "max step"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str) -> float:
    """``30s``, ``5m``, ``1h``, ``500ms`` or plain seconds, as seconds."""
    match = _DURATION.match(value)
    if match is None:
        raise typer.BadParameter(f"expected a duration such as 30s, 5m or 1h, not {value!r}")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def _row(policy: JSONObject) -> tuple[str, ...]:
    return (
        str(policy["customer_id"]),
        str(policy["type_name"]),
        text(policy.get("min_replicas")),
        text(policy.get("max_replicas")),
        text(policy.get("metric")),
        text(policy.get("target")),
        f"{policy.get('cooldown_s', 0):g}s",
        text(policy.get("max_step")),
    )


def _show(policies: list[JSONObject], output: OutputFormat, one: bool = False) -> None:
    if output is OutputFormat.JSON:
        print_json(policies[0] if one else policies)
    else:
        console.print(table_of(None, _COLUMNS, (_row(p) for p in policies)))


@app.command("set")
def set_policy(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(metavar="CUSTOMER")],
    type_name: Annotated[str, typer.Argument(metavar="TYPE")],
    min_replicas: Annotated[int, typer.Option("--min", min=0, help="replicas at least")] = 1,
    max_replicas: Annotated[int, typer.Option("--max", min=1, help="replicas at most")] = 10,
    metric: Annotated[
        str,
        typer.Option(
            help="a metric the workload reports (ctx.report_metric), or queue_depth / "
            "queue_age (the customer's pending work)"
        ),
    ] = "backlog",
    target: Annotated[float, typer.Option(min=0.0, help="metric value per replica to aim at")] = (
        100.0
    ),
    cooldown: Annotated[
        str, typer.Option(help="no scale-down within this long after a change: 30s, 5m")
    ] = "30s",
    max_step: Annotated[
        int, typer.Option(min=1, help="replicas added or removed per decision at most")
    ] = 4,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create or replace the policy for CUSTOMER's continuous workloads of TYPE."""
    body = {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "metric": metric,
        "target": target,
        "cooldown_s": parse_duration(cooldown),
        "max_step": max_step,
    }
    with open_client(ctx) as client:
        policy = client.put_autoscale_policy(customer_id, type_name, body)
    _show([policy], output, one=True)


@app.command()
def get(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(metavar="CUSTOMER")],
    type_name: Annotated[str, typer.Argument(metavar="TYPE")],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show one policy."""
    with open_client(ctx) as client:
        policy = client.get_autoscale_policy(customer_id, type_name)
    _show([policy], output, one=True)


@app.command("list")
def list_policies(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """List every policy."""
    with open_client(ctx) as client:
        policies = client.list_autoscale_policies()
    _show(policies, output)


@app.command()
def delete(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(metavar="CUSTOMER")],
    type_name: Annotated[str, typer.Argument(metavar="TYPE")],
) -> None:
    """Delete a policy (the workloads keep their current replica count)."""
    with open_client(ctx) as client:
        client.delete_autoscale_policy(customer_id, type_name)
    typer.echo(f"deleted the autoscaling policy of {customer_id}/{type_name}", err=True)
