"""Estimates of a job's duration, cost and completion time."""

from __future__ import annotations

import pytest

from dialer import estimates


@pytest.mark.parametrize(
    ("max_attempts", "answer_rate", "expected"),
    [(1, 0.6, 1.0), (3, 1.0, 1.0), (3, 0.5, 1.75), (2, 0.6, 1.4), (4, 0.0, 4.0)],
)
def test_expected_attempts(max_attempts: int, answer_rate: float, expected: float) -> None:
    """Each further attempt happens only if all earlier ones were missed."""
    assert estimates.expected_attempts(max_attempts, answer_rate) == pytest.approx(expected)


def test_duration_runs_in_waves_of_concurrency() -> None:
    """10 contacts, 5 at a time, 1 attempt, 60 s calls: 2 waves = 120 s; 11 contacts: 3 waves."""
    assert estimates.duration_seconds(10, 5, 1.0, 60.0) == 120.0
    assert estimates.duration_seconds(11, 5, 1.0, 60.0) == 180.0


def test_duration_counts_expected_retries() -> None:
    """1.5 attempts per contact turn 10 contacts into 15 calls: 3 waves of 5."""
    assert estimates.duration_seconds(10, 5, 1.5, 60.0) == 180.0


def test_duration_of_nothing_is_zero_and_zero_concurrency_is_one() -> None:
    """No contacts take no time; a concurrency below 1 counts as 1 (no division by zero)."""
    assert estimates.duration_seconds(0, 5, 1.0, 60.0) == 0.0
    assert estimates.duration_seconds(3, 0, 1.0, 10.0) == 30.0


def test_cost_is_every_contact_answered_once_for_a_full_call() -> None:
    """100 contacts x 90 s at $0.10/min = $15.00, rounded to cents."""
    assert estimates.cost_usd(100, 90.0, 0.10) == 15.0
    assert estimates.cost_usd(1, 20.0, 0.10) == 0.03
    assert estimates.cost_usd(0, 60.0, 0.10) == 0.0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 seconds"),
        (-3, "0 seconds"),
        (0.2, "1 second"),
        (1, "1 second"),
        (45, "45 seconds"),
        (44.1, "45 seconds"),
        (59.5, "1 minute"),
        (60, "1 minute"),
        (61, "2 minutes"),
        (15 * 60, "15 minutes"),
        (119 * 60, "119 minutes"),
        (120 * 60, "2 hours"),
        (125 * 60, "2 hours 5 minutes"),
        (121 * 60, "2 hours 1 minute"),
        (10 * 3600 + 30 * 60, "10 hours 30 minutes"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    """Durations read as seconds, minutes, or hours and minutes, rounded up."""
    assert estimates.format_duration(seconds) == text


@pytest.mark.parametrize(
    ("amount", "text"),
    [(3.5, "$3.50"), (0, "$0.00"), (0.999, "$1.00"), (1234.5, "$1,234.50"), (12, "$12.00")],
)
def test_format_usd(amount: float, text: str) -> None:
    """Dollars with two decimals and thousands separators."""
    assert estimates.format_usd(amount) == text


def test_remaining_counts_open_and_live_calls_in_waves() -> None:
    """8 open + 2 live at concurrency 5 with 30 s calls: 2 waves = 60 s; nothing left: 0."""
    assert estimates.remaining_seconds(8, 2, 5, 30.0) == 60.0
    assert estimates.remaining_seconds(0, 1, 5, 30.0) == 30.0
    assert estimates.remaining_seconds(0, 0, 5, 30.0) == 0.0
    assert estimates.remaining_seconds(4, 0, 0, 30.0) == 120.0
