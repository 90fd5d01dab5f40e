"""A worker killed, frozen or stopped politely, with real processes on PostgreSQL: its replicas
resume elsewhere from their last committed checkpoint, a frozen worker that wakes up can write
nothing, and a drained one hands back without a lease wait."""

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
    metric,
    prefer,
    replicas,
    wait_finished,
)
from tests.faults.proxy import FlappingProxy
from tests.faults.traces import assert_committed_once_in_order, figures, percentile, read_traces
from tests.processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_sigkill_resumes_every_replica_from_its_last_committed_checkpoint(
    tmp_path: Path, pg_url: str
) -> None:
    steps = 30
    with fault_cluster(tmp_path, pg_url) as cluster:
        cluster.start_coordinator("coord-a")
        victim = cluster.start_worker("w-victim", slots=20, labels="role=w-victim")
        cluster.start_worker("w-survivor", slots=20)
        with cluster.client() as client:
            ids = cluster.submit(client, 20, steps=steps, step_s=0.1, affinity=prefer("w-victim"))
            wait_for(lambda: all_running_on(client, ids, "w-victim"), 30, 0.1, "20 on w-victim")
            killed_at = time.time()
            victim.signal(signal.SIGKILL)
            final = wait_finished(client, ids, timeout=60)
            ended = replicas(client, ids)
            once = [completions(client, wid) for wid in ids]
        assert [final[wid] for wid in ids] == ["succeeded"] * 20
        assert once == [1] * 20
        traces = read_traces(cluster.trace_dir)
        latencies: list[float] = []
        redone: list[int] = []
        for wid in ids:
            trace = traces[f"{wid}-0"]
            resumed = trace.first_start_after(killed_at, not_on="w-victim")
            assert resumed is not None and resumed["worker"] == "w-survivor"
            acknowledged = trace.last_acknowledged_seq("w-victim")
            assert acknowledged >= 1
            # The last committed checkpoint is the last acknowledged one, or one more whose
            # acknowledgement the kill cut off; the attempt resumed with exactly its data.
            assert resumed["seq"] in (acknowledged, acknowledged + 1), (wid, resumed, acknowledged)
            assert resumed["count"] == resumed["seq"]
            assert ended[wid]["resumed_from_seq"] == resumed["seq"]
            assert ended[wid]["result"] == {"count": steps}
            redone.append(trace.redone_steps())
            latencies.append(resumed["t"] - killed_at)
        assert max(redone) <= 1  # one checkpoint interval (a step) per replica at most
        assert_committed_once_in_order(traces.values(), steps)
        figures(
            test="sigkill_worker",
            replicas=len(ids),
            kill_to_resume_p50_s=percentile(latencies, 50),
            kill_to_resume_p99_s=percentile(latencies, 99),
            redone_steps_total=sum(redone),
            redone_steps_max=max(redone),
            lost=sum(final[wid] != "succeeded" for wid in ids),
        )


def test_sigstopped_worker_wakes_up_fenced_and_every_write_it_tries_is_refused(
    tmp_path: Path, pg_url: str
) -> None:
    steps = 40
    timing = Timing()
    with fault_cluster(tmp_path, pg_url, timing=timing) as cluster:
        url = cluster.start_coordinator("coord-a")
        zombie = cluster.start_worker("w-zombie", slots=4, labels="role=w-zombie")
        cluster.start_worker("w-other", slots=8)
        with cluster.client() as client:
            # Blocking steps: the zombie is frozen mid-step and writes as soon as it wakes.
            ids = cluster.submit(
                client, 4, steps=steps, step_s=0.03, affinity=prefer("w-zombie"), blocking=True
            )
            wait_for(lambda: all_running_on(client, ids, "w-zombie"), 30, 0.1, "4 on w-zombie")
            fences = {wid: r["fence"] for wid, r in replicas(client, ids).items()}
            zombie.signal(signal.SIGSTOP)
            stopped_at = time.time()
            wait_for(
                lambda: all(
                    r["worker_id"] == "w-other" and r["fence"] > fences[wid]
                    for wid, r in replicas(client, ids).items()
                ),
                timeout=30,
                interval=0.1,
                what="the frozen worker's replicas run on w-other",
            )
            moved_after_s = time.time() - stopped_at
            woke_at = time.time()
            zombie.signal(signal.SIGCONT)
            final = wait_finished(client, ids, timeout=60)
            time.sleep(timing.heartbeat_s * 2)  # the woken worker's last writes have landed
            ended = replicas(client, ids)
            once = [completions(client, wid) for wid in ids]
            refused_by_coordinator = metric(url, "niyanta_fenced_writes")
        assert [final[wid] for wid in ids] == ["succeeded"] * 4
        assert once == [1] * 4
        assert [ended[wid]["result"] for wid in ids] == [{"count": steps}] * 4
        assert {ended[wid]["worker_id"] for wid in ids} == {"w-other"}
        traces = read_traces(cluster.trace_dir)
        stale = [
            write
            for trace in traces.values()
            for write in trace.of("write")
            if write["worker"] == "w-zombie" and write["at"] > woke_at
        ]
        accepted = [write for write in stale if write["ok"]]
        assert len(stale) >= 1 and accepted == []
        assert refused_by_coordinator >= 1  # refused by the store's fence, not only by itself
        assert moved_after_s > timing.lease_ttl_s * 0.5  # it waited for the lease, not less
        assert_committed_once_in_order(traces.values(), steps)
        figures(
            test="sigstop_zombie",
            moved_after_s=moved_after_s,
            stale_writes_tried=len(stale),
            stale_writes_refused=len(stale) - len(accepted),
            coordinator_fenced_writes=refused_by_coordinator,
            lost=sum(final[wid] != "succeeded" for wid in ids),
        )


@pytest.mark.nats
def test_sigterm_hands_replicas_over_without_a_lease_wait(
    tmp_path: Path, pg_url: str, nats_url: str
) -> None:
    # NATS has no connection to lose: without the drain the replicas would wait for their
    # leases (5 s) to expire.
    timing = Timing(heartbeat_s=1.0, lease_ttl_s=5.0)
    steps = 40
    with fault_cluster(tmp_path, pg_url, broker=nats_url, timing=timing) as cluster:
        cluster.start_coordinator("coord-a")
        leaving = cluster.start_worker("w-leaving", slots=10, labels="role=w-leaving")
        cluster.start_worker("w-staying", slots=10)
        with cluster.client() as client:
            ids = cluster.submit(client, 10, steps=steps, step_s=0.1, affinity=prefer("w-leaving"))
            wait_for(lambda: all_running_on(client, ids, "w-leaving"), 30, 0.1, "10 placed")
            signalled_at = time.time()
            leaving.signal(signal.SIGTERM)
            final = wait_finished(client, ids, timeout=60)
            once = [completions(client, wid) for wid in ids]
        assert leaving.popen.wait(timeout=10) == 0
        assert [final[wid] for wid in ids] == ["succeeded"] * 10
        assert once == [1] * 10
        traces = read_traces(cluster.trace_dir)
        handovers = []
        for wid in ids:
            trace = traces[f"{wid}-0"]
            resumed = trace.first_start_after(signalled_at, not_on="w-leaving")
            assert resumed is not None
            # A drain checkpoints and hands back: nothing is redone, nothing unacknowledged.
            assert resumed["seq"] == trace.last_acknowledged_seq("w-leaving")
            assert trace.redone_steps() == 0
            handovers.append(resumed["t"] - signalled_at)
        assert max(handovers) < timing.lease_ttl_s / 2
        assert_committed_once_in_order(traces.values(), steps)
        figures(
            test="sigterm_drain",
            lease_ttl_s=timing.lease_ttl_s,
            sigterm_to_resume_p50_s=percentile(handovers, 50),
            sigterm_to_resume_max_s=max(handovers),
            redone_steps_total=0,
            lost=sum(final[wid] != "succeeded" for wid in ids),
        )


def test_a_flapping_connection_never_lets_a_replica_commit_twice(
    tmp_path: Path, pg_url: str
) -> None:
    # Every cut releases the flapping worker's replicas at once (new fences) and places them
    # again, on either worker; the old holder may still be mid-write when the link is back.
    steps = 30
    with fault_cluster(tmp_path, pg_url) as cluster:
        url = cluster.start_coordinator("coord-a")
        port = int(url.rsplit(":", 1)[1])
        with FlappingProxy(port, period_s=1.5) as proxy:
            cluster.start_worker("w-flapping", slots=10, urls=[proxy.url])
            cluster.start_worker("w-steady", slots=5)
            with cluster.client() as client:
                ids = cluster.submit(client, 12, steps=steps, step_s=0.1)
                final = wait_finished(client, ids, timeout=90)
                ended = replicas(client, ids)
                once = [completions(client, wid) for wid in ids]
                refused = metric(url, "niyanta_fenced_writes")
            cuts = proxy.cuts
        assert cuts >= 2
        assert [final[wid] for wid in ids] == ["succeeded"] * 12
        assert once == [1] * 12
        assert [ended[wid]["result"] for wid in ids] == [{"count": steps}] * 12
        traces = read_traces(cluster.trace_dir)
        assert_committed_once_in_order(traces.values(), steps)
        figures(
            test="flapping_connection",
            cuts=cuts,
            attempts=sum(len(t.starts()) for t in traces.values()),
            redone_steps_total=sum(t.redone_steps() for t in traces.values()),
            coordinator_fenced_writes=refused,
            lost=sum(final[wid] != "succeeded" for wid in ids),
        )
