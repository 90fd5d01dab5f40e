"""The store and the broker restarted mid-run, each a server the test owns on a spare port:
`/ready` follows the store, running replicas keep running (their leases are extended when the
store is back, not expired en masse), both sides of NATS reconnect and reconcile, and every
workload finishes exactly once."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from tests.faults.cluster import (
    Timing,
    all_running_on,
    completions,
    fault_cluster,
    wait_finished,
)
from tests.faults.servers import own_nats, own_postgres
from tests.faults.traces import assert_committed_once_in_order, figures, read_traces
from tests.processes import wait_for

pytestmark = pytest.mark.slow


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/ready", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def test_postgresql_restart_keeps_replicas_running(tmp_path: Path) -> None:
    timing = Timing(heartbeat_s=0.5, lease_ttl_s=2.0)
    steps = 40
    with (
        own_postgres() as postgres,
        fault_cluster(tmp_path, postgres.url, timing=timing) as cluster,
    ):
        url = cluster.start_coordinator("coord-a")
        cluster.start_worker("w-1", slots=10)
        with cluster.client() as client:
            ids = cluster.submit(client, 10, steps=steps, step_s=0.1)
            wait_for(lambda: all_running_on(client, ids, "w-1"), 30, 0.1, "10 running")
            postgres.stop()
            down_at = time.monotonic()
            wait_for(lambda: not _ready(url), 10, 0.05, "/ready false")
            not_ready_after_s = time.monotonic() - down_at
            time.sleep(timing.lease_ttl_s * 1.5)  # down for longer than a lease
            postgres.start()
            up_at = time.monotonic()
            wait_for(lambda: _ready(url), 30, 0.05, "/ready true")
            ready_after_s = time.monotonic() - up_at
            final = wait_finished(client, ids, timeout=60)
            once = [completions(client, wid) for wid in ids]
        assert [final[wid] for wid in ids] == ["succeeded"] * 10
        assert once == [1] * 10
        traces = read_traces(cluster.trace_dir)
        assert_committed_once_in_order(traces.values(), steps)
        # The outage outlasted every lease, yet no replica was stopped or started again.
        assert [len(trace.starts()) for trace in traces.values()] == [1] * 10
        assert '"lease.expired"' not in cluster.group.procs["coord-a"].log()
        figures(
            test="postgresql_restart",
            outage_s=round(up_at - down_at, 3),
            not_ready_after_s=not_ready_after_s,
            ready_after_restart_s=ready_after_s,
            restarted_replicas=0,
            lost=sum(final[wid] != "succeeded" for wid in ids),
        )


@pytest.mark.postgres
@pytest.mark.parametrize("outage_s", [1.0, 4.5], ids=["shorter-than-a-lease", "longer"])
def test_nats_restart_both_sides_reconnect_and_everything_finishes_once(
    tmp_path: Path, pg_url: str, outage_s: float
) -> None:
    timing = Timing(heartbeat_s=0.5, lease_ttl_s=3.0)
    steps = 40
    with own_nats() as nats, fault_cluster(tmp_path, pg_url, nats.url, timing) as cluster:
        cluster.start_coordinator("coord-a")
        worker = cluster.start_worker("w-1", slots=10)
        with cluster.client() as client:
            ids = cluster.submit(client, 10, steps=steps, step_s=0.1)
            wait_for(lambda: all_running_on(client, ids, "w-1"), 30, 0.1, "10 running")
            nats.stop()
            time.sleep(outage_s)
            nats.start()
            final = wait_finished(client, ids, timeout=60)
            once = [completions(client, wid) for wid in ids]
        assert [final[wid] for wid in ids] == ["succeeded"] * 10
        assert once == [1] * 10
        traces = read_traces(cluster.trace_dir)
        assert_committed_once_in_order(traces.values(), steps)
        joins = [line for line in worker.log().splitlines() if '"joined"' in line]
        restarted = sum(len(t.starts()) > 1 for t in traces.values())
        if outage_s < timing.lease_ttl_s:
            # Hello again with all 10 in its inventory; the coordinator kept every one.
            assert json.loads(joins[-1])["inventory"] == 10
            assert restarted == 0
        else:
            # Both sides gave the leases up (the worker fenced itself, the coordinator
            # requeued them); after reconnecting, each replica resumed from its checkpoint.
            assert len(joins) >= 2
            assert all(t.redone_steps() <= 1 for t in traces.values())
        coordinator_log = cluster.group.procs["coord-a"].log()
        figures(
            test="nats_restart",
            outage_s=outage_s,
            lease_ttl_s=timing.lease_ttl_s,
            restarted_replicas=restarted,
            redone_steps_total=sum(t.redone_steps() for t in traces.values()),
            leases_expired=coordinator_log.count('"lease.expired"'),
            stopped_as_fenced=coordinator_log.count('"replica.start_refused"'),
            missing_released=coordinator_log.count('"replica.missing_on_worker"'),
            lost=sum(final[wid] != "succeeded" for wid in ids),
        )
