"""A Niyanta cluster of real processes for the fault tests: coordinators and workers started
through the CLI (``tests/processes.py``), short lease timings, the ``fault-steps`` workload, and
the questions every fault test asks of it (where does each replica run, has everything
finished, how many times did each replica complete)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.faults.workloads import TYPE
from tests.processes import Proc, ProcessGroup, process_group, wait_for, wait_until_ready

from niyanta.client import NiyantaClient

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
CUSTOMER = "acme"


@dataclass(frozen=True)
class Timing:
    """Short timings so that each fault plays out in seconds (defaults are 1 s and 5 s)."""

    heartbeat_s: float = 0.5
    lease_ttl_s: float = 2.0
    leader_ttl_s: float = 1.5


@dataclass
class FaultCluster:
    group: ProcessGroup
    store: str
    broker: str
    """``builtin`` (the coordinators' WebSocket endpoint) or a NATS URL."""
    trace_dir: Path
    timing: Timing = Timing()
    cluster: str = field(default_factory=lambda: f"faults-{uuid.uuid4().hex[:8]}")
    urls: list[str] = field(default_factory=list)
    _customer_created: bool = False

    def _broker_args(self) -> list[str]:
        return ["--broker", self.broker, "--cluster", self.cluster]

    def start_coordinator(self, name: str, env: dict[str, str] | None = None) -> str:
        """Start a coordinator on a spare port; return its URL once it is ready."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        timing = self.timing
        self.group.start(
            name,
            ["coordinator", "--store", self.store, *self._broker_args(),
             "--listen", f"127.0.0.1:{port}", "--id", name,
             "--lease-ttl", str(timing.lease_ttl_s), "--heartbeat", str(timing.heartbeat_s)],
            env={"NIYANTA_COORDINATOR_LEADER_TTL_S": str(timing.leader_ttl_s),
                 "NIYANTA_COORDINATOR_LEASE_CHECK_INTERVAL_S": "0.05", **(env or {})},
        )  # fmt: skip
        wait_until_ready(url, timeout=30)
        self.urls.append(url)
        return url

    def start_worker(
        self,
        name: str,
        slots: int,
        wait: bool = True,
        urls: list[str] | None = None,
        labels: str = "",
    ) -> Proc:
        """Start a worker dialling ``urls`` (default: every coordinator started so far); wait
        until it joined."""
        proc = self.group.start(
            name,
            ["worker", "--coordinator", ",".join(urls or self.urls), *self._broker_args(),
             "--import", "tests.faults.workloads", "--id", name, "--slots", str(slots),
             "--labels", labels],
        )  # fmt: skip
        if wait:
            wait_for(lambda: '"joined"' in proc.log(), timeout=30, what=f"{name} joined")
        return proc

    def client(self) -> NiyantaClient:
        return NiyantaClient(",".join(self.urls), timeout=30)

    def submit(
        self,
        client: NiyantaClient,
        count: int,
        steps: int,
        step_s: float,
        traced: bool = True,
        affinity: dict[str, Any] | None = None,
        **extra: Any,
    ) -> list[str]:
        if not self._customer_created:
            client.create_customer(CUSTOMER, "gold")
            self._customer_created = True
        params: dict[str, Any] = {"steps": steps, "step_s": step_s, **extra}
        if traced:
            params["trace_dir"] = str(self.trace_dir)
        return [
            client.submit(CUSTOMER, TYPE, params, affinity=affinity).workload["id"]
            for _ in range(count)
        ]


def prefer(worker: str) -> dict[str, Any]:
    """Soft affinity to the worker started with ``labels=f"role={worker}"``: replicas land on
    it while it has room, and go elsewhere once it is gone. A fault test starts the worker that
    takes over before submitting, so that the victim is killed while its replicas still run."""
    return {"preferred": [{"key": "role", "op": "In", "values": [worker], "weight": 100}]}


def replicas(client: NiyantaClient, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Replica 0 of each workload, by workload id (``fault-steps`` workloads have one)."""
    return {wid: client.get_workload(wid)["replicas"][0] for wid in ids}


def all_running_on(client: NiyantaClient, ids: list[str], worker: str) -> bool:
    return all(
        r["state"] == "running" and r["worker_id"] == worker and r["checkpoint_seq"] >= 1
        for r in replicas(client, ids).values()
    )


def states(client: NiyantaClient) -> dict[str, str]:
    """Every workload of the test customer by id, with its state."""
    return {w["id"]: w["state"] for w in client.iter_workloads(customer=CUSTOMER, page_size=1000)}


def wait_finished(client: NiyantaClient, ids: list[str], timeout: float) -> dict[str, str]:
    """Wait until every one of ``ids`` is in a terminal state; return all states."""
    seen: dict[str, str] = {}

    def finished() -> bool:
        seen.update(states(client))
        return all(seen.get(wid) in TERMINAL for wid in ids)

    wait_for(finished, timeout=timeout, interval=0.25, what=f"{len(ids)} workloads finish")
    return seen


def completions(client: NiyantaClient, workload_id: str) -> int:
    """How many times the store recorded replica 0 of a workload as succeeded."""
    return sum(
        1
        for event in client.iter_events(workload_id)
        if event["kind"] == "replica.succeeded" and event["index"] == 0
    )


def leader(client: NiyantaClient) -> tuple[str | None, int]:
    cluster = client.cluster()
    found = cluster.get("leader") or {}
    return found.get("id"), int(cluster.get("term") or 0)


def metric(url: str, name: str) -> float:
    """The sum of a Prometheus counter's samples at ``url``/metrics (0 when absent)."""
    import httpx

    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            sample = line.split("{")[0].split(" ")[0]
            if sample in (name, f"{name}_total"):
                total += float(line.rsplit(" ", 1)[1])
    return total


@contextmanager
def fault_cluster(
    tmp_path: Path, store: str, broker: str = "builtin", timing: Timing | None = None
) -> Iterator[FaultCluster]:
    trace_dir = tmp_path / "traces"
    trace_dir.mkdir()
    with process_group(tmp_path) as group:
        yield FaultCluster(group, store, broker, trace_dir, timing or Timing())
