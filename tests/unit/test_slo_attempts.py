from __future__ import annotations

from niyanta.model import Event
from niyanta.slo.attempts import AttemptTracker
from niyanta.slo.evaluator import AttemptSample


def _event(kind: str, at: float, index: int | None = 0, workload: str = "w1") -> Event:
    return Event(0, kind, at, "test", workload_id=workload, index=index, customer_id="acme")


def _fold(tracker: AttemptTracker, *events: Event) -> list[AttemptSample]:
    return [s for s in (tracker.fold(e) for e in events) if s is not None]


def test_an_attempt_s_queue_wait_runs_from_submit_and_its_run_time_from_running() -> None:
    samples = _fold(
        AttemptTracker(),
        _event("workload.submitted", 10.0, index=None),
        _event("replica.scheduled", 13.0),
        _event("replica.running", 13.5),
        _event("replica.succeeded", 20.5),
    )
    assert samples == [AttemptSample("acme", 20.5, 3.0, 7.0, failed=False)]


def test_a_retry_waits_from_when_it_was_pending_again_and_both_attempts_count() -> None:
    samples = _fold(
        AttemptTracker(),
        _event("workload.submitted", 0.0, index=None),
        _event("replica.scheduled", 1.0),
        _event("replica.running", 1.0),
        _event("replica.retrying", 2.0),
        _event("replica.pending", 5.0),
        _event("replica.scheduled", 5.5),
        _event("replica.running", 6.0),
        _event("replica.failed", 8.0),
    )
    assert [(s.queue_wait_s, s.run_time_s, s.failed) for s in samples] == [
        (1.0, 1.0, True),
        (0.5, 2.0, True),
    ]


def test_preempted_cancelled_or_unseen_starts_give_no_sample() -> None:
    tracker = AttemptTracker()
    assert not _fold(
        tracker,
        _event("workload.submitted", 0.0, index=None),
        _event("replica.scheduled", 1.0),
        _event("replica.running", 1.0),
        _event("replica.pending", 2.0),  # preempted: this attempt did not finish
        _event("replica.scheduled", 3.0, index=1),
        _event("replica.cancelled", 4.0, index=1),
        _event("replica.succeeded", 5.0, index=1),
        _event("replica.succeeded", 5.0, workload="started-before-the-tracker"),
    )
