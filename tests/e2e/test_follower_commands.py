"""Two coordinators on one PostgreSQL database and a worker connected to the leader: everything
the API offers about workers and running replicas works through the follower too. The follower
has no worker connections; it forwards what only the leader can do (list workers, drain, pause,
cancel) to the leader, found through the store."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import free_port
from tests.processes import REPO, process_group, wait_for, wait_until_ready

from niyanta.client import NiyantaClient

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_workers_pause_and_cancel_through_a_follower(tmp_path: Path, pg_url: str) -> None:
    ports = {"coord-a": free_port(), "coord-b": free_port()}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    with (
        process_group(tmp_path) as group,
        NiyantaClient(urls["coord-a"]) as leader,
        NiyantaClient(urls["coord-b"]) as follower,
    ):
        for name, port in ports.items():
            group.start(
                name,
                ["coordinator", "--store", pg_url, "--listen", f"127.0.0.1:{port}",
                 "--id", name, "--heartbeat", "0.2"],
            )  # fmt: skip
            wait_until_ready(urls[name])
        assert follower.cluster()["leader"]["id"] == "coord-a"
        group.start(
            "w-a",
            ["--coordinator", urls["coord-a"], "worker", "--id", "w-a", "--slots", "2",
             "--import", "examples.demo_jobs"],
        )  # fmt: skip

        # niyanta workers, against the follower: the leader's view.
        wait_for(lambda: len(follower.list_workers()) == 1, timeout=20, what="w-a listed")
        listed = subprocess.run(
            [sys.executable, "-m", "niyanta", "--coordinator", urls["coord-b"], "workers",
             "--output", "json"],
            capture_output=True, check=True, cwd=REPO, timeout=30,
        )  # fmt: skip
        assert [w["id"] for w in json.loads(listed.stdout)] == ["w-a"]

        follower.create_customer("acme", "gold")
        params = {"steps": 400, "step_s": 0.05}
        workload_id = follower.submit("acme", "demo-counter", params).workload["id"]

        def replica() -> dict[str, object]:
            found: dict[str, object] = follower.get_workload(workload_id)["replicas"][0]
            return found

        wait_for(lambda: int(replica()["checkpoint_seq"]) >= 3, timeout=20, what="checkpoints")

        # Pause through the follower: the running replica checkpoints and yields to paused.
        follower.pause_workload(workload_id)
        wait_for(lambda: replica()["state"] == "paused", timeout=15, what="paused")
        paused = replica()
        wait_for(lambda: not follower.list_workers()[0]["running"], timeout=10, what="slot freed")

        follower.resume_workload(workload_id)
        wait_for(
            lambda: int(replica()["checkpoint_seq"]) > int(paused["checkpoint_seq"]),
            timeout=20,
            what="resumed past the pause",
        )
        assert replica()["resumed_from_seq"] == paused["checkpoint_seq"]

        # Cancel through the follower: cancelled, and the worker stops running it.
        follower.cancel_workload(workload_id)
        assert follower.get_workload(workload_id)["state"] == "cancelled"
        wait_for(lambda: not leader.list_workers()[0]["running"], timeout=10, what="stopped")
        seq = replica()["checkpoint_seq"]
        assert replica()["checkpoint_seq"] == seq  # nothing more written after the cancel

        # Drain through the follower: the worker leaves.
        follower.drain_worker("w-a")
        assert group.procs["w-a"].popen.wait(timeout=15) == 0
        wait_for(lambda: follower.list_workers() == [], timeout=10, what="w-a gone")
