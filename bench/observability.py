"""Overhead of metrics and tracing on the end-to-end path, on vs off in the same run.

A coordinator and two workers as separate processes (SQLite, the built-in WebSocket broker, as
``niyanta coordinator`` / ``niyanta worker`` run them) execute ``demo-noop`` workloads submitted
over the HTTP API by 32 concurrent clients; throughput is workloads per second from the first
submit until the last one succeeded. Each round starts fresh processes on a fresh store.

- off: ``NIYANTA_COORDINATOR_METRICS=off`` (every metric inert) and ``NIYANTA_TRACING=off``;
- on: metrics counted, and the OpenTelemetry SDK recording every span (HTTP, submit, schedule,
  dispatch, execute, complete) and exporting it synchronously to a JSON-lines file
  (``NIYANTA_TRACE_FILE``), the most expensive exporter Niyanta ships.

Rounds alternate off/on so that load from elsewhere on the machine hits both alike; each mode's
figure is the median of its rounds. ``overhead_ratio`` = 1 - on/off (0.05: 5% fewer workloads/s).

Run: .venv/bin/python bench/observability.py [--quick]   (last line: one JSON object)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from niyanta.client import NiyantaClient
from niyanta.errors import NiyantaError

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 32


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "niyanta", *args],
            env=env,
            cwd=log.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait(predicate: object, timeout: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, NiyantaError):
            pass
        time.sleep(0.05)
    raise TimeoutError(what)


async def _submit_all(url: str, count: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for number in range(count):
        queue.put_nowait(number)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            while not queue.empty():
                queue.get_nowait()
                body = {"customer_id": "bench", "type": "demo-noop", "params": {}}
                response = await http.post("/v1/workloads", json=body)
                response.raise_for_status()

    await asyncio.gather(*(client() for _ in range(CLIENTS)))


def _spans(workdir: Path) -> int:
    return (workdir / "spans.jsonl").read_text().count("\n")


def one_round(mode: str, count: int) -> float:
    """Workloads per second of one fresh cluster in ``mode`` (``off``, ``metrics``: metrics
    only, ``on``: metrics and tracing)."""
    with tempfile.TemporaryDirectory(prefix=f"niyanta-obs-{mode}-") as tmp:
        workdir = Path(tmp)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env["NIYANTA_LOG_LEVEL"] = "INFO"
        if mode == "off":
            env["NIYANTA_COORDINATOR_METRICS"] = "off"
        if mode != "on":
            env["NIYANTA_TRACING"] = "off"
        else:
            env["NIYANTA_TRACE_FILE"] = str(workdir / "spans.jsonl")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        procs = [
            _start(
                ["coordinator", "--store", "sqlite:///./bench.db", "--listen",
                 f"127.0.0.1:{port}"],
                env,
                workdir / "coordinator.log",
            )
        ]  # fmt: skip
        try:
            with NiyantaClient(url) as client:
                _wait(client.ready, 30, "coordinator ready")
                for number in (1, 2):
                    procs.append(
                        _start(
                            ["--coordinator", url, "worker", "--id", f"w{number}", "--slots",
                             "8", "--import", "examples.demo_jobs"],
                            env,
                            workdir / f"w{number}.log",
                        )
                    )  # fmt: skip
                _wait(lambda: len(client.list_workers()) == 2, 30, "workers joined")
                client.create_customer("bench", "gold")
                started = time.perf_counter()
                asyncio.run(_submit_all(url, count))
                _wait(
                    lambda: (
                        sum(1 for _ in client.iter_workloads(state="succeeded", page_size=200))
                        >= count
                    ),
                    300,
                    "every workload succeeded",
                )
                elapsed = time.perf_counter() - started
                scrape = httpx.get(f"{url}/metrics", timeout=30).text
                assert ("niyanta_workloads_submitted_total" in scrape) == (mode != "off")
                if mode == "on":
                    _wait(lambda: _spans(workdir) >= count * 5, 30, "the spans exported")
            return count / elapsed
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer workloads and rounds")
    args = parser.parse_args()
    count, rounds = (150, 1) if args.quick else (400, 3)
    figures: dict[str, list[float]] = {"off": [], "metrics": [], "on": []}
    for number in range(rounds):
        for mode in figures:
            rate = one_round(mode, count)
            figures[mode].append(rate)
            print(f"round {number + 1} {mode:>7}: {count} workloads, {rate:7.1f} workloads/s")
    off, metrics_only, on = (statistics.median(figures[mode]) for mode in figures)
    ratio = 1 - on / off
    print(
        f"off: {off:.1f} workloads/s; metrics only: {metrics_only:.1f}; metrics+tracing: {on:.1f}"
    )
    print(f"overhead of metrics+tracing: {ratio:.1%} (target < 10%)")
    print(
        json.dumps(
            {
                "workloads_per_round": count,
                "rounds": rounds,
                "off_workloads_per_s": round(off, 1),
                "on_workloads_per_s": round(on, 1),
                "metrics_only_workloads_per_s": round(metrics_only, 1),
                "metrics_overhead_ratio": round(1 - metrics_only / off, 4),
                "overhead_ratio": round(ratio, 4),
                "target_ratio": 0.10,
            }
        )
    )


if __name__ == "__main__":
    main()
