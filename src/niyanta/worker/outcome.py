"""How a finished replica is reported: the one place that maps what workload code did
(returned, raised, was stopped or fenced) to the Result the coordinator records."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum

from niyanta.errors import FencedOut, PermanentError, TransientError
from niyanta.model import JSON, ErrorClass

NO_ANSWER_REASONS = frozenset({"cancel", "fenced"})
"""Stops after which nothing is written: the store already moved the replica on."""


class WorkloadTimedOut(TransientError):
    """The workload ran longer than its type's ``timeout_s``."""


class ReportedFailure(Exception):
    """A failure already classified elsewhere (in an isolated child process)."""

    def __init__(self, error_class: ErrorClass, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    YIELDED = "yielded"
    SILENT = "silent"
    """Fenced or cancelled: nothing is sent."""


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: OutcomeKind
    result: JSON = None
    error_class: ErrorClass | None = None
    error_message: str | None = None
    failed_items: list[JSON] = field(default_factory=list)


def classify_error(error: BaseException) -> ErrorClass:
    if isinstance(error, ReportedFailure):
        return error.error_class
    if isinstance(error, FencedOut):
        return ErrorClass.FENCED
    if isinstance(error, MemoryError):
        return ErrorClass.RESOURCE
    if isinstance(error, WorkloadTimedOut):
        return ErrorClass.TIMEOUT
    if isinstance(error, PermanentError):
        return ErrorClass.PERMANENT
    # TransientError and anything unexpected: retried up to the type's max attempts.
    return ErrorClass.TRANSIENT


def decide_outcome(
    *,
    stop_reason: str | None,
    fenced: bool,
    failed_items: list[JSON],
    result: JSON = None,
    error: BaseException | None = None,
) -> Outcome:
    """``error`` is what the handler raised (a ``CancelledError`` when the runtime cancelled it
    after the stop grace period), ``result`` what it returned otherwise."""
    if fenced or isinstance(error, FencedOut):
        return Outcome(OutcomeKind.SILENT)
    if stop_reason in NO_ANSWER_REASONS:
        return Outcome(OutcomeKind.SILENT)
    if stop_reason is not None and (error is None or isinstance(error, asyncio.CancelledError)):
        # Checkpointed (or cut off after the grace period: its last checkpoint stands) and
        # handed back; it resumes from the checkpoint wherever it is placed next.
        return Outcome(OutcomeKind.YIELDED, failed_items=list(failed_items))
    if error is None:
        return Outcome(OutcomeKind.SUCCEEDED, result=result, failed_items=list(failed_items))
    if isinstance(error, asyncio.CancelledError):
        # Cancelled with no stop request: the worker itself is going away abruptly.
        return Outcome(OutcomeKind.SILENT)
    return Outcome(
        OutcomeKind.FAILED,
        error_class=classify_error(error),
        error_message=describe_error(error),
        failed_items=list(failed_items),
    )


def describe_error(error: BaseException) -> str:
    if isinstance(error, ReportedFailure):
        return str(error)
    return f"{type(error).__name__}: {error}"
