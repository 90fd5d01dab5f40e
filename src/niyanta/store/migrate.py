"""Versioned schema migrations: ``migrations/<dialect>/NNNN_name.sql``, applied in order inside
the caller's transaction and recorded in ``schema_version``. Applying them again is a no-op."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from niyanta.model import DEFAULT_TIERS
from niyanta.store.codec import tier_values
from niyanta.store.sql import Tx

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, comments dropped (one statement per ``;``)."""
        lines = [line for line in self.sql.splitlines() if not line.lstrip().startswith("--")]
        return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def load(dialect: str) -> list[Migration]:
    folder = resources.files("niyanta.store") / "migrations" / dialect
    found = []
    for entry in folder.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def latest_version(dialect: str) -> int:
    return max(m.version for m in load(dialect))


async def apply(tx: Tx, dialect: str, now: float, applied_at_type: str) -> int:
    """Apply the pending migrations of ``dialect`` in ``tx``; return the schema version."""
    await tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        f"version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at {applied_at_type} NOT NULL)"
    )
    applied = {row["version"] for row in await tx.fetch("SELECT version FROM schema_version")}
    version = max(applied, default=0)
    for migration in load(dialect):
        if migration.version in applied:
            continue
        for statement in migration.statements():
            await tx.execute(statement)
        if migration.version == 1:
            # The tiers table as migration 1 made it: later columns keep their defaults here.
            await tx.executemany(
                "INSERT INTO tiers (name, priority, weight, guaranteed_slots, concurrency_cap,"
                " may_preempt, slo) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                [tier_values(tier)[:7] for tier in DEFAULT_TIERS],
            )
        await tx.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
            migration.version,
            migration.name,
            now,
        )
        version = migration.version
    return version
