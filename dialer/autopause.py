"""Automatic pause: a job whose recent attempts mostly fail for carrier or provider reasons stops.

Pure bookkeeping, no I/O: the scheduler feeds every finished attempt of a running job into that
job's `FailureWindow` and pauses the job when it answers with a reason. Burning through a contact
list while the carrier rejects every call wastes the list (each contact spends an attempt), so the
engine stops and lets an operator look, fix and resume.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from dialer.states import ContactStatus

# Outcomes that point at the carrier or the provider rather than at the person called.
PROVIDER_FAILURES = frozenset({ContactStatus.CARRIER_ERROR, ContactStatus.FAILED})

REASON_PREFIX = "Automatic pause"


@dataclass(frozen=True, slots=True)
class AutoPauseRule:
    min_attempts: int = 10  # 0: never pause automatically
    window_seconds: float = 120.0
    failure_ratio: float = 0.5


@dataclass(slots=True)
class _Moment:
    """The attempts of a job that ended at one time (a scheduler cycle's)."""

    at: float
    attempts: int
    failures: int


class FailureWindow:
    """The attempts of one job that ended within the last `window_seconds`, kept per moment
    they ended at (the engine judges a cycle's ended calls at one time): at thousands of
    attempts a second a window holds one entry per cycle, not one per attempt."""

    def __init__(self, rule: AutoPauseRule) -> None:
        self.rule = rule
        self._recent: deque[_Moment] = deque()
        self._attempts = 0
        self._failures = 0

    def record(self, outcome: ContactStatus, now: float) -> str | None:
        """Count an attempt that ended now; return a pause reason when the job should pause."""
        failed = int(outcome in PROVIDER_FAILURES)
        recent = self._recent
        if recent and recent[-1].at == now:
            recent[-1].attempts += 1
            recent[-1].failures += failed
        else:
            recent.append(_Moment(now, 1, failed))
        self._attempts += 1
        self._failures += failed
        cutoff = now - self.rule.window_seconds
        while recent and recent[0].at < cutoff:
            old = recent.popleft()
            self._attempts -= old.attempts
            self._failures -= old.failures
        total = self._attempts
        if self.rule.min_attempts <= 0 or total < self.rule.min_attempts:
            return None
        if self._failures < self.rule.failure_ratio * total:
            return None
        return (
            f"{REASON_PREFIX}: {self._failures} of the last {total} attempts within "
            f"{self.rule.window_seconds:g} s ended carrier_error or failed"
        )
