"""Servers a fault test owns and restarts: a PostgreSQL instance (initdb + pg_ctl in a temporary
directory) and a nats-server with JetStream, each on a spare port. The machine's shared servers
are never touched. Under CI=true a missing binary fails the test instead of skipping it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.conftest import IN_CI, free_port, port_open

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        message = f"{name} not found"
        if IN_CI:
            pytest.fail(f"{message}; under CI=true a fault test must not skip", pytrace=False)
        pytest.skip(message)
    return found


def _wait_port(port: int, up: bool, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while port_open("127.0.0.1", port, 0.2) != up:
        if time.monotonic() > deadline:
            raise TimeoutError(f"port {port} not {'open' if up else 'closed'} after {timeout}s")
        time.sleep(0.05)


class PostgresServer:
    """Its own cluster: initdb runs as the ``postgres`` user when the tests run as root (the
    server refuses to run as root)."""

    def __init__(self) -> None:
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="niyanta-pg-"))
        self._data = self._dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self._dir, owner.pw_uid, owner.pw_gid)
            self._as = [_binary("runuser"), "-u", "postgres", "--"]
        self._pg_ctl = _binary("pg_ctl")
        self._run(_binary("initdb"), "-D", str(self._data), "-U", "postgres", "-A", "trust")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self._dir}"
        )
        self._run(self._pg_ctl, "-D", str(self._data), "-o", options, "-w", "-l",
                  str(self._dir / "server.log"), "start")  # fmt: skip
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        self._run(self._pg_ctl, "-D", str(self._data), "-m", "immediate", "-w", "stop")
        _wait_port(self.port, up=False)

    def remove(self) -> None:
        if (self._data / "postmaster.pid").exists():
            subprocess.run([*self._as, self._pg_ctl, "-D", str(self._data), "-m", "immediate",
                            "stop"], capture_output=True, timeout=60)  # fmt: skip
        shutil.rmtree(self._dir, ignore_errors=True)


class NatsServer:
    def __init__(self) -> None:
        self.port = free_port()
        self._store = Path(tempfile.mkdtemp(prefix="niyanta-nats-"))
        self._binary = NATS_SERVER if os.access(NATS_SERVER, os.X_OK) else _binary("nats-server")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [self._binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self._store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None
        _wait_port(self.port, up=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self._store, ignore_errors=True)


@contextmanager
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@contextmanager
def own_nats() -> Iterator[NatsServer]:
    server = NatsServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()
