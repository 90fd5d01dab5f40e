"""Recovery from faults, with real processes and the default timings (heartbeat 1 s, lease TTL
5 s, leader TTL 2.5 s), using the fault tests' harness (``tests/faults/``):

- SIGKILL a worker running 20 checkpointing replicas (SQLite + built-in WebSocket), several
  times: each replica's time from the kill to its attempt starting on another worker from its
  last committed checkpoint (``ws_resume_p50_s``/``_p99_s`` over every replica of every kill);
- the same over NATS, where no connection breaks and recovery waits for lease expiry
  (``nats_resume_p99_s``);
- SIGSTOP a worker running blocking steps past its lease TTL, then SIGCONT: the stale writes it
  tries on waking and how many were refused (``stale_writes_refused``, as a fraction), and each
  replica's time from the freeze to its start elsewhere. That last figure is the **baseline**:
  the lease-expiry path on the same WebSocket transport, measured in the same run
  (``baseline_ws_lease_expiry_p50_s``/``_p99_s``): what recovery costs without the at-once
  release on connection loss;
- SIGKILL the leader of three coordinators on one PostgreSQL (its own instance, initdb + pg_ctl
  in a temporary directory): the time until a follower leads (``failover_s``), and whether the
  workers' replicas kept running through it (``failover_restarted_replicas``);
- ``lost``: workloads not succeeded, over every scenario (must be 0).

Run: .venv/bin/python bench/recovery.py [--quick]  (last line: one JSON object)
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the fault tests' harness

from tests.faults.cluster import (
    FaultCluster,
    Timing,
    all_running_on,
    fault_cluster,
    leader,
    metric,
    prefer,
    replicas,
    wait_finished,
)
from tests.faults.servers import own_nats, own_postgres
from tests.faults.traces import percentile, read_traces
from tests.processes import wait_for

DEFAULTS = Timing(heartbeat_s=1.0, lease_ttl_s=5.0, leader_ttl_s=2.5)
REPLICAS = 20


@contextmanager
def cluster_in_tempdir(store: str | None, broker: str = "builtin") -> Iterator[FaultCluster]:
    with tempfile.TemporaryDirectory(prefix="niyanta-recovery-") as tmp:
        url = store or f"sqlite:///{tmp}/recovery.db"
        with fault_cluster(Path(tmp), url, broker, DEFAULTS) as cluster:
            yield cluster


def kill_rounds(cluster: FaultCluster, rounds: int, steps: int) -> tuple[list[float], int, int]:
    """SIGKILL a worker holding 20 replicas, ``rounds`` times. Each round's replicas prefer
    the victim, and the idle survivor becomes the next round's victim. Returns the
    kill-to-resume times, redone steps and workloads lost."""
    cluster.start_coordinator("coord-a")
    latencies: list[float] = []
    lost = 0
    victim = cluster.start_worker("w-0", slots=REPLICAS, labels="role=w-0")
    with cluster.client() as client:
        for n in range(rounds):
            name, next_name = f"w-{n}", f"w-{n + 1}"
            survivor = cluster.start_worker(next_name, slots=REPLICAS, labels=f"role={next_name}")
            ids = cluster.submit(client, REPLICAS, steps=steps, step_s=0.1, affinity=prefer(name))
            wait_for(partial(all_running_on, client, ids, name), 60, 0.1, f"20 on {name}")
            killed_at = time.time()
            victim.signal(signal.SIGKILL)
            final = wait_finished(client, ids, timeout=120)
            lost += sum(final[wid] != "succeeded" for wid in ids)
            traces = read_traces(cluster.trace_dir)
            for wid in ids:
                resumed = traces[f"{wid}-0"].first_start_after(killed_at, not_on=name)
                assert resumed is not None, wid
                latencies.append(resumed["t"] - killed_at)
            victim = survivor
    redone = sum(t.redone_steps() for t in read_traces(cluster.trace_dir).values())
    return latencies, redone, lost


def zombie(cluster: FaultCluster) -> dict[str, Any]:
    url = cluster.start_coordinator("coord-a")
    frozen = cluster.start_worker("w-zombie", slots=4, labels="role=w-zombie")
    cluster.start_worker("w-other", slots=4)
    with cluster.client() as client:
        ids = cluster.submit(
            client, 4, steps=60, step_s=0.03, affinity=prefer("w-zombie"), blocking=True
        )
        wait_for(lambda: all_running_on(client, ids, "w-zombie"), 60, 0.1, "4 on w-zombie")
        fences = {wid: r["fence"] for wid, r in replicas(client, ids).items()}
        frozen_at = time.time()
        frozen.signal(signal.SIGSTOP)

        def moved() -> bool:
            return all(
                r["worker_id"] == "w-other" and r["fence"] > fences[wid]
                for wid, r in replicas(client, ids).items()
            )

        wait_for(moved, 60, 0.1, "the frozen worker's replicas run elsewhere")
        woke_at = time.time()
        frozen.signal(signal.SIGCONT)
        final = wait_finished(client, ids, timeout=120)
        time.sleep(DEFAULTS.heartbeat_s * 2)
        refused_by_coordinator = metric(url, "niyanta_fenced_writes")
    traces = read_traces(cluster.trace_dir)
    stale = [
        w
        for t in traces.values()
        for w in t.of("write")
        if w["worker"] == "w-zombie" and w["at"] > woke_at
    ]
    moved_after = []
    for wid in ids:
        resumed = traces[f"{wid}-0"].first_start_after(frozen_at, not_on="w-zombie")
        assert resumed is not None, wid
        moved_after.append(resumed["t"] - frozen_at)
    return {
        "stale_writes_tried": len(stale),
        "stale_writes_accepted": sum(w["ok"] for w in stale),
        "coordinator_fenced_writes": refused_by_coordinator,
        "moved_after": moved_after,
        "lost": sum(final[wid] != "succeeded" for wid in ids),
    }


def failover(store: str) -> dict[str, Any]:
    with cluster_in_tempdir(store) as cluster:
        for name in ("coord-a", "coord-b", "coord-c"):
            cluster.start_coordinator(name)
        cluster.start_worker("w-1", slots=REPLICAS)
        with cluster.client() as client:
            old, term = leader(client)
            ids = cluster.submit(client, REPLICAS, steps=40, step_s=0.1)
            wait_for(lambda: all_running_on(client, ids, "w-1"), 60, 0.1, "20 running")
            killed_at = time.monotonic()
            cluster.group.procs[str(old)].signal(signal.SIGKILL)

            def new_leader() -> bool:
                try:
                    found, now_term = leader(client)
                except Exception:
                    return False
                return found not in (None, old) and now_term > term

            wait_for(new_leader, 60, 0.02, "a new leader")
            failover_s = time.monotonic() - killed_at
            final = wait_finished(client, ids, timeout=120)
        traces = read_traces(cluster.trace_dir)
        return {
            "failover_s": failover_s,
            "restarted": sum(len(t.starts()) > 1 for t in traces.values()),
            "lost": sum(final[wid] != "succeeded" for wid in ids),
        }


def timed(what: str, run: Callable[[], Any]) -> Any:
    started = time.monotonic()
    print(f"== {what}", flush=True)
    result = run()
    print(f"   done in {time.monotonic() - started:.1f} s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer kills (about 1 minute)")
    quick = parser.parse_args().quick
    ws_rounds, nats_rounds = (2, 1) if quick else (5, 2)

    def ws_kills() -> tuple[list[float], int, int]:
        with cluster_in_tempdir(None) as cluster:
            return kill_rounds(cluster, ws_rounds, steps=30)

    def nats_kills() -> tuple[list[float], int, int]:
        with own_nats() as nats, cluster_in_tempdir(None, nats.url) as cluster:
            return kill_rounds(cluster, nats_rounds, steps=30)

    def zombie_run() -> dict[str, Any]:
        with cluster_in_tempdir(None) as cluster:
            return zombie(cluster)

    def failover_run() -> dict[str, Any]:
        with own_postgres() as postgres:
            return failover(postgres.url)

    ws, ws_redone, ws_lost = timed(f"SIGKILL x{ws_rounds}, SQLite + WebSocket", ws_kills)
    print(f"   {len(ws)} resumes: p50 {percentile(ws, 50):.3f} s, p99 {percentile(ws, 99):.3f} s,"
          f" max {max(ws):.3f} s; redone steps {ws_redone}")  # fmt: skip
    nats, nats_redone, nats_lost = timed(f"SIGKILL x{nats_rounds}, SQLite + NATS", nats_kills)
    print(f"   {len(nats)} resumes: p50 {percentile(nats, 50):.3f} s,"
          f" p99 {percentile(nats, 99):.3f} s; redone steps {nats_redone}")  # fmt: skip
    frozen = timed("SIGSTOP past the lease, then SIGCONT (SQLite + WebSocket)", zombie_run)
    tried = frozen["stale_writes_tried"]
    refused = tried - frozen["stale_writes_accepted"]
    moved = frozen["moved_after"]
    print(f"   stale writes tried {tried}, refused {refused} (coordinator counted"
          f" {frozen['coordinator_fenced_writes']:.0f}); lease-expiry resume p50"
          f" {percentile(moved, 50):.3f} s")  # fmt: skip
    leader_change = timed("SIGKILL the leader of 3 coordinators (PostgreSQL)", failover_run)
    print(f"   new leader after {leader_change['failover_s']:.3f} s;"
          f" replicas restarted {leader_change['restarted']}")  # fmt: skip
    figures = {
        "ws_resume_p50_s": round(percentile(ws, 50), 3),
        "ws_resume_p99_s": round(percentile(ws, 99), 3),
        "ws_resume_max_s": round(max(ws), 3),
        "ws_resume_samples": len(ws),
        "ws_redone_steps": ws_redone,
        "nats_resume_p50_s": round(percentile(nats, 50), 3),
        "nats_resume_p99_s": round(percentile(nats, 99), 3),
        "nats_resume_samples": len(nats),
        "stale_writes_tried": tried,
        "stale_writes_refused": round(refused / tried, 3) if tried else None,
        "coordinator_fenced_writes": frozen["coordinator_fenced_writes"],
        "failover_s": round(leader_change["failover_s"], 3),
        "failover_restarted_replicas": leader_change["restarted"],
        "lost": ws_lost + nats_lost + frozen["lost"] + leader_change["lost"],
        "baseline": "lease expiry on the same WebSocket transport (SIGSTOP: connection open)",
        "baseline_ws_lease_expiry_p50_s": round(percentile(moved, 50), 3),
        "baseline_ws_lease_expiry_p99_s": round(percentile(moved, 99), 3),
        "heartbeat_s": DEFAULTS.heartbeat_s,
        "lease_ttl_s": DEFAULTS.lease_ttl_s,
        "leader_ttl_s": DEFAULTS.leader_ttl_s,
        "quick": quick,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
