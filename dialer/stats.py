"""What the engine counts for `/metrics`, as plain numbers: the attempts that ended (by outcome
and SIP code), how long they took and rang, how long scheduler cycles take, and how long a slot
stays empty between a call's end and the next call started in it.

Kept cheap enough for the hot path (the engine records 10,000+ attempts a second): a dict
increment and a bisect per attempt, no prometheus object touched, no lock. The collector in
`dialer.metrics` turns them into metric families when `/metrics` is scraped.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Container, Sequence

from dialer.providers.base import DialResult
from storage.latency import FAST_BUCKETS, BucketCounts
from storage.rows import Outcome

# Seconds, from the attempt's start to the call's end: short failures up to hour-long conversations.
ATTEMPT_BUCKETS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# Seconds, from the attempt's start to the answer.
RING_BUCKETS = (0.5, 1, 2, 3, 5, 8, 10, 15, 20, 30, 45, 60, 90)


class EngineStats:
    def __init__(self) -> None:
        # (outcome, SIP code or None) -> attempts that ended so.
        self.dials: Counter[tuple[str, int | None]] = Counter()
        self.attempt_seconds = BucketCounts(ATTEMPT_BUCKETS)
        self.ring_seconds = BucketCounts(RING_BUCKETS)
        self.cycle_seconds = BucketCounts(FAST_BUCKETS)
        self.refill_seconds = BucketCounts(FAST_BUCKETS)
        # Per job: when its ended calls freed their slots (perf_counter), oldest first, until
        # the job starts its next calls in them.
        self._freed: dict[str, deque[float]] = {}

    def attempts_ended(self, outcomes: Sequence[Outcome], results: Sequence[DialResult]) -> None:
        """Count a batch of ended attempts and how their calls ended (job-clock times: the fake
        clock in tests). A dial that never reached the provider counts as `not_placed`, one not
        made because the agent did not join as `agent_not_joined`; attempts given back placed no
        call: they took no time and never rang."""
        self.dials.update(
            [(dial_label(o, r), o.sip_code) for o, r in zip(outcomes, results, strict=True)]
        )
        placed = [o for o in outcomes if not o.give_back]
        self.attempt_seconds.observe_many(
            [max(0.0, o.ended_at - o.started_at) for o in placed if o.ended_at is not None]
        )
        self.ring_seconds.observe_many(
            [max(0.0, o.answered_at - o.started_at) for o in placed if o.answered_at is not None]
        )

    def slot_freed(self, job_id: str, at: float) -> None:
        """A call of a job that still has contacts ready ended at `at`: its slot waits."""
        freed = self._freed.get(job_id)
        if freed is None:
            freed = self._freed[job_id] = deque()
        freed.append(at)

    def slots_refilled(self, job_id: str, started: int, at: float) -> None:
        """The job started `started` calls at `at`: the slots freed first are refilled."""
        freed = self._freed.get(job_id)
        if not freed:
            return
        popleft = freed.popleft
        self.refill_seconds.observe_many([at - popleft() for _ in range(min(started, len(freed)))])

    def slots_unwanted(self, job_id: str) -> None:
        """The job has nothing ready (or is no longer dialed): its free slots wait for no one,
        and that wait is not refill latency."""
        self._freed.pop(job_id, None)

    def dialing_for(self, jobs: Container[str]) -> None:
        """Only these jobs are dialed for now: forget the slots of the others."""
        for job_id in [j for j in self._freed if j not in jobs]:
            del self._freed[job_id]


def dial_label(outcome: Outcome, result: DialResult) -> str:
    """The outcome shown for an ended dial (metrics and log): `not_placed` and
    `agent_not_joined` for the dials given back without a call, else the attempt's outcome."""
    if result.not_placed:
        return "not_placed"
    if result.agent_not_joined:
        return "agent_not_joined"
    return outcome.outcome
