"""Shared fixtures. Integration tests that need PostgreSQL or NATS skip with a reason when the
server is absent on a developer's machine, and fail under CI=true (a skip in CI is a defect)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

PG_HOST = os.environ.get("NIYANTA_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("NIYANTA_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("NIYANTA_TEST_PG_USER", "postgres")
NATS_HOST = os.environ.get("NIYANTA_TEST_NATS_HOST", "127.0.0.1")
NATS_PORT = int(os.environ.get("NIYANTA_TEST_NATS_PORT", "4222"))
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    if port_open(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if IN_CI:
        pytest.fail(f"{message}; under CI=true an integration test must not skip", pytrace=False)
    pytest.skip(f"{message}; start it to run this test")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    require_server("PostgreSQL", PG_HOST, PG_PORT)
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/postgres"


@pytest.fixture
async def pg_url(pg_admin_url: str) -> AsyncIterator[str]:
    """A fresh database per test, dropped afterwards."""
    import asyncpg

    name = f"niyanta_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    require_server("NATS", NATS_HOST, NATS_PORT)
    yield f"nats://{NATS_HOST}:{NATS_PORT}"
