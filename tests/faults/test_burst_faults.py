"""A burst of 2,000 submissions while a worker dies: every accepted workload reaches a terminal
state, and the coordinator holds exactly the workloads it accepted."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.faults.cluster import fault_cluster, states
from tests.faults.traces import figures
from tests.processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

BURST = 2000
SENDERS = 4


def test_a_burst_of_submissions_while_a_worker_dies_loses_nothing(
    tmp_path: Path, pg_url: str
) -> None:
    with fault_cluster(tmp_path, pg_url) as cluster:
        cluster.start_coordinator("coord-a")
        dying = cluster.start_worker("w-dying", slots=40)
        cluster.start_worker("w-living", slots=40)
        accepted: list[str] = []
        lock = threading.Lock()
        with cluster.client() as client:
            cluster.submit(client, 1, steps=1, step_s=0.0, traced=False)  # creates the customer
            wait_for(lambda: len(states(client)) == 1, 10)
            warmup = list(states(client))

            def send(count: int) -> None:
                with cluster.client() as own:
                    ids = cluster.submit(own, count, steps=2, step_s=0.05, traced=False)
                with lock:
                    accepted.extend(ids)

            started = time.monotonic()
            with ThreadPoolExecutor(SENDERS) as pool:
                sending = [pool.submit(send, BURST // SENDERS) for _ in range(SENDERS)]
                wait_for(lambda: len(states(client)) > BURST // 4, 60, 0.1, "a quarter in")
                dying.signal(signal.SIGKILL)
                killed_after = len(states(client)) - 1
                for future in sending:
                    future.result()
            submit_s = time.monotonic() - started
            ids = accepted + warmup
            found: dict[str, str] = {}

            def all_terminal() -> bool:
                found.clear()
                found.update(states(client))
                return all(found.get(wid) in {"succeeded", "failed", "cancelled"} for wid in ids)

            wait_for(all_terminal, 120, 0.5, "every accepted workload finishes")
            done_s = time.monotonic() - started
        left = [
            json.loads(line)
            for line in cluster.group.procs["coord-a"].log().splitlines()
            if '"worker.left"' in line and '"w-dying"' in line
        ]
        released = sum(entry["released"] for entry in left)
        assert released >= 1  # it died with work in hand, which went elsewhere
        assert len(accepted) == BURST and len(set(accepted)) == BURST
        assert sorted(found) == sorted(ids)  # nothing more, nothing less
        outcomes = [found[wid] for wid in ids]
        assert outcomes.count("succeeded") == len(ids)
        figures(
            test="burst_while_worker_dies",
            accepted=len(accepted),
            killed_after_submissions=killed_after,
            released_from_dead_worker=released,
            submit_s=submit_s,
            all_finished_s=done_s,
            lost=len(ids) - outcomes.count("succeeded"),
        )
