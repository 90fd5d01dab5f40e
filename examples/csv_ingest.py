"""Ingest a CSV or JSONL file into a SQLite table in batches.

Checkpoint: ``{"offset": <byte offset of the next unread line>, "rows": <rows done>}`` after
each committed batch. Every row is keyed by the byte offset of its line in the source, and rows
are inserted with ``INSERT OR IGNORE`` in one transaction per batch, so a replica that resumes
from an older checkpoint (it crashed after a batch committed but before its checkpoint did)
re-reads those lines without duplicating a row.

Params: ``source`` (path to ``.csv`` or ``.jsonl``), ``database`` (SQLite file), ``table``
(default ``records``), ``batch_size`` (default 500), ``format`` (``csv`` or ``jsonl``; default
from the file name).
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path

from niyanta import PermanentError, WorkloadContext, workload

_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Row = tuple[int, str]
"""(source byte offset, record as JSON)."""


@workload("csv-ingest", resources={"cpu": 0.5, "memory_mb": 128})
async def ingest(ctx: WorkloadContext) -> dict[str, int]:
    source = Path(str(ctx.params["source"]))
    database = Path(str(ctx.params["database"]))
    table = str(ctx.params.get("table", "records"))
    batch_size = int(ctx.params.get("batch_size", 500))
    fmt = str(ctx.params.get("format") or ("jsonl" if source.suffix == ".jsonl" else "csv"))
    if not _TABLE_NAME.match(table):
        raise PermanentError(f"invalid table name {table!r}")
    total_bytes, header = await asyncio.to_thread(_inspect, source, fmt)
    await asyncio.to_thread(_create_table, database, table)

    state = ctx.checkpoint or {"offset": 0, "rows": 0}
    while not ctx.cancelled:
        rows, offset = await asyncio.to_thread(
            _read_batch, source, int(state["offset"]), batch_size, header
        )
        if not rows:
            break
        await asyncio.to_thread(_insert, database, table, rows)
        state = {"offset": offset, "rows": int(state["rows"]) + len(rows)}
        await ctx.save_checkpoint(state)
        await ctx.report_progress(offset / total_bytes if total_bytes else 1.0)
    return {"rows": int(state["rows"]), "offset": int(state["offset"])}


def _inspect(source: Path, fmt: str) -> tuple[int, list[str] | None]:
    """The file's size and, for CSV, its header."""
    if not source.exists():
        raise PermanentError(f"source {source} does not exist")
    header: list[str] | None = None
    if fmt == "csv":
        with source.open("rb") as handle:
            header = next(csv.reader([handle.readline().decode()]), [])
    return source.stat().st_size, header


def _read_batch(
    source: Path, offset: int, batch_size: int, header: list[str] | None
) -> tuple[list[Row], int]:
    """Up to ``batch_size`` records from ``offset`` (after the CSV header), and the offset
    after them. CSV records are one per line (quoted line breaks are not supported)."""
    rows: list[Row] = []
    with source.open("rb") as handle:
        if header is not None:
            handle.readline()
        handle.seek(max(offset, handle.tell()))
        while len(rows) < batch_size:
            start = handle.tell()
            line = handle.readline()
            if not line:
                break
            text = line.decode().strip()
            if not text:
                continue
            if header is None:
                record = json.loads(text)
            else:
                record = dict(zip(header, next(csv.reader([text])), strict=False))
            rows.append((start, json.dumps(record, separators=(",", ":"))))
        return rows, handle.tell()


def _create_table(database: Path, table: str) -> None:
    with closing(sqlite3.connect(database)) as db, db:
        db.execute(
            f"CREATE TABLE IF NOT EXISTS {table} "
            "(source_offset INTEGER PRIMARY KEY, record TEXT NOT NULL)"
        )


def _insert(database: Path, table: str, rows: list[Row]) -> None:
    with closing(sqlite3.connect(database)) as db, db:  # one transaction per batch
        db.executemany(f"INSERT OR IGNORE INTO {table} (source_offset, record) VALUES (?, ?)", rows)
