"""``niyanta store migrate``: bring a store's schema to the latest version."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

app = typer.Typer(help="The state store (SQLite or PostgreSQL).", no_args_is_help=True)

DEFAULT_STORE_URL = "sqlite:///./niyanta.db"

StoreOption = Annotated[
    str,
    typer.Option(
        envvar="NIYANTA_STORE",
        help="sqlite:///PATH (relative), sqlite:////PATH (absolute) or postgresql://...",
    ),
]


async def _migrate(url: str) -> int:
    from niyanta.store.factory import store_for_url  # the drivers load only for this command

    store = store_for_url(url)
    await store.open()
    try:
        return await store.migrate()
    finally:
        await store.close()


@app.command()
def migrate(store: StoreOption = DEFAULT_STORE_URL) -> None:
    """Apply the pending schema migrations (applying them again changes nothing)."""
    version = asyncio.run(_migrate(store))
    typer.echo(f"{store}: schema version {version}")
