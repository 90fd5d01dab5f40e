"""``niyanta customers``: create, get, list, set-tier."""

from __future__ import annotations

from typing import Annotated

import typer

from niyanta.cli.context import open_client
from niyanta.cli.output import (
    OutputFormat,
    OutputOption,
    console,
    format_time,
    print_json,
    table_of,
    text,
)
from niyanta.client import JSONObject

app = typer.Typer(help="Customers (tenants) and their tiers.", no_args_is_help=True)

_COLUMNS = ["id", "tier", "name", "weight", "concurrency cap", "created"]


def _row(customer: JSONObject) -> tuple[str, ...]:
    return (
        str(customer["id"]),
        text(customer.get("tier")),
        text(customer.get("name")),
        text(customer.get("weight")),
        text(customer.get("concurrency_cap")),
        format_time(customer.get("created_at")),
    )


def _show_one(customer: JSONObject, output: OutputFormat) -> None:
    if output is OutputFormat.JSON:
        print_json(customer)
    else:
        console.print(table_of(None, _COLUMNS, [_row(customer)]))


@app.command()
def create(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(metavar="ID")],
    tier: Annotated[str, typer.Option(help="tier name, e.g. platinum, gold, silver, bronze")],
    name: Annotated[str | None, typer.Option(help="display name")] = None,
    weight: Annotated[
        float | None, typer.Option(min=0.0, help="fair-share weight (default: the tier's)")
    ] = None,
    concurrency_cap: Annotated[
        int | None, typer.Option(min=0, help="running replicas at most (default: the tier's)")
    ] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Create a customer on a tier."""
    with open_client(ctx) as client:
        customer = client.create_customer(
            customer_id, tier, name=name, weight=weight, concurrency_cap=concurrency_cap
        )
    _show_one(customer, output)


@app.command()
def get(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(metavar="ID")],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show one customer."""
    with open_client(ctx) as client:
        customer = client.get_customer(customer_id)
    _show_one(customer, output)


@app.command("list")
def list_customers(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """List customers."""
    with open_client(ctx) as client:
        customers = client.list_customers()
    if output is OutputFormat.JSON:
        print_json(customers)
    else:
        console.print(table_of(None, _COLUMNS, (_row(customer) for customer in customers)))


@app.command("set-tier")
def set_tier(
    ctx: typer.Context,
    customer_id: Annotated[str, typer.Argument(metavar="ID")],
    tier: Annotated[str, typer.Argument(metavar="TIER")],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Move a customer to another tier (applies to its next placements)."""
    with open_client(ctx) as client:
        customer = client.update_customer(customer_id, tier=tier)
    _show_one(customer, output)
