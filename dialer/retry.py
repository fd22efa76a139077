"""The retry policy: a pure function from an attempt's outcome to the contact's next status."""

from __future__ import annotations

from dataclasses import dataclass

from dialer.states import DEFAULT_RETRY_STATUSES, ContactStatus
from storage.rows import value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3
    retry_statuses: tuple[str, ...] = tuple(DEFAULT_RETRY_STATUSES)
    delay_seconds: float = 300.0
    backoff: float = 2.0

    def delay_after(self, attempt_no: int) -> float:
        """Delay before the attempt that follows attempt number `attempt_no` (1-based)."""
        return self.delay_seconds * self.backoff ** max(0, attempt_no - 1)


@value
class Decision:
    status: ContactStatus
    next_retry_at: float | None


def decide(
    outcome: ContactStatus,
    attempt_no: int,
    max_attempts: int,
    policy: RetryPolicy,
    now: float,
    *,
    force_retryable: bool = False,
) -> Decision:
    """Next status after attempt `attempt_no` ended in `outcome`.

    Retry when the outcome is one the policy retries (or the caller says the attempt was cut short,
    e.g. interrupted by a crash) and attempts are left; otherwise the outcome is final.
    `max_attempts` is the contact's own (it can be raised by a retry round).
    """
    retryable = force_retryable or outcome in policy.retry_statuses
    if outcome is not ContactStatus.COMPLETED and retryable and attempt_no < max_attempts:
        return Decision(ContactStatus.QUEUED, now + policy.delay_after(attempt_no))
    return Decision(outcome, None)
