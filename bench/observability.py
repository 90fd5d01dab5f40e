"""Overhead of metrics and tracing on the end-to-end path, on vs off in the same run.

A coordinator and two workers as separate processes (SQLite, the built-in WebSocket broker, as
``niyanta coordinator`` / ``niyanta worker`` run them) execute ``demo-noop`` workloads submitted
over the HTTP API by 32 concurrent clients; throughput is workloads per second from the first
submit until the last one succeeded. Each round starts fresh processes on a fresh store.

- off: ``NIYANTA_COORDINATOR_METRICS=off`` (every metric inert) and ``NIYANTA_TRACING=off``;
- metrics: metrics counted, tracing off;
- on: metrics counted, and the OpenTelemetry SDK recording every span (FastAPI's request spans,
  submit, schedule, dispatch, execute, checkpoint, complete) and exporting it in batches to a
  JSON-lines file (``NIYANTA_TRACE_FILE``), as an OTLP exporter would, minus the network.

Each round runs the three modes back to back (which one goes first rotates), so that load from
elsewhere on the machine hits them alike; a mode's figures are the medians of its rounds.

- ``overhead_ratio``: median over rounds of 1 - on/off workloads/s (0.05: 5% fewer workloads/s);
- ``cpu_overhead_ratio``: median of on/off - 1 of the CPU time the three processes spent per
  workload, the figure least disturbed by other load on the machine;
- ``metrics_overhead_ratio``: as ``overhead_ratio``, for metrics alone.

Before the rounds, a micro-benchmark of the JSON log lines themselves: lines per second of the
logger as ``niyanta`` commands configure it (``configure_logging``, JSON, writing to /dev/null), a
typical coordinator line about a workload, against the configuration before it was made cheaper
(structlog's stock ``TimeStamper``, ``StackInfoRenderer`` and ``JSONRenderer`` on the standard
library's json), alternated in the same run:

- ``log_lines_per_s_stock`` / ``log_lines_per_s``: the best of the alternated batches.

Run: .venv/bin/python bench/observability.py [--quick] [--logging-only]
(last line: one JSON object)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
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
import structlog

from niyanta.client import NiyantaClient
from niyanta.errors import NiyantaError
from niyanta.observability.logging import UtcTimestamp, configure_logging

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


def _cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU time the processes used so far (from /proc)."""
    total = 0
    for proc in procs:
        with open(f"/proc/{proc.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def _wait(predicate: object, timeout: float, what: str, interval: float = 0.05) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (httpx.HTTPError, NiyantaError):
            pass
        time.sleep(interval)
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


def one_round(mode: str, count: int) -> tuple[float, float]:
    """Workloads per second of one fresh cluster in ``mode`` (``off``, ``metrics``: metrics
    only, ``on``: metrics and tracing), and the CPU milliseconds its processes spent per
    workload (span export included)."""
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
                cpu_before = _cpu_seconds(procs)
                asyncio.run(_submit_all(url, count))
                _wait(
                    lambda: (
                        sum(1 for _ in client.iter_workloads(state="succeeded", page_size=200))
                        >= count
                    ),
                    300,
                    "every workload succeeded",
                    interval=0.25,
                )
                elapsed = time.perf_counter() - started
                scrape = httpx.get(f"{url}/metrics", timeout=30).text
                assert ("niyanta_workloads_submitted_total" in scrape) == (mode != "off")
                if mode == "on":
                    _wait(lambda: _spans(workdir) >= count * 5, 30, "the spans exported")
                cpu = _cpu_seconds(procs) - cpu_before
            return count / elapsed, 1000 * cpu / count
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


def _configure_json_logging(devnull: object, stock: bool) -> None:
    """``configure_logging`` as a command runs it, writing to ``devnull``; ``stock``: with
    structlog's stock timestamp, stack info and JSON processors instead of ours (the baseline)."""
    stderr, sys.stderr = sys.stderr, devnull
    try:
        configure_logging("INFO", "json")
    finally:
        sys.stderr = stderr
    if stock:
        processors = list(structlog.get_config()["processors"])
        stamper = next(i for i, p in enumerate(processors) if isinstance(p, UtcTimestamp))
        processors[stamper] = structlog.processors.TimeStamper(fmt="iso", utc=True)
        format_exc_info = processors[-2]
        processors[-2:] = [
            structlog.processors.StackInfoRenderer(),
            format_exc_info,
            structlog.processors.JSONRenderer(),
        ]
        structlog.configure(processors=processors)


def log_lines_per_s(lines: int, batches: int) -> dict[str, float]:
    """Lines per second of each configuration: the best batch of each, batches alternated."""
    log = structlog.get_logger("niyanta.coordinator")
    fields = {
        "customer": "bench",
        "workload": "w-7a57d2126e9348669d20ff484f8120ed",
        "replica": 0,
        "worker": "w1",
        "fence": 1,
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
    }
    best = {"stock": 0.0, "ours": 0.0}
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with open(os.devnull, "w") as devnull:
        for _ in range(batches):
            for name in best:
                _configure_json_logging(devnull, stock=name == "stock")
                started = time.perf_counter()
                for _ in range(lines):
                    log.info("replica.succeeded", outcome="succeeded", attempt=1, **fields)
                best[name] = max(best[name], lines / (time.perf_counter() - started))
    structlog.reset_defaults()
    # configure_logging gave the stdlib root logger a handler on devnull, closed now: put back
    # what was there, or the benchmark's own HTTP client would log into a closed file.
    root.handlers[:] = handlers
    root.setLevel(level)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer workloads and rounds")
    parser.add_argument(
        "--logging-only", action="store_true", help="only the log line micro-benchmark"
    )
    args = parser.parse_args()
    logging_rates = log_lines_per_s(lines=20_000, batches=3 if args.quick else 7)
    print(
        f"JSON log lines/s: {logging_rates['ours']:,.0f} ({1e6 / logging_rates['ours']:.1f} us "
        f"a line); stock structlog processors: {logging_rates['stock']:,.0f} "
        f"({1e6 / logging_rates['stock']:.1f} us)"
    )
    logging_figures = {
        "log_lines_per_s": round(logging_rates["ours"]),
        "log_lines_per_s_stock": round(logging_rates["stock"]),
    }
    if args.logging_only:
        print(json.dumps(logging_figures))
        return
    count, rounds = (150, 1) if args.quick else (300, 6)
    rates: dict[str, list[float]] = {"off": [], "metrics": [], "on": []}
    cpu: dict[str, list[float]] = {mode: [] for mode in rates}
    modes = list(rates)
    for number in range(rounds):
        # The mode that runs first changes every round: no mode always meets a cold machine.
        for mode in modes[number % 3 :] + modes[: number % 3]:
            rate, cpu_ms = one_round(mode, count)
            rates[mode].append(rate)
            cpu[mode].append(cpu_ms)
            print(
                f"round {number + 1} {mode:>7}: {count} workloads, {rate:7.1f} workloads/s, "
                f"{cpu_ms:5.2f} CPU ms per workload"
            )
    # Each round runs the modes back to back: the ratio within a round cancels most of the
    # drift of the machine's load; the median over rounds drops the outliers.
    ratio = statistics.median(
        1 - on / off for on, off in zip(rates["on"], rates["off"], strict=True)
    )
    metrics_ratio = statistics.median(
        1 - m / off for m, off in zip(rates["metrics"], rates["off"], strict=True)
    )
    cpu_ratio = statistics.median(
        on / off - 1 for on, off in zip(cpu["on"], cpu["off"], strict=True)
    )
    median = {mode: statistics.median(values) for mode, values in rates.items()}
    median_cpu = {mode: statistics.median(values) for mode, values in cpu.items()}
    print(
        f"workloads/s (median): off {median['off']:.1f}, metrics only {median['metrics']:.1f}, "
        f"metrics+tracing {median['on']:.1f}"
    )
    print(
        f"CPU ms per workload (median): off {median_cpu['off']:.2f}, metrics only "
        f"{median_cpu['metrics']:.2f}, metrics+tracing {median_cpu['on']:.2f}"
    )
    print(
        f"overhead of metrics+tracing: {ratio:.1%} fewer workloads/s, {cpu_ratio:.1%} more CPU "
        f"per workload (target < 10%); metrics alone: {metrics_ratio:.1%} fewer workloads/s"
    )
    print(
        json.dumps(
            {
                "workloads_per_round": count,
                "rounds": rounds,
                "off_workloads_per_s": round(median["off"], 1),
                "metrics_only_workloads_per_s": round(median["metrics"], 1),
                "on_workloads_per_s": round(median["on"], 1),
                "off_cpu_ms_per_workload": round(median_cpu["off"], 3),
                "on_cpu_ms_per_workload": round(median_cpu["on"], 3),
                "overhead_ratio": round(ratio, 4),
                "metrics_overhead_ratio": round(metrics_ratio, 4),
                "cpu_overhead_ratio": round(cpu_ratio, 4),
                "target_ratio": 0.10,
                **logging_figures,
            }
        )
    )


if __name__ == "__main__":
    main()
