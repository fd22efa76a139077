"""The retry policy: a pure function from an attempt's outcome to the contact's next status."""

from __future__ import annotations

import pytest

from dialer import retry
from dialer.states import DEFAULT_RETRY_STATUSES, ContactStatus
from tests.unit.conftest import T0

POLICY = retry.RetryPolicy()
RETRIED = list(DEFAULT_RETRY_STATUSES)
FINAL = [ContactStatus.INVALID_NUMBER, ContactStatus.BLOCKED, ContactStatus.FAILED]


def test_default_policy_matches_the_design() -> None:
    """Defaults: 3 attempts, retry no_answer/busy/timeout/carrier_error, 300 s, backoff x2."""
    assert POLICY.max_attempts == 3
    assert set(POLICY.retry_statuses) == {"no_answer", "busy", "timeout", "carrier_error"}
    assert POLICY.delay_seconds == 300.0
    assert POLICY.backoff == 2.0


@pytest.mark.parametrize(("attempt_no", "expected"), [(1, 300.0), (2, 600.0), (3, 1200.0)])
def test_delay_doubles_after_each_attempt(attempt_no: int, expected: float) -> None:
    """The delay before the next attempt is delay x backoff^(attempt_no - 1)."""
    assert POLICY.delay_after(attempt_no) == expected


def test_delay_with_custom_backoff_and_without_backoff() -> None:
    """Backoff 3 triples each delay; backoff 1 keeps the delay constant."""
    tripling = retry.RetryPolicy(delay_seconds=10.0, backoff=3.0)
    constant = retry.RetryPolicy(delay_seconds=10.0, backoff=1.0)
    assert [tripling.delay_after(n) for n in (1, 2, 3)] == [10.0, 30.0, 90.0]
    assert [constant.delay_after(n) for n in (1, 2, 3)] == [10.0, 10.0, 10.0]


def test_delay_before_first_attempt_is_never_shorter_than_base() -> None:
    """Attempt numbers below 1 are treated as the first (no fractional backoff)."""
    assert POLICY.delay_after(0) == POLICY.delay_seconds


@pytest.mark.parametrize("outcome", RETRIED)
def test_retryable_outcome_with_attempts_left_is_queued_after_delay(outcome: ContactStatus) -> None:
    """A retried outcome on attempt 1 of 3 queues the contact with nextRetryAt = now + 300 s."""
    decision = retry.decide(outcome, 1, 3, POLICY, T0)
    assert decision == retry.Decision(ContactStatus.QUEUED, T0 + 300.0)


def test_second_retry_waits_twice_as_long() -> None:
    """After attempt 2 the retry waits 600 s (x2 backoff)."""
    assert retry.decide(ContactStatus.BUSY, 2, 3, POLICY, T0).next_retry_at == T0 + 600.0


@pytest.mark.parametrize("outcome", RETRIED)
def test_attempts_exhausted_makes_the_outcome_final(outcome: ContactStatus) -> None:
    """On the last allowed attempt a retryable outcome becomes the contact's final status."""
    assert retry.decide(outcome, 3, 3, POLICY, T0) == retry.Decision(outcome, None)


def test_contact_max_attempts_overrides_the_policy() -> None:
    """The contact's own max_attempts decides, e.g. 5 lets attempt 3 be retried."""
    assert retry.decide(ContactStatus.NO_ANSWER, 3, 5, POLICY, T0).status is ContactStatus.QUEUED
    assert retry.decide(ContactStatus.NO_ANSWER, 1, 1, POLICY, T0).status is ContactStatus.NO_ANSWER


@pytest.mark.parametrize("force", [False, True])
def test_completed_is_never_retried(force: bool) -> None:
    """An answered call is final even if forced retryable or listed among retry statuses."""
    greedy = retry.RetryPolicy(retry_statuses=("completed", "busy"))
    decision = retry.decide(ContactStatus.COMPLETED, 1, 3, greedy, T0, force_retryable=force)
    assert decision == retry.Decision(ContactStatus.COMPLETED, None)


@pytest.mark.parametrize("outcome", FINAL)
def test_non_retryable_outcomes_are_final(outcome: ContactStatus) -> None:
    """invalid_number, blocked and failed end the contact even with attempts left."""
    assert retry.decide(outcome, 1, 3, POLICY, T0) == retry.Decision(outcome, None)


@pytest.mark.parametrize("outcome", FINAL)
def test_force_retryable_retries_a_cut_short_attempt(outcome: ContactStatus) -> None:
    """force_retryable (e.g. a call interrupted by a crash) queues even a terminal outcome."""
    decision = retry.decide(outcome, 1, 3, POLICY, T0, force_retryable=True)
    assert decision == retry.Decision(ContactStatus.QUEUED, T0 + 300.0)


def test_force_retryable_still_respects_max_attempts() -> None:
    """Forcing a retry never grants an attempt beyond max_attempts."""
    decision = retry.decide(ContactStatus.FAILED, 3, 3, POLICY, T0, force_retryable=True)
    assert decision == retry.Decision(ContactStatus.FAILED, None)


def test_custom_retry_statuses_limit_what_is_retried() -> None:
    """A policy retrying only busy makes no_answer final."""
    only_busy = retry.RetryPolicy(retry_statuses=("busy",))
    assert retry.decide(ContactStatus.BUSY, 1, 3, only_busy, T0).status is ContactStatus.QUEUED
    assert (
        retry.decide(ContactStatus.NO_ANSWER, 1, 3, only_busy, T0).status is ContactStatus.NO_ANSWER
    )


def test_custom_delay_is_used_for_next_retry_at() -> None:
    """nextRetryAt follows the policy's own delay and backoff."""
    policy = retry.RetryPolicy(delay_seconds=60.0, backoff=1.5)
    assert retry.decide(ContactStatus.TIMEOUT, 2, 4, policy, T0).next_retry_at == T0 + 90.0
