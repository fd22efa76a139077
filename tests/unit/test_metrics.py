"""The plain counts behind /metrics: bucket counts, the engine's attempt and slot-refill
figures, the ready-contacts count and its sampling bound."""

from __future__ import annotations

from dialer.metrics import ReadyContacts
from dialer.providers.base import DialResult
from dialer.states import ContactStatus
from dialer.stats import EngineStats
from storage import db as dbmod
from storage.connection import StorageUnavailable
from storage.latency import BucketCounts
from storage.rows import ClaimedContact
from storage.store import Store
from tests.unit.conftest import ORG, T0, namer, new_contacts, new_job, outcome_for, running_job


def test_bucket_counts_follow_le_semantics() -> None:
    """A value equal to a bound counts in that bucket; above every bound, in +Inf only."""
    counts = BucketCounts([0.5, 0.1, 1])
    for v in (0.1, 0.2, 1.0, 7.0):
        counts.observe(v)
    assert counts.cumulative() == [("0.1", 1), ("0.5", 2), ("1.0", 3), ("+Inf", 4)]
    assert (counts.count, counts.total) == (4, 8.3)


async def claimed(store: Store, n: int, now: float = T0) -> list[ClaimedContact]:
    return (await store.claim({"job_1": n}, now, namer))["job_1"].contacts


async def test_attempts_counted_by_outcome_and_sip_code_durations_from_the_claim(
    store: Store,
) -> None:
    """Dials count per (outcome, SIP code), a dial that never reached the provider apart;
    durations and ring times run from the claim; attempts given back add no duration."""
    await running_job(store, 3)
    a, b, c = await claimed(store, 3)
    stats = EngineStats()
    stats.attempts_ended(
        [
            outcome_for(a, "completed", answered_at=T0 + 3, ended_at=T0 + 40),
            outcome_for(b, "busy", sip_code=486, ended_at=T0 + 5),
            outcome_for(c, "failed", next_status="pending", give_back=True, ended_at=T0 + 1),
            outcome_for(c, "failed", next_status="pending", give_back=True, ended_at=T0 + 1),
        ],
        [
            DialResult(ContactStatus.COMPLETED),
            DialResult(ContactStatus.BUSY, sip_code=486),
            DialResult(ContactStatus.FAILED, not_placed=True),
            DialResult(ContactStatus.FAILED, job_fatal=True),
        ],
    )
    assert stats.dials == {
        ("completed", None): 1,
        ("busy", 486): 1,
        ("not_placed", None): 1,
        ("failed", None): 1,
    }
    assert (stats.attempt_seconds.count, stats.attempt_seconds.total) == (2, 45.0)
    assert (stats.ring_seconds.count, stats.ring_seconds.total) == (1, 3.0)


def test_slot_refill_is_measured_oldest_slot_first_and_only_while_contacts_wait() -> None:
    """Refills pair with the slots freed first; slots no contact waits for are forgotten."""
    stats = EngineStats()
    stats.slot_freed("j1", 10.0)
    stats.slot_freed("j1", 10.5)
    stats.slot_freed("j2", 10.0)
    stats.slots_refilled("j1", 1, 10.002)
    assert (stats.refill_seconds.count, round(stats.refill_seconds.total, 6)) == (1, 0.002)
    stats.slots_refilled("j1", 5, 10.6)  # more calls than freed slots: only the freed one
    assert (stats.refill_seconds.count, round(stats.refill_seconds.total, 6)) == (2, 0.102)
    stats.slots_unwanted("j2")  # nothing ready: its slot's wait is no refill latency
    stats.slots_refilled("j2", 1, 99.0)
    stats.slot_freed("j3", 1.0)
    stats.dialing_for({"j1"})  # j3 is no longer dialed for
    stats.slots_refilled("j3", 1, 99.0)
    assert stats.refill_seconds.count == 2


async def test_contacts_ready_counts_pending_and_due_retries_of_running_jobs(
    store: Store,
) -> None:
    """Pending contacts and queued ones whose retry is due, per organization, in running jobs
    only; due retries counted up to the bound given."""
    await running_job(store, 5)
    await store.create_job(new_job("job_2"), new_contacts(4))  # not running: not counted
    a, b = await claimed(store, 2)
    await store.record_outcomes(
        [
            outcome_for(a, "busy", "queued", next_retry_at=T0 + 100),
            outcome_for(b, "busy", "queued", next_retry_at=T0 + 10),
        ],
        T0 + 5,
    )
    assert await store.contacts_ready(T0 + 50, 1000) == {ORG: 3 + 1}
    assert await store.contacts_ready(T0 + 200, 1000) == {ORG: 5}
    assert await store.contacts_ready(T0 + 200, 1) == {ORG: 4}


class CountingStore:
    """Stands in for the store: counts samples, fails while `down`."""

    def __init__(self) -> None:
        self.samples = 0
        self.down = False

    async def contacts_ready(self, now: float, most_per_job: int) -> dict[str, int]:
        if self.down:
            raise StorageUnavailable("OperationalError: disk I/O error")
        self.samples += 1
        return {ORG: self.samples}


async def test_ready_contacts_are_sampled_at_most_once_per_interval() -> None:
    """Scrapes within the interval reuse the sample; a failing sample keeps the last one."""
    wall = [0.0]
    ready = ReadyContacts(ttl_seconds=5.0, monotonic=lambda: wall[0])
    store = CountingStore()
    for _ in range(3):
        await ready.refresh(store, T0)  # type: ignore[arg-type]
    assert (store.samples, ready.by_org) == (1, {ORG: 1})
    wall[0] = 5.0
    await ready.refresh(store, T0)  # type: ignore[arg-type]
    assert ready.by_org == {ORG: 2}
    wall[0] = 10.0
    store.down = True
    await ready.refresh(store, T0)  # type: ignore[arg-type]
    assert ready.by_org == {ORG: 2}
    store.down = False
    await ready.refresh(store, T0)  # type: ignore[arg-type]
    assert ready.by_org == {ORG: 3}


async def test_contacts_ready_reads_indexes_not_the_contacts_table(store: Store) -> None:
    """The count's plan searches the kept counts and the queued-due index: no scan of contacts."""
    await running_job(store, 3)
    plan = await store._read(
        lambda conn: [
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + dbmod.queries()["contacts_ready"],
                {"now": T0, "most": 10},
            )
        ]
    )
    assert not [step for step in plan if step.startswith("SCAN") and "contacts" in step], plan
    assert any("contacts_queued_due" in step for step in plan), plan
