"""``niyanta types``: the registered workload types."""

from __future__ import annotations

import typer

from niyanta.cli.context import open_client
from niyanta.cli.output import OutputFormat, OutputOption, console, print_json, table_of, text
from niyanta.client import JSONObject


def _resources(workload_type: JSONObject) -> str:
    resources = workload_type.get("resources") or {}
    return f"cpu {text(resources.get('cpu'))}, {text(resources.get('memory_mb'))} MB"


def types(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """List the registered workload types (announced by workers or registered through the API)."""
    with open_client(ctx) as client:
        items = client.list_types()
    if output is OutputFormat.JSON:
        print_json(items)
        return
    console.print(
        table_of(
            None,
            ["name", "version", "isolation", "resources", "max attempts", "entrypoint"],
            (
                (
                    str(item["name"]),
                    text(item.get("version")),
                    text(item.get("isolation")),
                    _resources(item),
                    text((item.get("retry") or {}).get("max_attempts")),
                    text(item.get("entrypoint")),
                )
                for item in items
            ),
        )
    )
