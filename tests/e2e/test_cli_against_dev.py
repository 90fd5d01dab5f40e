"""The CLI and its HTTP client against a real ``niyanta dev`` process (coordinator and two
in-process workers on SQLite and the memory broker), through the real HTTP API."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.processes import process_group, wait_for, wait_until_ready
from typer.testing import CliRunner, Result

from niyanta.cli.main import app
from niyanta.client import CoordinatorUnreachable, NiyantaClient
from niyanta.errors import AlreadyExists, IdempotencyConflict, UnknownCustomer, UnknownWorkload

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def dev_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir: Path = tmp_path_factory.mktemp("dev")
    url = f"http://127.0.0.1:{_free_port()}"
    with process_group(workdir) as group:
        group.start(
            "dev",
            ["dev", "--workers", "2", "--slots", "2", "--import", "examples.demo_jobs",
             "--listen", url.removeprefix("http://")],
        )  # fmt: skip
        wait_until_ready(url)
        with NiyantaClient(url) as client:
            wait_for(lambda: len(client.list_workers()) == 2, timeout=10, what="2 workers")
        yield url


def niyanta(url: str, *args: str) -> Result:
    return CliRunner().invoke(app, ["--coordinator", url, *args])


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def wait_state(url: str, workload_id: str, states: set[str], timeout: float = 15) -> Any:
    with NiyantaClient(url) as client:
        wait_for(
            lambda: client.get_workload(workload_id)["state"] in states,
            timeout=timeout,
            what=f"{workload_id} in {states}",
        )
        return client.get_workload(workload_id)


def submit(url: str, customer: str, *args: str) -> str:
    result = niyanta(url, "submit", "demo-counter", "--customer", customer, *args)
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def test_workers_and_types_as_json(dev_url: str) -> None:
    workers = as_json(niyanta(dev_url, "workers", "--output", "json"))
    assert sorted(w["id"] for w in workers) == ["dev-worker-1", "dev-worker-2"]
    assert all(w["capacity"]["slots"] == 2 for w in workers)
    types = as_json(niyanta(dev_url, "types", "-o", "json"))
    assert {"demo-counter", "demo-flaky", "demo-permanent"} <= {t["name"] for t in types}
    table = niyanta(dev_url, "workers")
    assert table.exit_code == 0 and "dev-worker-1" in table.stdout


def test_cluster_names_the_leader_and_its_term(dev_url: str) -> None:
    view = as_json(niyanta(dev_url, "cluster", "--output", "json"))
    leader = view["leader"]
    assert leader is not None and leader["term"] >= 1
    assert [c["id"] for c in view["coordinators"] if c["leader"]] == [leader["id"]]
    table = niyanta(dev_url, "cluster")
    assert table.exit_code == 0
    assert f"leader {leader['id']} (term {leader['term']})" in table.stdout


def test_customers(dev_url: str) -> None:
    created = as_json(
        niyanta(dev_url, "customers", "create", "cust-a", "--tier", "gold", "-o", "json")
    )
    assert (created["id"], created["tier"]) == ("cust-a", "gold")
    again = niyanta(dev_url, "customers", "create", "cust-a", "--tier", "gold")
    assert again.exit_code == 1
    assert "already_exists" in again.output
    moved = as_json(niyanta(dev_url, "customers", "set-tier", "cust-a", "platinum", "-o", "json"))
    assert moved["tier"] == "platinum"
    assert (
        as_json(niyanta(dev_url, "customers", "get", "cust-a", "-o", "json"))["tier"] == "platinum"
    )
    listed = as_json(niyanta(dev_url, "customers", "list", "-o", "json"))
    assert "cust-a" in {c["id"] for c in listed}
    unknown_tier = niyanta(dev_url, "customers", "create", "cust-b", "--tier", "diamond")
    assert unknown_tier.exit_code == 1 and "unknown_tier" in unknown_tier.output


def test_submit_status_list_events(dev_url: str) -> None:
    niyanta(dev_url, "customers", "create", "cust-run", "--tier", "silver")
    workload_id = submit(
        dev_url, "cust-run", "--params", '{"steps": 5, "step_s": 0.02}', "--label", "app=x"
    )
    done = wait_state(dev_url, workload_id, {"succeeded"})
    assert done["labels"] == {"app": "x"}
    assert done["replicas"][0]["checkpoint_seq"] == 5
    assert done["replicas"][0]["result"]["count"] == 5

    status = as_json(niyanta(dev_url, "status", workload_id, "-o", "json"))
    assert status["state"] == "succeeded"
    table = niyanta(dev_url, "status", workload_id)
    assert table.exit_code == 0 and "succeeded" in table.stdout and "100%" in table.stdout

    listed = as_json(niyanta(dev_url, "list", "--customer", "cust-run", "--output", "json"))
    assert [w["id"] for w in listed] == [workload_id]
    assert (
        as_json(
            niyanta(dev_url, "list", "--customer", "cust-run", "--state", "failed", "-o", "json")
        )
        == []
    )

    kinds = [e["kind"] for e in as_json(niyanta(dev_url, "events", workload_id, "-o", "json"))]
    assert kinds[0] == "workload.submitted"
    assert "replica.running" in kinds and kinds[-1] == "replica.succeeded"


def test_status_watch_waits_for_the_end(dev_url: str) -> None:
    niyanta(dev_url, "customers", "create", "cust-watch", "--tier", "gold")
    workload_id = submit(dev_url, "cust-watch", "--params", '{"steps": 10, "step_s": 0.05}')
    watched = niyanta(dev_url, "status", workload_id, "--watch", "-o", "json")
    final = as_json(watched)
    assert final["state"] == "succeeded"
    assert final["replicas"][0]["checkpoint_seq"] == 10
    table = niyanta(dev_url, "status", workload_id, "--watch")
    assert table.exit_code == 0 and "succeeded" in table.stdout


def test_idempotency_key(dev_url: str) -> None:
    niyanta(dev_url, "customers", "create", "cust-idem", "--tier", "bronze")
    args = ["--params", '{"steps": 1, "step_s": 0.01}', "--idempotency-key", "order-42"]
    first = niyanta(dev_url, "submit", "demo-counter", "-c", "cust-idem", *args)
    second = niyanta(dev_url, "submit", "demo-counter", "-c", "cust-idem", *args)
    assert first.exit_code == second.exit_code == 0
    assert first.stdout == second.stdout
    assert "existing workload" in second.stderr
    changed = niyanta(
        dev_url, "submit", "demo-counter", "-c", "cust-idem",
        "--params", '{"steps": 2}', "--idempotency-key", "order-42",
    )  # fmt: skip
    assert changed.exit_code == 1 and "idempotency_conflict" in changed.output


def test_cancel_pause_resume(dev_url: str) -> None:
    niyanta(dev_url, "customers", "create", "cust-ctl", "--tier", "gold")
    slow = '{"steps": 400, "step_s": 0.05}'
    to_cancel = submit(dev_url, "cust-ctl", "--params", slow)
    wait_state(dev_url, to_cancel, {"running"})
    cancelled = niyanta(dev_url, "cancel", to_cancel)
    assert cancelled.exit_code == 0, cancelled.output
    assert wait_state(dev_url, to_cancel, {"cancelled"}, timeout=5)["state"] == "cancelled"

    to_pause = submit(dev_url, "cust-ctl", "--params", '{"steps": 40, "step_s": 0.03}')
    with NiyantaClient(dev_url) as client:
        wait_for(
            lambda: client.get_workload(to_pause)["replicas"][0]["checkpoint_seq"] >= 3,
            timeout=10,
            what="three checkpoints",
        )
    assert niyanta(dev_url, "pause", to_pause).exit_code == 0
    paused = wait_state(dev_url, to_pause, {"paused"}, timeout=5)
    seq_at_pause = paused["replicas"][0]["checkpoint_seq"]
    time.sleep(0.3)
    assert as_json(niyanta(dev_url, "status", to_pause, "-o", "json"))["state"] == "paused"
    assert niyanta(dev_url, "resume", to_pause).exit_code == 0
    done = wait_state(dev_url, to_pause, {"succeeded"}, timeout=20)
    assert done["replicas"][0]["resumed_from_seq"] == seq_at_pause > 0
    assert done["replicas"][0]["result"] == {"count": 40, "resumed_from": seq_at_pause}


def test_affinity_reaches_the_scheduler(dev_url: str) -> None:
    niyanta(dev_url, "customers", "create", "cust-aff", "--tier", "gold")
    workload_id = submit(
        dev_url, "cust-aff", "--affinity", "gpu=true,zone in (a,b)", "--anti-affinity", "app=db"
    )
    status = as_json(niyanta(dev_url, "status", workload_id, "-o", "json"))
    assert status["affinity"]["required"] == [
        {"key": "gpu", "op": "=", "values": ["true"]},
        {"key": "zone", "op": "In", "values": ["a", "b"]},
    ]
    assert status["affinity"]["anti"] == [{"key": "app", "op": "=", "values": ["db"]}]
    time.sleep(1.0)  # several scheduling rounds: no dev worker has gpu=true
    pending = as_json(niyanta(dev_url, "status", workload_id, "-o", "json"))
    assert pending["state"] == "pending"
    reason = pending["replicas"][0]["pending_reason"]
    assert reason.startswith("no worker") and "gpu" in reason
    assert f"replica 0 waits: {reason}" in niyanta(dev_url, "status", workload_id).stdout
    assert niyanta(dev_url, "cancel", workload_id).exit_code == 0


def test_batch_submit_through_the_client_runs_each_item(dev_url: str) -> None:
    with NiyantaClient(dev_url) as client:
        client.create_customer("cust-batch", "gold")
        item = {"customer_id": "cust-batch", "type": "demo-noop"}
        items = client.submit_batch([item, {**item, "type": "nope"}, item])
        assert [i["status"] for i in items] == [201, 404, 201]
        assert items[1]["error"]["code"] == "unknown_workload_type"
        for created in (items[0], items[2]):
            assert wait_state(dev_url, created["id"], {"succeeded"})["state"] == "succeeded"


def test_api_errors_come_back_typed(dev_url: str) -> None:
    with NiyantaClient(dev_url) as client:
        with pytest.raises(UnknownWorkload):
            client.get_workload("w-does-not-exist")
        with pytest.raises(UnknownCustomer):
            client.submit("nobody", "demo-counter")
        client.create_customer("cust-err", "bronze")
        with pytest.raises(AlreadyExists) as caught:
            client.create_customer("cust-err", "bronze")
        assert caught.value.http_status == 409
        client.submit("cust-err", "demo-counter", {"steps": 1}, idempotency_key="k")
        with pytest.raises(IdempotencyConflict):
            client.submit("cust-err", "demo-counter", {"steps": 2}, idempotency_key="k")
    result = niyanta(dev_url, "status", "w-does-not-exist")
    assert result.exit_code == 1
    assert "unknown_workload" in result.output


def test_a_dead_coordinator_in_the_list_is_skipped(dev_url: str) -> None:
    dead = f"http://127.0.0.1:{_free_port()}"
    with NiyantaClient(f"{dead},{dev_url}") as client:
        assert len(client.list_workers()) == 2
        assert client.url == dev_url
    with NiyantaClient(dead) as client, pytest.raises(CoordinatorUnreachable, match=dead):
        client.list_workers()
    listed = niyanta(f"{dead},{dev_url}", "workers", "-o", "json")
    assert len(as_json(listed)) == 2


def test_drain_moves_a_worker_out(dev_url: str) -> None:
    # Last in this module: it takes dev-worker-2 away.
    result = niyanta(dev_url, "drain", "dev-worker-2")
    assert result.exit_code == 0, result.output
    with NiyantaClient(dev_url) as client:
        wait_for(
            lambda: all(
                w["id"] != "dev-worker-2" or w["state"] == "draining" for w in client.list_workers()
            ),
            timeout=5,
            what="dev-worker-2 draining or gone",
        )


def test_the_client_covers_the_rest_of_the_api(dev_url: str) -> None:
    with NiyantaClient(dev_url) as client:
        assert client.ready()
        assert client.health()
        assert client.cluster()["leader"] is not None

        tier = client.put_tier("test-tier", {"priority": 250, "weight": 3.0})
        assert (tier["name"], tier["priority"]) == ("test-tier", 250)
        assert "test-tier" in {t["name"] for t in client.list_tiers()}
        client.create_customer("cust-api", "test-tier")

        registered = client.register_type(
            "runtime-counter", entrypoint="examples.demo_jobs:counter", retry={"max_attempts": 2}
        )
        assert registered["retry"]["max_attempts"] == 2
        submitted = client.submit("cust-api", "runtime-counter", {"steps": 3, "step_s": 0.01})
        assert submitted.created
        done = wait_state(dev_url, submitted.workload["id"], {"succeeded"})
        checkpoint = client.latest_checkpoint(done["id"])
        assert (checkpoint["seq"], checkpoint["data"]) == (3, {"count": 3})
        events = client.workload_events(done["id"])
        later = client.workload_events(done["id"], after=events[0]["id"], limit=1)
        assert later == events[1:2]

        policy = {"min_replicas": 1, "max_replicas": 4, "metric": "backlog", "target": 10.0}
        client.put_autoscale_policy("cust-api", "runtime-counter", policy)
        got = client.get_autoscale_policy("cust-api", "runtime-counter")
        assert (got["max_replicas"], got["metric"]) == (4, "backlog")
        assert len(client.list_autoscale_policies()) == 1
        client.delete_autoscale_policy("cust-api", "runtime-counter")
        assert client.list_autoscale_policies() == []


def test_list_limits_and_pages(dev_url: str) -> None:
    niyanta(dev_url, "customers", "create", "cust-page", "--tier", "bronze")
    ids = [
        submit(dev_url, "cust-page", "--params", '{"steps": 1, "step_s": 0.01}') for _ in range(3)
    ]
    newest_first = ids[::-1]
    limited = niyanta(dev_url, "list", "--customer", "cust-page", "--limit", "2", "-o", "json")
    assert [w["id"] for w in as_json(limited)] == newest_first[:2]
    assert "(more" in niyanta(dev_url, "list", "--customer", "cust-page", "--limit", "2").stderr
    assert "(more" not in niyanta(dev_url, "list", "--customer", "cust-page", "--limit", "3").stderr
    with NiyantaClient(dev_url) as client:
        paged = [w["id"] for w in client.iter_workloads(customer="cust-page", page_size=1)]
    assert paged == newest_first


def test_autoscale_set_get_list_delete(dev_url: str) -> None:
    assert niyanta(dev_url, "customers", "create", "cust-scale", "--tier", "gold").exit_code == 0
    policy = as_json(
        niyanta(
            dev_url, "autoscale", "set", "cust-scale", "demo-counter",
            "--min", "1", "--max", "20", "--metric", "backlog", "--target", "100",
            "--cooldown", "30s", "-o", "json",
        )
    )  # fmt: skip
    assert policy == {
        "customer_id": "cust-scale",
        "type_name": "demo-counter",
        "min_replicas": 1,
        "max_replicas": 20,
        "metric": "backlog",
        "target": 100.0,
        "cooldown_s": 30.0,
        "max_step": 4,
    }
    again = niyanta(dev_url, "autoscale", "set", "cust-scale", "demo-counter", "--cooldown", "2m")
    assert again.exit_code == 0 and "120s" in again.stdout
    got = as_json(niyanta(dev_url, "autoscale", "get", "cust-scale", "demo-counter", "-o", "json"))
    assert (got["cooldown_s"], got["max_replicas"]) == (120.0, 10)
    listed = as_json(niyanta(dev_url, "autoscale", "list", "--output", "json"))
    assert [(p["customer_id"], p["type_name"]) for p in listed] == [("cust-scale", "demo-counter")]

    inverted = niyanta(dev_url, "autoscale", "set", "cust-scale", "demo-counter", "--min", "5",
                       "--max", "2")  # fmt: skip
    assert inverted.exit_code != 0 and "min_replicas" in inverted.output
    unknown_type = niyanta(dev_url, "autoscale", "set", "cust-scale", "no-such-type")
    assert unknown_type.exit_code != 0 and "no-such-type" in unknown_type.output
    bad_cooldown = niyanta(dev_url, "autoscale", "set", "cust-scale", "demo-counter",
                           "--cooldown", "soon")  # fmt: skip
    assert bad_cooldown.exit_code != 0

    assert niyanta(dev_url, "autoscale", "delete", "cust-scale", "demo-counter").exit_code == 0
    assert as_json(niyanta(dev_url, "autoscale", "list", "-o", "json")) == []
    gone = niyanta(dev_url, "autoscale", "get", "cust-scale", "demo-counter")
    assert gone.exit_code != 0 and "no autoscaling policy" in gone.output
