"""``niyanta demo`` (``make demo``): an all-in-one Niyanta running the example workloads of three
customers on three tiers; one worker is SIGKILLed mid-run and its workload resumes elsewhere from
its checkpoint; live progress; a summary per customer read back through the API.

Exit code 0 when every workload ended as planned and the resume was seen; 1 otherwise (a workload
lost, an unexpected outcome, or the demo did not finish within ``--timeout``).
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from niyanta.cli.demo_report import CustomerSummary, summarize
from niyanta.cli.output import console, progress_cell, state_text, text
from niyanta.cli.workloads import TERMINAL_STATES
from niyanta.client import JSONObject, NiyantaClient

if TYPE_CHECKING:
    from niyanta.cli.demo_cluster import DemoCluster, WorkerProcess

CUSTOMERS = {"acme": "platinum", "globex": "gold", "initech": "bronze"}
EXAMPLE_MODULES = [
    "examples.demo_jobs",
    "examples.csv_ingest",
    "examples.paginated_fetch",
    "examples.cpu_primes",
]
VICTIM_CHECKPOINTS = 8
"""The victim's worker is killed once the victim has committed this many checkpoints."""


@dataclass(frozen=True, slots=True)
class Planned:
    customer: str
    type_name: str
    params: dict[str, Any]
    expect: str = "succeeded"


@dataclass
class Failover:
    """The kill and what became of the workload it interrupted, as read from the API."""

    workload_id: str
    killed_worker: str | None = None
    checkpoint_at_kill: int = 0
    fence_at_kill: int = 0
    resumed_on: str | None = None
    resumed_from_seq: int = 0


@dataclass
class DemoRun:
    planned: dict[str, Planned] = field(default_factory=dict)
    """workload id -> what was submitted and how it should end."""
    finished: set[str] = field(default_factory=set)
    failover: Failover | None = None


def write_orders_csv(path: Path, rows: int) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["order_id", "customer", "amount_cents"])
        for number in range(rows):
            writer.writerow([number, f"c{number % 97}", (number * 7919) % 100_000])


def plan(workdir: Path, page_server_url: str) -> tuple[list[Planned], Planned]:
    """The workloads to submit, platinum first, and the one whose worker is killed."""
    orders = workdir / "orders.csv"
    write_orders_csv(orders, 30_000)
    victim = Planned("acme", "demo-counter", {"steps": 60, "step_s": 0.1})
    counter = {"steps": 30, "step_s": 0.1}
    workloads = [
        victim,
        Planned(
            "acme",
            "csv-ingest",
            {"source": str(orders), "database": str(workdir / "warehouse.db"), "batch_size": 1000},
        ),
        Planned("acme", "count-primes", {"limit": 3_000_000, "chunk_size": 150_000}),
        Planned("acme", "demo-counter", counter),
        Planned("globex", "paginated-fetch", {"base_url": page_server_url, "page_size": 25}),
        Planned("globex", "demo-flaky", {"fail_times": 2}),
        Planned("globex", "demo-counter", counter),
        Planned("globex", "demo-counter", counter),
        Planned("initech", "demo-partial-batch", {"items": 20, "fail": [3, 7]}),
        Planned("initech", "demo-permanent", {"message": "bad input file"}, expect="failed"),
        Planned("initech", "demo-counter", counter),
        Planned("initech", "demo-counter", counter),
    ]
    return workloads, victim


def say(line: str, on: Console = console) -> None:
    """One narration line, never wrapped (logs and tests search it)."""
    on.print(line, highlight=False, soft_wrap=True)


# --- watching the run ------------------------------------------------------------------------


def _replica0(workload: JSONObject) -> JSONObject:
    replicas: list[JSONObject] = workload.get("replicas") or [{}]
    return replicas[0]


def maybe_kill(
    run: DemoRun, workloads: dict[str, JSONObject], workers: dict[str, WorkerProcess]
) -> str | None:
    """SIGKILL the victim's worker once the victim has checkpointed enough; a narration line."""
    failover = run.failover
    if failover is None or failover.killed_worker is not None:
        return None
    replica = _replica0(workloads[failover.workload_id])
    worker_id = replica.get("worker_id")
    seq = int(replica.get("checkpoint_seq") or 0)
    if replica.get("state") != "running" or seq < VICTIM_CHECKPOINTS or worker_id not in workers:
        return None
    workers[worker_id].kill()
    failover.killed_worker = worker_id
    failover.checkpoint_at_kill = seq
    failover.fence_at_kill = int(replica.get("fence") or 0)
    return (
        f"[bold red]SIGKILL[/] {worker_id} (and its children) while it runs "
        f"{_name(run, failover.workload_id)} (last checkpoint seen: seq {seq})"
    )


def maybe_resumed(run: DemoRun, workloads: dict[str, JSONObject]) -> str | None:
    """Notice the victim placed on another worker with a new fence; a narration line."""
    failover = run.failover
    if failover is None or failover.killed_worker is None or failover.resumed_on is not None:
        return None
    replica = _replica0(workloads[failover.workload_id])
    worker_id = replica.get("worker_id")
    if (
        not worker_id
        or worker_id == failover.killed_worker
        or int(replica.get("fence") or 0) <= failover.fence_at_kill
        or replica.get("state") not in {"running", "succeeded"}
    ):
        return None
    failover.resumed_on = worker_id
    failover.resumed_from_seq = int(replica.get("resumed_from_seq") or 0)
    return (
        f"[bold green]resumed[/] {_name(run, failover.workload_id)} on {worker_id} from "
        f"checkpoint seq {failover.resumed_from_seq} (it was on {failover.killed_worker}, fence "
        f"{failover.fence_at_kill} -> {replica.get('fence')})"
    )


def _name(run: DemoRun, workload_id: str) -> str:
    planned = run.planned[workload_id]
    return f"{planned.customer}'s {planned.type_name} {workload_id}"


def newly_finished(run: DemoRun, workloads: dict[str, JSONObject]) -> Iterator[str]:
    for workload_id, workload in workloads.items():
        state = workload.get("state")
        if workload_id in run.finished or state not in TERMINAL_STATES:
            continue
        run.finished.add(workload_id)
        planned = run.planned[workload_id]
        yield (
            f"{planned.customer:8} {planned.type_name:19} [{_style(state)}]{state}[/] "
            f"{_outcome(_replica0(workload))}"
        )


def _style(state: object) -> str:
    return "green" if state == "succeeded" else "red" if state == "failed" else "yellow"


def _outcome(replica: JSONObject) -> str:
    """The result of a success, the error of a failure (a retried success keeps its last
    attempt's error on record: the result is what matters then)."""
    error = replica.get("error")
    if error and replica.get("state") != "succeeded":
        failed_items = error.get("failed_items") or []
        detail = f" failed items {failed_items}" if failed_items else ""
        return f"{error.get('error_class')}: {error.get('message')}{detail}"
    return text(replica.get("result"))[:100]


def live_view(run: DemoRun, workloads: dict[str, JSONObject]) -> Table:
    table = Table(
        title="workloads", title_justify="left", header_style="bold", box=box.SIMPLE_HEAVY
    )
    for column in ("customer", "type", "state", "worker", "try", "progress", "ckpt"):
        table.add_column(column, no_wrap=True)
    for workload_id, workload in workloads.items():
        planned = run.planned[workload_id]
        replica = _replica0(workload)
        table.add_row(
            planned.customer,
            planned.type_name,
            state_text(workload.get("state")),
            text(replica.get("worker_id")),
            text(replica.get("attempt")),
            progress_cell(_progress(workload)),
            text(replica.get("checkpoint_seq") or None),
        )
    return table


def _progress(workload: JSONObject) -> float:
    if workload.get("state") == "succeeded":
        return 1.0
    return float(_replica0(workload).get("progress") or 0.0)


def fetch(client: NiyantaClient, run: DemoRun) -> dict[str, JSONObject]:
    by_id = {w["id"]: w for w in client.iter_workloads() if w["id"] in run.planned}
    return {workload_id: by_id[workload_id] for workload_id in run.planned}


def watch(client: NiyantaClient, cluster: DemoCluster, run: DemoRun, timeout_s: float) -> None:
    """Show live progress until every workload is finished or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    workloads = fetch(client, run)
    with Live(live_view(run, workloads), console=console, refresh_per_second=4) as live:
        while time.monotonic() < deadline:
            workloads = fetch(client, run)
            lines = [
                maybe_kill(run, workloads, cluster.workers),
                maybe_resumed(run, workloads),
                *newly_finished(run, workloads),
            ]
            for line in lines:
                if line:
                    say(line, live.console)
            live.update(live_view(run, workloads))
            if len(run.finished) == len(run.planned):
                return
            time.sleep(0.25)


# --- the end ---------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def summary_table(summaries: list[CustomerSummary]) -> Table:
    """Fits 80 columns: "resumed" counts workloads resumed from a checkpoint, "wait" is the
    queue wait of every placement."""
    table = Table(
        title="summary per customer",
        title_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAVY,
        pad_edge=False,
    )
    for column in (
        "customer",
        "tier",
        "done",
        "failed",
        "retried",
        "resumed",
        "wait p50",
        "wait p95",
    ):
        table.add_column(column, no_wrap=True)
    for s in summaries:
        table.add_row(
            s.customer, s.tier, str(s.done), str(s.failed), str(s.retried), str(s.resumed),
            _seconds(s.wait_p50), _seconds(s.wait_p95),
        )  # fmt: skip
    return table


def problems(run: DemoRun, workloads: dict[str, JSONObject]) -> list[str]:
    """What went wrong, if anything: lost workloads, unexpected outcomes, no resume seen."""
    found = []
    for workload_id, planned in run.planned.items():
        state = workloads[workload_id].get("state")
        if state not in TERMINAL_STATES:
            found.append(f"{workload_id} ({planned.type_name}) never finished: {state}")
        elif state != planned.expect:
            found.append(f"{workload_id} ({planned.type_name}) {state}, expected {planned.expect}")
    failover = run.failover
    if failover is None or failover.killed_worker is None:
        found.append("the victim's worker was never killed (the victim never checkpointed)")
    elif failover.resumed_on is None:
        found.append(f"{failover.workload_id} was not seen resuming on another worker")
    elif failover.resumed_from_seq <= 0:
        found.append(f"{failover.workload_id} restarted from scratch instead of its checkpoint")
    return found


def report(client: NiyantaClient, run: DemoRun) -> list[str]:
    workloads = fetch(client, run)
    events = {workload_id: list(client.iter_events(workload_id)) for workload_id in run.planned}
    summaries = summarize(workloads.values(), events, CUSTOMERS)
    console.print()
    console.print(summary_table(summaries))
    preempted = [f"{s.customer} {s.preempted}" for s in summaries if s.preempted]
    if preempted:
        say(
            "preempted for a higher tier (yielded the slot, placed again later): "
            + ", ".join(preempted)
        )
    return problems(run, workloads)


# --- the command -----------------------------------------------------------------------------


def page_server_class() -> Any:
    """The example API server of ``examples.paginated_fetch``, imported from the working
    directory (the repository root), where the worker processes import the examples too."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module("examples.paginated_fetch").PageServer
    except ImportError as error:
        raise typer.BadParameter(
            f"the demo runs from the repository root, where `examples` is importable ({error})"
        ) from None


def submit_all(
    client: NiyantaClient, run: DemoRun, planned: list[Planned], victim: Planned
) -> None:
    for tier_customer, tier in CUSTOMERS.items():
        client.create_customer(tier_customer, tier, name=f"{tier_customer} ({tier})")
    for item in planned:
        result = client.submit(item.customer, item.type_name, item.params)
        workload_id = str(result.workload["id"])
        run.planned[workload_id] = item
        if item is victim:
            run.failover = Failover(workload_id)


def demo(
    workers: Annotated[int, typer.Option(min=2, help="worker processes")] = 3,
    slots: Annotated[int, typer.Option(min=1, help="slots per worker")] = 2,
    timeout: Annotated[
        float, typer.Option(min=5.0, help="seconds the workloads may take before the demo fails")
    ] = 90.0,
    keep: Annotated[
        bool, typer.Option(help="keep the temp dir (store, worker logs, example data)")
    ] = False,
) -> None:
    """Run an all-in-one Niyanta with example workloads for three customers on three tiers,
    kill a worker mid-run, and show the workload resuming elsewhere from its checkpoint."""
    # The coordinator runs in this process: loaded here, not when any other command starts.
    from niyanta.cli.demo_cluster import DemoCluster, DemoStartupError
    from niyanta.observability.logging import configure_logging

    configure_logging(level="ERROR")  # the narration tells the story; logs are in files
    started = time.monotonic()
    page_server = page_server_class()(total=600, fail_cursors=(100,))
    try:
        with (
            DemoCluster(workers, slots, EXAMPLE_MODULES, keep=keep) as cluster,
            page_server,
            cluster.client() as client,
        ):
            say(
                f"coordinator {cluster.url} (SQLite in {cluster.workdir}, built-in WebSocket "
                f"broker); workers: {', '.join(cluster.workers)}"
            )
            run = DemoRun()
            planned, victim = plan(cluster.workdir, page_server.url)
            submit_all(client, run, planned, victim)
            say(f"customers {json.dumps(CUSTOMERS)}; submitted {len(run.planned)} workloads")
            watch(client, cluster, run, timeout)
            found = report(client, run)
    except DemoStartupError as error:
        say(f"[bold red]demo failed to start:[/] {error}")
        raise typer.Exit(1) from error
    elapsed = time.monotonic() - started
    if found:
        for line in found:
            say(f"[bold red]problem:[/] {line}")
        raise typer.Exit(1)
    say(f"[green]demo finished in {elapsed:.1f} s[/]")
