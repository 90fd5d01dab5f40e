"""The leader coordinator SIGKILLed mid-run, three coordinators on one PostgreSQL store: a
follower leads within the leader TTL + 1 s, the workers find it (built-in WebSocket: the next
URL in their list; NATS: the new leader asks them to say Hello again), every workload finishes,
and no replica committed from two holders at once."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from tests.faults.cluster import (
    Timing,
    all_running_on,
    completions,
    fault_cluster,
    leader,
    wait_finished,
)
from tests.faults.traces import assert_committed_once_in_order, figures, read_traces
from tests.processes import wait_for

from niyanta.client import NiyantaClient

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _new_leader(client: NiyantaClient, old: str, old_term: int) -> bool:
    try:
        found, term = leader(client)
    except Exception:  # the client found no coordinator answering yet
        return False
    return found not in (None, old) and term > old_term


@pytest.mark.parametrize("transport", ["builtin", "nats"])
def test_the_leader_dies_a_follower_leads_and_everything_finishes(
    tmp_path: Path, pg_url: str, transport: str, request: pytest.FixtureRequest
) -> None:
    broker = "builtin" if transport == "builtin" else request.getfixturevalue("nats_url")
    # The leader's lease is shorter than the replicas': workers re-attach to the new leader
    # before their leases lapse, so their replicas keep running through the failover.
    timing = Timing(heartbeat_s=0.5, lease_ttl_s=3.0, leader_ttl_s=1.0)
    steps = 40
    with fault_cluster(tmp_path, pg_url, broker=broker, timing=timing) as cluster:
        for name in ("coord-a", "coord-b", "coord-c"):
            cluster.start_coordinator(name)
        worker = cluster.start_worker("w-1", slots=10)
        with cluster.client() as client:
            old, old_term = leader(client)
            assert old == "coord-a"
            ids = cluster.submit(client, 10, steps=steps, step_s=0.1)
            wait_for(lambda: all_running_on(client, ids, "w-1"), 30, 0.1, "10 running")
            killed_at = time.monotonic()
            cluster.group.procs[old].signal(signal.SIGKILL)
            wait_for(lambda: _new_leader(client, old, old_term), 30, 0.05, "a new leader")
            failover_s = time.monotonic() - killed_at
            final = wait_finished(client, ids, timeout=60)
            once = [completions(client, wid) for wid in ids]
            new, _ = leader(client)
        assert failover_s <= timing.leader_ttl_s + 1.0
        assert [final[wid] for wid in ids] == ["succeeded"] * 10
        assert once == [1] * 10
        traces = read_traces(cluster.trace_dir)
        assert_committed_once_in_order(traces.values(), steps)
        redone = sum(trace.redone_steps() for trace in traces.values())
        # Re-attached before their leases lapsed: no replica stopped or started again.
        assert [len(trace.starts()) for trace in traces.values()] == [1] * 10
        if transport == "nats":
            # No connection broke: the new leader met the worker through a heartbeat and asked
            # it to say Hello again, which it did.
            assert "joining again" in worker.log()
            assert "worker.heartbeat_unknown" in cluster.group.procs[str(new)].log()
        figures(
            test=f"leader_failover_{transport}",
            failover_s=failover_s,
            leader_ttl_s=timing.leader_ttl_s,
            redone_steps_total=redone,
            lost=sum(final[wid] != "succeeded" for wid in ids),
        )
