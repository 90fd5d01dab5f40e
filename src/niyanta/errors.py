"""Every error Niyanta raises derives from NiyantaError.

Each class carries a stable ``code`` and the HTTP status the API maps it to, so that the API layer
turns any of them into a 4xx/5xx JSON error without a lookup table of its own.
"""

from __future__ import annotations


class NiyantaError(Exception):
    """Base of all Niyanta errors."""

    code: str = "niyanta_error"
    http_status: int = 500

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.code)
        self.message = message or self.code


class InvalidInput(NiyantaError):
    code = "invalid_input"
    http_status = 422


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    http_status = 413


class NotFound(NiyantaError):
    code = "not_found"
    http_status = 404


class UnknownCustomer(NotFound):
    code = "unknown_customer"


class UnknownTier(NotFound):
    code = "unknown_tier"


class UnknownWorkloadType(NotFound):
    code = "unknown_workload_type"


class UnknownWorkload(NotFound):
    code = "unknown_workload"


class UnknownReplica(NotFound):
    code = "unknown_replica"


class UnknownWorker(NotFound):
    code = "unknown_worker"


class Conflict(NiyantaError):
    code = "conflict"
    http_status = 409


class AlreadyExists(Conflict):
    code = "already_exists"


class IdempotencyConflict(Conflict):
    """The same idempotency key was used before with a different payload."""

    code = "idempotency_conflict"


class IllegalTransition(Conflict):
    """A lifecycle transition that the table in ``states.py`` does not allow."""

    code = "illegal_transition"

    def __init__(self, current: str, target: str, message: str = "") -> None:
        super().__init__(message or f"illegal transition {current} -> {target}")
        self.current = current
        self.target = target


class FencedOut(Conflict):
    """A write carried a fence token that is not the replica's current one.

    Raised by the store (nothing is written) and re-raised in workload code by the SDK; the
    runtime then stops the replica.
    """

    code = "fenced_out"

    def __init__(self, workload_id: str, replica: int, presented: int, current: int) -> None:
        super().__init__(
            f"fenced out: replica {workload_id}/{replica} presented token {presented}, "
            f"current is {current}"
        )
        self.workload_id = workload_id
        self.replica = replica
        self.presented = presented
        self.current = current


class CheckpointSeqConflict(Conflict):
    """A checkpoint's sequence number does not advance past the last committed one."""

    code = "checkpoint_seq_conflict"


class NotLeader(NiyantaError):
    code = "not_leader"
    http_status = 503


class StoreUnavailable(NiyantaError):
    code = "store_unavailable"
    http_status = 503


class BrokerError(NiyantaError):
    code = "broker_error"
    http_status = 503


class MessageRefused(BrokerError):
    """A broker message was malformed, of an unknown version, too large or unauthenticated."""

    code = "message_refused"
    http_status = 400


class WorkloadError(Exception):
    """Base of the errors workload code raises to tell the runtime how to treat a failure."""


class TransientError(WorkloadError):
    """Retry with exponential backoff and jitter, up to the type's max attempts."""


class PermanentError(WorkloadError):
    """Fail now, without retrying, and alert."""
