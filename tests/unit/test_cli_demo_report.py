"""The demo's summary figures, computed from API workloads and event logs."""

from __future__ import annotations

from niyanta.cli.demo_report import percentile, queue_waits, summarize


def _event(kind: str, at: float, index: int | None = 0, event_id: int = 0) -> dict[str, object]:
    return {"id": event_id, "kind": kind, "at": at, "index": index}


def test_queue_wait_runs_from_queueing_to_placement_for_every_placement() -> None:
    events = [
        _event("workload.submitted", 100.0, index=None),
        _event("replica.scheduled", 100.5, index=0),
        _event("replica.scheduled", 102.0, index=1),
        _event("replica.running", 100.6, index=0),
        # replica 0 lost its worker, waited 0.25 s, and was placed again
        _event("replica.pending", 110.0, index=0),
        _event("replica.scheduled", 110.25, index=0),
    ]
    assert sorted(queue_waits(events)) == [0.25, 0.5, 2.0]


def test_a_placement_without_a_known_queueing_is_not_counted() -> None:
    assert queue_waits([_event("replica.scheduled", 5.0)]) == []


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 50) is None


def test_summary_per_customer() -> None:
    workloads = [
        {
            "id": "a",
            "customer_id": "acme",
            "state": "succeeded",
            "replicas": [{"resumed_from_seq": 3}],
        },
        {"id": "b", "customer_id": "acme", "state": "failed", "replicas": [{}]},
        {"id": "c", "customer_id": "initech", "state": "succeeded", "replicas": [{}]},
    ]
    events = {
        "a": [_event("workload.submitted", 0.0, None), _event("replica.scheduled", 1.0)],
        "b": [
            _event("workload.submitted", 0.0, None),
            _event("replica.scheduled", 3.0),
            _event("replica.retrying", 4.0),
        ],
        "c": [
            _event("workload.submitted", 0.0, None),
            _event("replica.scheduled", 0.5),
            {**_event("replica.pending", 2.0), "reason": "yielded (preempt)"},
            _event("replica.scheduled", 2.5),
        ],
    }
    acme, globex, initech = summarize(
        workloads, events, {"acme": "platinum", "globex": "gold", "initech": "bronze"}
    )
    assert (acme.customer, acme.tier, acme.submitted, acme.done, acme.failed) == (
        "acme",
        "platinum",
        2,
        1,
        1,
    )
    assert (acme.retried, acme.resumed) == (1, 1)
    assert (acme.wait_p50, acme.wait_p95) == (1.0, 3.0)
    assert (globex.submitted, globex.wait_p50) == (0, None)
    assert (initech.done, initech.retried, initech.resumed, initech.preempted) == (1, 0, 0, 1)
    assert initech.waits == [0.5, 0.5]
    assert acme.preempted == 0
