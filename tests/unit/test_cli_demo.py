"""How the demo judges its run: what makes it exit 1, and when a resume counts as seen."""

from __future__ import annotations

from niyanta.cli.demo import DemoRun, Failover, Planned, maybe_resumed, problems


def _run() -> DemoRun:
    run = DemoRun(
        planned={
            "w-ok": Planned("acme", "demo-counter", {}),
            "w-bad": Planned("initech", "demo-permanent", {}, expect="failed"),
        }
    )
    run.failover = Failover(
        "w-ok", killed_worker="worker-1", checkpoint_at_kill=9, fence_at_kill=1,
        resumed_on="worker-2", resumed_from_seq=9,
    )  # fmt: skip
    return run


def test_a_run_as_planned_has_no_problems() -> None:
    workloads = {"w-ok": {"state": "succeeded"}, "w-bad": {"state": "failed"}}
    assert problems(_run(), workloads) == []


def test_lost_and_unexpected_workloads_are_problems() -> None:
    workloads = {"w-ok": {"state": "running"}, "w-bad": {"state": "succeeded"}}
    found = problems(_run(), workloads)
    assert found == [
        "w-ok (demo-counter) never finished: running",
        "w-bad (demo-permanent) succeeded, expected failed",
    ]


def test_a_failover_that_restarted_from_scratch_or_never_happened_is_a_problem() -> None:
    workloads = {"w-ok": {"state": "succeeded"}, "w-bad": {"state": "failed"}}
    run = _run()
    assert run.failover is not None
    run.failover.resumed_from_seq = 0
    assert problems(run, workloads) == ["w-ok restarted from scratch instead of its checkpoint"]
    run.failover = Failover("w-ok")
    assert problems(run, workloads) == [
        "the victim's worker was never killed (the victim never checkpointed)"
    ]


def test_a_resume_counts_once_another_worker_holds_a_newer_fence() -> None:
    run = _run()
    run.failover = Failover("w-ok", killed_worker="worker-1", checkpoint_at_kill=9, fence_at_kill=1)

    def seen(replica: dict[str, object]) -> str | None:
        return maybe_resumed(run, {"w-ok": {"state": "running", "replicas": [replica]}})

    # still the old assignment as the API last saw it, then queued with no worker
    assert seen({"state": "running", "worker_id": "worker-1", "fence": 1}) is None
    assert seen({"state": "pending", "worker_id": None, "fence": 2}) is None
    line = seen({"state": "running", "worker_id": "worker-3", "fence": 3, "resumed_from_seq": 11})
    assert line is not None and "on worker-3 from checkpoint seq 11" in line
    assert (run.failover.resumed_on, run.failover.resumed_from_seq) == ("worker-3", 11)
    assert seen({"state": "running", "worker_id": "worker-2", "fence": 4}) is None  # once
