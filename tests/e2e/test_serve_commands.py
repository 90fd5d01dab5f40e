"""``niyanta coordinator`` and ``niyanta worker`` as separate processes: their options reach the
running system, and SIGTERM drains a worker (exit 0, replicas handed back with their
checkpoints and resumed by another worker)."""

from __future__ import annotations

import json
import signal
import socket
import uuid
from pathlib import Path

import pytest
from tests.processes import process_group, wait_for, wait_until_ready

from niyanta.client import NiyantaClient

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _joined(log: str) -> dict[str, object]:
    for line in log.splitlines():
        if '"joined"' in line:
            entry: dict[str, object] = json.loads(line)
            return entry
    raise AssertionError(f"no 'joined' line in:\n{log}")


def test_coordinator_and_worker_options_and_drain_on_sigterm(tmp_path: Path) -> None:
    _options_and_drain(tmp_path, store="sqlite:///./c.db", broker=[])


@pytest.mark.postgres
@pytest.mark.nats
def test_the_same_on_postgresql_and_nats(tmp_path: Path, pg_url: str, nats_url: str) -> None:
    cluster = f"cli-e2e-{uuid.uuid4().hex[:8]}"  # the shared NATS carries other tests' clusters
    _options_and_drain(tmp_path, store=pg_url, broker=["--broker", nats_url, "--cluster", cluster])


def _options_and_drain(tmp_path: Path, *, store: str, broker: list[str]) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    worker_args = [
        "--coordinator", url, "worker", *broker, "--import", "examples.demo_jobs", "--slots", "3",
    ]  # fmt: skip
    with process_group(tmp_path) as group, NiyantaClient(url) as client:
        group.start(
            "coordinator",
            ["coordinator", "--store", store, *broker, "--listen", f"127.0.0.1:{port}",
             "--id", "coord-a", "--lease-ttl", "3", "--heartbeat", "0.5"],
        )  # fmt: skip
        wait_until_ready(url)
        first = group.start("w-a", [*worker_args, "--id", "w-a", "--labels", "zone=a,gpu=true"])
        wait_for(lambda: len(client.list_workers()) == 1, timeout=15, what="w-a joined")

        (worker,) = client.list_workers()
        assert (worker["id"], worker["labels"]) == ("w-a", {"zone": "a", "gpu": "true"})
        assert worker["capacity"]["slots"] == 3
        assert client.cluster()["leader"]["id"] == "coord-a"
        # The worker logs "joined" when the Welcome arrives, just after the coordinator lists it.
        wait_for(lambda: '"joined"' in first.log(), timeout=5, what="w-a's joined log line")
        joined = _joined(first.log())
        assert (joined["heartbeat_interval_s"], joined["lease_ttl_s"]) == (0.5, 3.0)

        client.create_customer("acme", "gold")
        submitted = client.submit("acme", "demo-counter", {"steps": 60, "step_s": 0.05})
        workload_id = submitted.workload["id"]
        wait_for(
            lambda: client.get_workload(workload_id)["replicas"][0]["checkpoint_seq"] >= 3,
            timeout=15,
            what="three checkpoints on w-a",
        )

        first.signal(signal.SIGTERM)
        assert first.popen.wait(timeout=10) == 0
        assert "draining" in first.log()
        handed_back = client.get_workload(workload_id)["replicas"][0]
        assert handed_back["state"] == "pending"
        assert handed_back["checkpoint_seq"] >= 3

        group.start("w-b", [*worker_args, "--id", "w-b"])
        wait_for(
            lambda: client.get_workload(workload_id)["state"] == "succeeded",
            timeout=20,
            what="the workload finishing on w-b",
        )
        done = client.get_workload(workload_id)["replicas"][0]
        assert done["worker_id"] == "w-b"
        assert done["resumed_from_seq"] == handed_back["checkpoint_seq"]
        assert done["result"] == {"count": 60, "resumed_from": handed_back["checkpoint_seq"]}


def test_dev_drains_on_sigterm_and_a_restart_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [
        "dev",
        "--workers",
        "1",
        "--import",
        "examples.demo_jobs",
        "--listen",
        f"127.0.0.1:{port}",
    ]
    with process_group(tmp_path) as group, NiyantaClient(url) as client:
        first = group.start("dev-1", args)
        wait_until_ready(url)
        client.create_customer("acme", "gold")
        workload_id = client.submit("acme", "demo-counter", {"steps": 40, "step_s": 0.05}).workload[
            "id"
        ]
        wait_for(
            lambda: client.get_workload(workload_id)["replicas"][0]["checkpoint_seq"] >= 3,
            timeout=15,
            what="three checkpoints",
        )
        first.signal(signal.SIGTERM)
        assert first.popen.wait(timeout=10) == 0

        group.start("dev-2", args)  # the same ./niyanta.db
        wait_until_ready(url)
        wait_for(
            lambda: client.get_workload(workload_id)["state"] == "succeeded",
            timeout=20,
            what="the workload finishing after the restart",
        )
        replica = client.get_workload(workload_id)["replicas"][0]
        assert replica["resumed_from_seq"] >= 3
        assert replica["result"] == {"count": 40, "resumed_from": replica["resumed_from_seq"]}
