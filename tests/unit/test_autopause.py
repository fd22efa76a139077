"""The automatic-pause rule: enough recent attempts, at least half failed at the carrier."""

from __future__ import annotations

from dialer.autopause import AutoPauseRule, FailureWindow
from dialer.states import ContactStatus

CARRIER = ContactStatus.CARRIER_ERROR
ANSWERED = ContactStatus.COMPLETED


def feed(window: FailureWindow, outcomes: list[ContactStatus], start: float = 0.0) -> list[str]:
    """Record one outcome per second; return the reasons given (empty: no pause)."""
    reasons = []
    for i, outcome in enumerate(outcomes):
        reason = window.record(outcome, start + i)
        if reason is not None:
            reasons.append(reason)
    return reasons


def test_no_pause_before_the_minimum_number_of_attempts() -> None:
    """Nine carrier errors out of nine are not enough evidence (minimum 10 attempts)."""
    assert feed(FailureWindow(AutoPauseRule()), [CARRIER] * 9) == []


def test_half_of_ten_failing_at_the_carrier_pauses() -> None:
    """The tenth attempt, making 5 of 10 carrier errors or failures, gives a pause reason."""
    window = FailureWindow(AutoPauseRule())
    outcomes = [ANSWERED] * 5 + [CARRIER] * 4 + [ContactStatus.FAILED]
    assert feed(window, outcomes) == [
        "Automatic pause: 5 of the last 10 attempts within 120 s ended carrier_error or failed"
    ]


def test_failures_the_callee_causes_do_not_count() -> None:
    """Busy, no answer, timeout, blocked and invalid numbers are not carrier failures."""
    outcomes = [
        ContactStatus.BUSY,
        ContactStatus.NO_ANSWER,
        ContactStatus.TIMEOUT,
        ContactStatus.BLOCKED,
        ContactStatus.INVALID_NUMBER,
    ] * 4
    assert feed(FailureWindow(AutoPauseRule()), outcomes) == []


def test_attempts_older_than_the_window_are_forgotten() -> None:
    """Failures spread over more than the window never add up to a pause."""
    window = FailureWindow(AutoPauseRule(window_seconds=120))
    for i in range(30):  # one every 14 s: never more than 9 within 120 s
        assert window.record(CARRIER, i * 14.0) is None
    # One more right after the last: ten within 120 s.
    assert window.record(CARRIER, 29 * 14.0 + 1) is not None


def test_a_minimum_of_zero_turns_the_rule_off() -> None:
    """With min_attempts 0 nothing ever pauses."""
    assert feed(FailureWindow(AutoPauseRule(min_attempts=0)), [CARRIER] * 50) == []


def test_ratio_is_configurable() -> None:
    """With a 0.8 ratio, 7 failures of 10 do not pause and 8 of 10 do."""
    rule = AutoPauseRule(failure_ratio=0.8)
    assert feed(FailureWindow(rule), [ANSWERED] * 3 + [CARRIER] * 7) == []
    assert len(feed(FailureWindow(rule), [ANSWERED] * 2 + [CARRIER] * 8)) == 1


def test_attempts_ended_at_one_moment_are_kept_as_one_entry() -> None:
    """The engine judges a cycle's ended calls at one time: 10,000 attempts over 100 cycles are
    100 entries, not 10,000 (at thousands of attempts a second the window stays small), and
    they count the same."""
    window = FailureWindow(AutoPauseRule(window_seconds=120))
    for cycle in range(100):
        for i in range(100):
            assert window.record(CARRIER if i % 4 == 0 else ANSWERED, cycle * 0.01) is None
    assert len(window._recent) == 100
    # 2,500 of 10,000 failed; 5,000 failures more at a later moment make it half: 7,500 of
    # 15,000.
    for _ in range(4_999):
        assert window.record(CARRIER, 2.0) is None
    reason = window.record(CARRIER, 2.0)
    assert reason is not None and "7500 of the last 15000 attempts" in reason
    assert len(window._recent) == 101
    # Two minutes later, all of those are forgotten.
    assert window.record(CARRIER, 200.0) is None and len(window._recent) == 1
