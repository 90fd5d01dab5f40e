"""Two coordinators on one store: one leads (scheduling, workers), the other serves the API and
takes over when the leader's lease lapses, extending the replicas' leases as it does."""

from __future__ import annotations

import time
from pathlib import Path

from tests.conftest import free_port
from tests.integration.coordinator_fixtures import FakeWorker, eventually, running_coordinator

from niyanta.broker.messages import Started, StartReplica

LEADER_TTL_S = 0.6
LEASE_TTL_S = 3.0


async def _no_resign() -> None:
    """Stands in for a leader that dies without handing its lease back."""


async def test_a_follower_takes_over_when_the_leader_dies(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    timing = {"leader_ttl_s": LEADER_TTL_S, "lease_ttl_s": LEASE_TTL_S}
    leader_context = running_coordinator(url, coordinator_id="first", **timing)
    first = await leader_context.__aenter__()
    first_running = True
    try:
        async with running_coordinator(url, coordinator_id="second", **timing) as second:
            assert (await first.client.get("/health")).json()["leader"] is True
            assert (await second.client.get("/health")).json()["leader"] is False
            assert (await second.client.get("/ready")).status_code == 200  # followers are ready
            seen_by_follower = (await second.client.get("/v1/cluster")).json()
            assert seen_by_follower["leader"]["id"] == "first"
            assert {c["id"] for c in seen_by_follower["coordinators"]} == {"first", "second"}

            # The follower serves the API: a submit through it is scheduled by the leader.
            await second.client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
            worker = FakeWorker(first, "w1", ["job"])
            await worker.link.connect()
            submitted = await second.client.post(
                "/v1/workloads", json={"customer_id": "acme", "type": "job"}
            )
            workload_id = submitted.json()["id"]
            start = await worker.next(StartReplica)
            await worker.link.send(Started(workload_id=workload_id, index=0, fence=start.fence))

            first.runtime.leader.resign = _no_resign  # type: ignore[method-assign]
            died_at = time.monotonic()
            await leader_context.__aexit__(None, None, None)
            first_running = False
            await worker.link.close()

            async def second_leads() -> bool:
                return bool((await second.client.get("/health")).json()["leader"])

            await eventually(second_leads, within=LEADER_TTL_S + 2, what="the follower leads")
            assert time.monotonic() - died_at <= LEADER_TTL_S + 1.0
            cluster = (await second.client.get("/v1/cluster")).json()
            assert (cluster["leader"]["id"], cluster["term"]) == ("second", 2)

            # Leases were pushed out on takeover: the replica is still the worker's.
            body = (await second.client.get(f"/v1/workloads/{workload_id}")).json()
            replica = body["replicas"][0]
            assert (replica["state"], replica["fence"]) == ("running", start.fence)
            assert replica["lease_expires_at"] >= time.time() + LEASE_TTL_S - 1.0
    finally:
        if first_running:
            await leader_context.__aexit__(None, None, None)


async def test_a_follower_without_a_reachable_leader_answers_not_leader_or_cancels_itself(
    tmp_path: Path,
) -> None:
    """What needs the leader's worker connections is forwarded to it (``tests/e2e/
    test_follower_commands.py``); here the leader's published URL answers nobody. Listing
    workers, draining and pausing answer ``not_leader``; a request already forwarded once is
    never forwarded again; a cancel is applied in the store by the follower itself."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    unreachable = f"http://127.0.0.1:{free_port()}"
    async with (
        running_coordinator(url, coordinator_id="first", advertise_url=unreachable) as first,
        running_coordinator(url, coordinator_id="second") as second,
    ):
        assert first.runtime.leader.is_leader and not second.runtime.leader.is_leader
        await second.client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
        await second.client.post("/v1/workload-types", json={"name": "job"})
        submitted = await second.client.post(
            "/v1/workloads", json={"customer_id": "acme", "type": "job"}
        )
        workload_id = submitted.json()["id"]
        for method, path in [
            ("GET", "/v1/workers"),
            ("POST", "/v1/workers/w1/drain"),
            ("POST", f"/v1/workloads/{workload_id}/pause"),
        ]:
            answer = await second.client.request(method, path)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"]["code"] == "not_leader"
        forwarded = await second.client.get(
            "/v1/workers", headers={"x-niyanta-forwarded-by": "first"}
        )
        assert forwarded.json()["error"]["code"] == "not_leader"
        cancelled = await second.client.post(f"/v1/workloads/{workload_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
