"""Real processes for end-to-end and fault tests: start coordinators and workers through the
`niyanta` CLI, wait until they answer, signal them (SIGKILL, SIGSTOP, SIGTERM), and always clean
up every process started, even when the test fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass
class ProcessGroup:
    workdir: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    def start(self, name: str, args: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        """Run ``niyanta <args>`` with the repo root importable (for ``examples``)."""
        log_path = self.workdir / f"{name}.log"
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), full_env.get("PYTHONPATH", "")) if p
        )
        full_env.setdefault("NIYANTA_LOG_LEVEL", "INFO")
        full_env.update(env or {})
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "niyanta", *args],
                cwd=self.workdir,
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path)
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.popen.poll() is None:
                # A SIGSTOPped process must be continued before it can act on SIGTERM.
                proc.signal(signal.SIGCONT)
                proc.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs.values():
            remaining = max(0.1, deadline - time.monotonic())
            try:
                proc.popen.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                proc.signal(signal.SIGKILL)
                proc.popen.wait(timeout=5)

    def logs(self) -> str:
        return "\n".join(f"===== {p.name}\n{p.log()[-6000:]}" for p in self.procs.values())


@contextmanager
def process_group(workdir: Path) -> Iterator[ProcessGroup]:
    group = ProcessGroup(workdir)
    try:
        yield group
    except BaseException:
        sys.stderr.write(group.logs())
        raise
    finally:
        group.stop_all()


def wait_until_ready(base_url: str, timeout: float = 20.0, path: str = "/ready") -> None:
    deadline = time.monotonic() + timeout
    last: Exception | str = "never answered"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(base_url + path, timeout=1.0)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{base_url}{path} not ready after {timeout}s: {last}")


def wait_for(predicate: object, timeout: float, interval: float = 0.05, what: str = "") -> None:
    """Poll ``predicate()`` until it is truthy."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
