"""Estimates of a job's duration, cost and completion time. Pure functions."""

from __future__ import annotations

import math


def expected_attempts(max_attempts: int, answer_rate: float) -> float:
    """Expected dials per contact if each dial is answered with probability `answer_rate`."""
    miss = 1.0 - answer_rate
    return sum(miss**k for k in range(max_attempts))


def duration_seconds(
    contacts: int, concurrency: int, attempts_per_contact: float, call_seconds: float
) -> float:
    """Calls run in waves of `concurrency`; each wave takes about one call length."""
    if contacts <= 0:
        return 0.0
    calls = contacts * attempts_per_contact
    return math.ceil(calls / max(1, concurrency)) * call_seconds


def cost_usd(contacts: int, call_seconds: float, usd_per_minute: float) -> float:
    """Upper estimate of the charge: every contact answered once for a full call."""
    return round(contacts * call_seconds / 60.0 * usd_per_minute, 2)


def format_duration(seconds: float) -> str:
    """'45 seconds', '15 minutes', '2 hours 5 minutes'."""
    whole = math.ceil(max(0.0, seconds))  # rounded up first, so 59.5 s reads "1 minute"
    if whole < 60:
        return f"{whole} second{'s' if whole != 1 else ''}"
    minutes = math.ceil(whole / 60)
    if minutes < 120:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    hours, rest = divmod(minutes, 60)
    text = f"{hours} hours"
    if rest:
        text += f" {rest} minute{'s' if rest != 1 else ''}"
    return text


def format_usd(amount: float) -> str:
    return f"${amount:,.2f}"


def remaining_seconds(
    open_contacts: int, live_calls: int, concurrency: int, call_seconds: float
) -> float:
    """Time to finish what is left, from the observed (or default) average call length."""
    work = open_contacts + live_calls
    if work <= 0:
        return 0.0
    return math.ceil(work / max(1, concurrency)) * call_seconds
