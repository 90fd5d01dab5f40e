"""What every CLI command shares: the coordinator URL chosen by the global option, the client
built from it, and the translation of API errors into a clear message and exit code 1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer._click import Context as ClickContext  # typer vendors click; its Context type
from typer.core import TyperGroup

from niyanta.client import NiyantaClient
from niyanta.errors import NiyantaError

stderr = Console(stderr=True)

API_ERROR_EXIT_CODE = 1


@dataclass(frozen=True, slots=True)
class CliState:
    coordinator: str


class NiyantaGroup(TyperGroup):
    """The root command group: a NiyantaError raised by any command (an API error, an
    unreachable coordinator) is printed as ``error: code: message`` and exits with code 1."""

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except NiyantaError as error:
            stderr.print(
                f"[bold red]error:[/] {escape(error.code)}: {escape(error.message)}",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(API_ERROR_EXIT_CODE) from error


def open_client(ctx: typer.Context) -> NiyantaClient:
    """A client of the coordinator(s) named by the global ``--coordinator`` option."""
    state = ctx.find_object(CliState)
    assert state is not None, "the root callback sets CliState before any command runs"
    return NiyantaClient(state.coordinator)
