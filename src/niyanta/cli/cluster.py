"""``niyanta cluster``: every coordinator, which one leads and its term (the same answer from any
coordinator, read from the store)."""

from __future__ import annotations

import typer

from niyanta.cli.context import open_client
from niyanta.cli.output import OutputFormat, OutputOption, console, format_age, print_json, table_of


def cluster(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show every coordinator (id, url, last seen), which one leads, and its term."""
    with open_client(ctx) as client:
        view = client.cluster()
    if output is OutputFormat.JSON:
        print_json(view)
        return
    leader = view.get("leader")
    title = (
        f"leader {leader['id']} (term {leader['term']})"
        if isinstance(leader, dict)
        else "no leader"
    )
    coordinators = view.get("coordinators")
    console.print(
        table_of(
            title,
            ["id", "url", "role", "last seen"],
            (
                (
                    str(c["id"]),
                    str(c["url"]),
                    "leader" if c.get("leader") else "follower",
                    format_age(c.get("last_seen")),
                )
                for c in (coordinators if isinstance(coordinators, list) else [])
            ),
        )
    )
