"""Contact and job statuses, and the named groups the rest of the code uses."""

from __future__ import annotations

from enum import StrEnum


class ContactStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    DIALING = "dialing"
    COMPLETED = "completed"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    TIMEOUT = "timeout"
    BLOCKED = "blocked"
    INVALID_NUMBER = "invalid_number"
    CARRIER_ERROR = "carrier_error"
    FAILED = "failed"
    CANCELLED = "cancelled"


class JobStatus(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Contacts still to be worked on (a job with any of these is not finished).
OPEN_CONTACT_STATUSES = frozenset(
    {ContactStatus.PENDING, ContactStatus.QUEUED, ContactStatus.DIALING}
)
# What one call can end in (the provider's answer).
CALL_OUTCOMES = frozenset(
    {
        ContactStatus.COMPLETED,
        ContactStatus.NO_ANSWER,
        ContactStatus.BUSY,
        ContactStatus.TIMEOUT,
        ContactStatus.BLOCKED,
        ContactStatus.INVALID_NUMBER,
        ContactStatus.CARRIER_ERROR,
        ContactStatus.FAILED,
    }
)
# Contacts that ended in a failure (counted in failedCalls).
FAILURE_STATUSES = CALL_OUTCOMES - {ContactStatus.COMPLETED}
# Retried by default.
DEFAULT_RETRY_STATUSES = (
    ContactStatus.NO_ANSWER,
    ContactStatus.BUSY,
    ContactStatus.TIMEOUT,
    ContactStatus.CARRIER_ERROR,
)

# Jobs the scheduler may dial for.
DIALABLE_JOB_STATUSES = frozenset({JobStatus.RUNNING})
# Jobs that are not finished.
ACTIVE_JOB_STATUSES = frozenset(
    {JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING, JobStatus.PAUSED}
)
TERMINAL_JOB_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
# Jobs an operator may pause (a paused job dials no one until it is resumed).
PAUSABLE_JOB_STATUSES = frozenset({JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.RUNNING})
# Jobs an operator may move to another start time (not started yet).
RESCHEDULABLE_JOB_STATUSES = frozenset({JobStatus.PENDING, JobStatus.SCHEDULED})
# Jobs whose failed contacts an operator may put back in the queue for another round.
RETRYABLE_JOB_STATUSES = frozenset(
    {JobStatus.RUNNING, JobStatus.PAUSED, JobStatus.COMPLETED, JobStatus.FAILED}
)
