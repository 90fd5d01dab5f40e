"""How the CLI shows what the API returns: rich tables (with progress bars on a terminal) or,
with ``--output json``, the API's JSON unchanged so that scripts can rely on it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Console, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

console = Console()
"""stdout; rich re-reads sys.stdout on every write, so test runners capture it."""


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


OutputOption = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="table for people, json for scripts"),
]

STATE_STYLES = {
    "pending": "yellow",
    "scheduled": "cyan",
    "running": "blue",
    "retrying": "magenta",
    "paused": "dim",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "dim red",
}


def print_json(data: Any) -> None:
    """Plain JSON on stdout (no colour, no wrapping), one document."""
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def state_text(state: str | None) -> Text:
    value = state or "-"
    return Text(value, style=STATE_STYLES.get(value, ""))


def progress_cell(fraction: float | None, *, terminal: bool | None = None) -> RenderableType:
    """A progress bar with its percentage on a terminal; the percentage alone elsewhere."""
    value = min(max(float(fraction or 0.0), 0.0), 1.0)
    label = f"{value * 100:3.0f}%"
    if not (console.is_terminal if terminal is None else terminal):
        return Text(label)
    grid = Table.grid(padding=(0, 1))
    grid.add_row(ProgressBar(total=1.0, completed=value, width=20), Text(label))
    return grid


def format_time(epoch: float | None) -> str:
    """An epoch time as UTC ``YYYY-MM-DD HH:MM:SS``; ``-`` when absent."""
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_age(epoch: float | None, now: float | None = None) -> str:
    """How long ago ``epoch`` was, e.g. ``4s``, ``3m12s``, ``2h05m``; ``-`` when absent."""
    if not epoch:
        return "-"
    seconds = max(0, int((time.time() if now is None else now) - epoch))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def format_labels(labels: Mapping[str, Any] | None) -> str:
    if not labels:
        return "-"
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def text(value: Any) -> str:
    """A scalar cell: ``-`` for None, compact JSON for containers."""
    if value is None or value == "":
        return "-"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def table_of(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[RenderableType]],
) -> Table:
    """A table whose first column (an id, copied into other commands) never wraps."""
    table = Table(title=title, title_justify="left", header_style="bold")
    for position, column in enumerate(columns):
        table.add_column(column, overflow="fold", no_wrap=position == 0)
    for row in rows:
        table.add_row(*row)
    return table
