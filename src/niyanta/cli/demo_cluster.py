"""The all-in-one Niyanta that ``niyanta demo`` runs: a coordinator served by uvicorn on a free
127.0.0.1 port in a thread of this process (SQLite in a temp dir, the built-in WebSocket broker),
and worker processes (``niyanta worker``) that join it over WebSocket. Everything started here is
stopped when the context exits, whatever happened."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx
import uvicorn

from niyanta.client import NiyantaClient
from niyanta.coordinator.server import server_for
from niyanta.coordinator.settings import CoordinatorSettings
from niyanta.errors import NiyantaError

STARTUP_TIMEOUT_S = 30.0


class DemoStartupError(RuntimeError):
    """A part of the demo cluster did not come up in time."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class WorkerProcess:
    worker_id: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        """SIGKILL the worker and the children it runs replicas in (its own process group)."""
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=5)

    def terminate(self) -> None:
        """SIGTERM: the worker drains and leaves."""
        if self.popen.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)

    def wait_or_kill(self, grace_s: float) -> None:
        try:
            self.popen.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class DemoCluster:
    worker_count: int
    slots: int
    modules: list[str]
    keep: bool = False
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="niyanta-demo-")))
    workers: dict[str, WorkerProcess] = field(default_factory=dict)
    url: str = ""
    _server: uvicorn.Server | None = None
    _server_thread: threading.Thread | None = None

    def __enter__(self) -> DemoCluster:
        try:
            self._start_coordinator()
            self._start_workers()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def client(self) -> NiyantaClient:
        return NiyantaClient(self.url)

    # --- coordinator ------------------------------------------------------------------------------

    def _start_coordinator(self) -> None:
        port = free_port()
        settings = CoordinatorSettings(
            store_url=f"sqlite:///{self.workdir / 'niyanta.db'}",
            broker="builtin",
            host="127.0.0.1",
            port=port,
            coordinator_id="demo-coordinator",
        )
        self.url = settings.url
        self._server = server_for(settings)
        # uvicorn installs no signal handlers off the main thread: close() stops it by flag.
        self._server_thread = threading.Thread(
            target=asyncio.run, args=(self._server.serve(),), name="demo-coordinator", daemon=True
        )
        self._server_thread.start()
        with self.client() as client:
            self._wait(lambda: _answers_ready(client), "the coordinator to be ready")

    # --- workers ----------------------------------------------------------------------------------

    def _start_workers(self) -> None:
        env = dict(os.environ)
        # The workers import the examples package from where the demo runs.
        env["PYTHONPATH"] = os.pathsep.join(
            path for path in (os.getcwd(), env.get("PYTHONPATH", "")) if path
        )
        env.setdefault("NIYANTA_LOG_LEVEL", "INFO")
        for number in range(1, self.worker_count + 1):
            worker_id = f"worker-{number}"
            log_path = self.workdir / f"{worker_id}.log"
            command = [
                sys.executable, "-m", "niyanta", "--coordinator", self.url, "worker",
                "--broker", "builtin", "--import", ",".join(self.modules), "--id", worker_id,
                "--slots", str(self.slots), "--labels", f"zone={'abc'[(number - 1) % 3]}",
            ]  # fmt: skip
            with open(log_path, "wb") as log:
                popen = subprocess.Popen(
                    command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            self.workers[worker_id] = WorkerProcess(worker_id, popen, log_path)
        with self.client() as client:
            self._wait(
                lambda: len(client.list_workers()) >= self.worker_count,
                f"{self.worker_count} workers to join",
            )

    def _wait(self, condition: object, what: str) -> None:
        assert callable(condition)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._server_thread is not None and not self._server_thread.is_alive():
                raise DemoStartupError(f"the coordinator stopped while waiting for {what}")
            for worker in self.workers.values():
                if worker.popen.poll() is not None:
                    raise DemoStartupError(
                        f"{worker.worker_id} exited with {worker.popen.returncode} while waiting "
                        f"for {what}:\n{worker.log_path.read_text(errors='replace')[-3000:]}"
                    )
            if condition():
                return
            time.sleep(0.1)
        raise DemoStartupError(f"timed out after {STARTUP_TIMEOUT_S:.0f}s waiting for {what}")

    # --- teardown ---------------------------------------------------------------------------------

    def close(self) -> None:
        for worker in self.workers.values():
            worker.terminate()
        for worker in self.workers.values():
            worker.wait_or_kill(grace_s=5.0)
        if self._server is not None:
            self._server.should_exit = True
        if self._server_thread is not None:
            self._server_thread.join(timeout=15)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _answers_ready(client: NiyantaClient) -> bool:
    try:
        return client.ready()
    except (NiyantaError, httpx.HTTPError):  # not listening yet
        return False
