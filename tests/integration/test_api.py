"""The coordinator's HTTP API on a real store (SQLite; one test also on PostgreSQL): the
contract in docs/architecture.md ("HTTP API"), its status codes and its stable error codes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.coordinator_fixtures import running_coordinator


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with running_coordinator(f"sqlite:///{tmp_path / 'api.db'}") as running:
        await _seed(running.client)
        yield running.client


async def _seed(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/customers", json={"id": "acme", "tier": "gold"})
    assert response.status_code == 201, response.text
    response = await client.post(
        "/v1/workload-types",
        json={"name": "count", "retry": {"max_attempts": 2, "initial_backoff_s": 0.1}},
    )
    assert response.status_code == 201, response.text


def _error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["message"]
    code: str = body["error"]["code"]
    return code


async def _submit(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {"customer_id": "acme", "type": "count", "params": {"n": 1}, **fields}
    return await client.post("/v1/workloads", json=body)


async def test_submit_then_get_shows_the_workload_and_its_pending_replicas(
    api: httpx.AsyncClient,
) -> None:
    response = await _submit(api, replicas=2, labels={"team": "data"}, priority=3)
    assert response.status_code == 201
    created = response.json()
    assert created["state"] == "pending"
    assert created["type"] == "count" and created["type_version"] == "1"

    got = (await api.get(f"/v1/workloads/{created['id']}")).json()
    assert got["customer_id"] == "acme"
    assert got["params"] == {"n": 1}
    assert got["labels"] == {"team": "data"}
    assert got["priority"] == 3
    assert got["replica_count"] == 2
    assert [(r["index"], r["state"], r["fence"]) for r in got["replicas"]] == [
        (0, "pending", 0),
        (1, "pending", 0),
    ]


async def test_list_is_newest_first_filtered_and_paginated_by_cursor(
    api: httpx.AsyncClient,
) -> None:
    ids = [(await _submit(api, params={"i": i})).json()["id"] for i in range(5)]
    await api.post("/v1/customers", json={"id": "other", "tier": "bronze"})
    await _submit(api, customer_id="other")

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"customer": "acme", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await api.get("/v1/workloads", params=params)).json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    assert pages == 3

    pending = (await api.get("/v1/workloads", params={"state": "pending", "type": "count"})).json()
    assert len(pending["items"]) == 6


async def test_submit_is_idempotent_per_key(api: httpx.AsyncClient) -> None:
    first = await _submit(api, idempotency_key="k-1")
    again = await _submit(api, idempotency_key="k-1")
    different = await _submit(api, idempotency_key="k-1", params={"n": 2})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert different.status_code == 409
    assert _error(different) == "idempotency_conflict"

    by_header = await api.post(
        "/v1/workloads",
        json={"customer_id": "acme", "type": "count"},
        headers={"Idempotency-Key": "k-2"},
    )
    header_again = await api.post(
        "/v1/workloads",
        json={"customer_id": "acme", "type": "count", "idempotency_key": "k-2"},
    )
    assert (by_header.status_code, header_again.status_code) == (201, 200)
    assert header_again.json()["id"] == by_header.json()["id"]


async def test_batch_submit_answers_each_item_as_a_single_submit_would(
    api: httpx.AsyncClient,
) -> None:
    known = (await _submit(api, idempotency_key="k-1")).json()
    item = {"customer_id": "acme", "type": "count", "params": {"n": 1}}
    response = await api.post(
        "/v1/workloads:batch",
        json={
            "items": [
                {**item, "replicas": 2},
                {**item, "idempotency_key": "k-1"},
                {**item, "customer_id": "nobody"},
                {**item, "idempotency_key": "k-1", "params": {"n": 2}},
                {**item, "type": "nope"},
            ]
        },
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["status"] for i in items] == [201, 200, 404, 409, 404]
    assert [(i["error"] or {}).get("code") for i in items] == [
        None,
        None,
        "unknown_customer",
        "idempotency_conflict",
        "unknown_workload_type",
    ]
    assert items[1]["id"] == known["id"]
    created = (await api.get(f"/v1/workloads/{items[0]['id']}")).json()
    assert [(r["index"], r["state"]) for r in created["replicas"]] == [
        (0, "pending"),
        (1, "pending"),
    ]

    empty = await api.post("/v1/workloads:batch", json={"items": []})
    assert (empty.status_code, _error(empty)) == (422, "invalid_input")
    too_many = await api.post("/v1/workloads:batch", json={"items": [item] * 1001})
    assert (too_many.status_code, _error(too_many)) == (422, "invalid_input")


async def test_bad_input_is_a_4xx_with_a_stable_code(api: httpx.AsyncClient) -> None:
    unknown_customer = await _submit(api, customer_id="nobody")
    assert (unknown_customer.status_code, _error(unknown_customer)) == (404, "unknown_customer")

    unknown_type = await _submit(api, type="nope")
    assert (unknown_type.status_code, _error(unknown_type)) == (404, "unknown_workload_type")

    not_json = await api.post(
        "/v1/workloads", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert (not_json.status_code, _error(not_json)) == (422, "invalid_input")

    missing = await api.post("/v1/workloads", json={"type": "count"})
    assert (missing.status_code, _error(missing)) == (422, "invalid_input")
    assert "customer_id" in missing.json()["error"]["message"]

    zero_replicas = await _submit(api, replicas=0)
    assert (zero_replicas.status_code, _error(zero_replicas)) == (422, "invalid_input")

    bad_selector = await _submit(api, affinity={"required": [{"key": "gpu", "op": "~"}]})
    assert (bad_selector.status_code, _error(bad_selector)) == (422, "invalid_input")

    oversized = await _submit(api, params={"blob": "x" * (300 * 1024)})
    assert (oversized.status_code, _error(oversized)) == (413, "payload_too_large")

    unknown = await api.get("/v1/workloads/w-missing")
    assert (unknown.status_code, _error(unknown)) == (404, "unknown_workload")

    bad_state = await api.get("/v1/workloads", params={"state": "sleeping"})
    assert (bad_state.status_code, _error(bad_state)) == (422, "invalid_input")

    bad_cursor = await api.get("/v1/workloads", params={"cursor": "abc"})
    assert (bad_cursor.status_code, _error(bad_cursor)) == (422, "invalid_input")

    bad_entrypoint = await api.post(
        "/v1/workload-types", json={"name": "x", "entrypoint": "no colon"}
    )
    assert (bad_entrypoint.status_code, _error(bad_entrypoint)) == (422, "invalid_input")

    no_route = await api.get("/v1/nothing-here")
    assert (no_route.status_code, _error(no_route)) == (404, "not_found")


async def test_pause_resume_cancel_a_queued_workload(api: httpx.AsyncClient) -> None:
    workload_id = (await _submit(api)).json()["id"]

    paused = await api.post(f"/v1/workloads/{workload_id}/pause")
    assert paused.status_code == 200
    assert paused.json()["state"] == "paused"

    resumed = await api.post(f"/v1/workloads/{workload_id}/resume")
    assert resumed.json()["state"] == "pending"

    cancelled = await api.post(f"/v1/workloads/{workload_id}/cancel")
    assert cancelled.json()["state"] == "cancelled"
    assert cancelled.json()["replicas"][0]["state"] == "cancelled"

    again = await api.post(f"/v1/workloads/{workload_id}/cancel")
    assert (again.status_code, _error(again)) == (409, "illegal_transition")

    kinds = [
        e["kind"] for e in (await api.get(f"/v1/workloads/{workload_id}/events")).json()["items"]
    ]
    assert kinds[0] == "workload.submitted"
    assert "replica.paused" in kinds and "replica.cancelled" in kinds

    no_checkpoint = await api.get(f"/v1/workloads/{workload_id}/checkpoint")
    assert (no_checkpoint.status_code, _error(no_checkpoint)) == (404, "not_found")


async def test_customers_types_tiers_and_autoscale_round_trip(api: httpx.AsyncClient) -> None:
    duplicate = await api.post("/v1/customers", json={"id": "acme", "tier": "gold"})
    assert (duplicate.status_code, _error(duplicate)) == (409, "already_exists")
    bad_tier = await api.post("/v1/customers", json={"id": "zed", "tier": "diamond"})
    assert (bad_tier.status_code, _error(bad_tier)) == (404, "unknown_tier")

    patched = await api.patch("/v1/customers/acme", json={"tier": "platinum", "weight": 3})
    assert (patched.json()["tier"], patched.json()["weight"]) == ("platinum", 3)
    assert (await api.get("/v1/customers/acme")).json()["tier"] == "platinum"
    assert [c["id"] for c in (await api.get("/v1/customers")).json()["items"]] == ["acme"]

    types = (await api.get("/v1/workload-types")).json()["items"]
    assert [(t["name"], t["retry"]["max_attempts"]) for t in types] == [("count", 2)]
    same = await api.post(
        "/v1/workload-types",
        json={"name": "count", "retry": {"max_attempts": 2, "initial_backoff_s": 0.1}},
    )
    assert same.status_code == 200

    tiers = {t["name"] for t in (await api.get("/v1/tiers")).json()["items"]}
    assert {"platinum", "gold", "silver", "bronze"} <= tiers
    put = await api.put("/v1/tiers/gold", json={"priority": 350, "weight": 5})
    assert put.json()["priority"] == 350

    policy = {"min_replicas": 1, "max_replicas": 4, "metric": "backlog", "target": 10}
    assert (await api.put("/v1/autoscale/acme/count", json=policy)).status_code == 200
    assert (await api.get("/v1/autoscale/acme/count")).json()["max_replicas"] == 4
    assert len((await api.get("/v1/autoscale")).json()["items"]) == 1
    assert (await api.delete("/v1/autoscale/acme/count")).status_code == 204
    gone = await api.get("/v1/autoscale/acme/count")
    assert gone.status_code == 404


async def test_probes_openapi_and_cluster(api: httpx.AsyncClient) -> None:
    assert (await api.get("/health")).json()["status"] == "ok"
    ready = await api.get("/ready")
    assert ready.status_code == 200 and ready.json()["leader"] is True
    schema = (await api.get("/openapi.json")).json()
    for path in ("/v1/workloads", "/v1/workloads/{workload_id}/cancel", "/v1/workers"):
        assert path in schema["paths"]
    cluster = (await api.get("/v1/cluster")).json()
    assert cluster["leader"]["id"] == "coordinator-test"
    assert cluster["term"] >= 1
    assert [c["id"] for c in cluster["coordinators"]] == ["coordinator-test"]
    assert (await api.get("/v1/workers")).json() == {"items": []}
    drain = await api.post("/v1/workers/nobody/drain")
    assert (drain.status_code, _error(drain)) == (404, "unknown_worker")
    assert b"niyanta_workloads_submitted" in (await api.get("/metrics")).content


@pytest.mark.postgres
async def test_submit_and_list_on_postgresql(pg_url: str) -> None:
    async with running_coordinator(pg_url) as running:
        client = running.client
        await _seed(client)
        created = await _submit(client, idempotency_key="pg")
        again = await _submit(client, idempotency_key="pg")
        assert (created.status_code, again.status_code) == (201, 200)
        page = (await client.get("/v1/workloads", params={"customer": "acme"})).json()
        assert [item["id"] for item in page["items"]] == [created.json()["id"]]
        assert (await client.get("/ready")).status_code == 200


async def test_autoscale_policies_refuse_bad_input_with_4xx_codes(api: httpx.AsyncClient) -> None:
    good = {"min_replicas": 1, "max_replicas": 4, "metric": "backlog", "target": 10}
    cases = [
        ("acme", "count", {**good, "min_replicas": 5}, 422, "invalid_input"),
        ("acme", "count", {**good, "target": 0}, 422, "invalid_input"),
        ("acme", "count", {**good, "max_step": 0}, 422, "invalid_input"),
        ("acme", "count", {**good, "metric": ""}, 422, "invalid_input"),
        ("acme", "count", {**good, "surprise": 1}, 422, "invalid_input"),
        ("nobody", "count", good, 404, "unknown_customer"),
        ("acme", "no-such-type", good, 404, "unknown_workload_type"),
    ]
    for customer, type_name, body, status, code in cases:
        response = await api.put(f"/v1/autoscale/{customer}/{type_name}", json=body)
        assert (response.status_code, _error(response)) == (status, code), body
    assert (await api.get("/v1/autoscale")).json()["items"] == []
    missing = await api.delete("/v1/autoscale/acme/count")
    assert (missing.status_code, _error(missing)) == (404, "not_found")
