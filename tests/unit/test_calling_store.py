"""The store's side of the calling rules: claims read each contact's interval, skip listed and
capped numbers, and roll an ended interval forward with the rules the engine gives."""

from __future__ import annotations

import json
from typing import Any

from dialer import windows
from storage.rows import NewContact
from storage.store import Store
from tests.unit.conftest import ORG, T0, namer, new_job, outcome_for, running_job

HOUR = 3600.0


class Rules:
    """Windows as dialer.windows reads them, and a fixed cap for every organization."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.windows = windows.Rules({})

    def daily_cap(self, organization_id: str) -> int:
        return self.cap

    def interval(
        self, windows_json: str | None, zones: str | None, at: float
    ) -> tuple[float, float | None] | None:
        return self.windows.interval(windows_json, zones, at)


def contact(phone: str, **fields: Any) -> NewContact:
    """A contact with its own interval fields."""
    return NewContact(phone=phone, data={"phone": phone}, **fields)


async def claimed_phones(store: Store, now: float, job_id: str = "job_1") -> list[str]:
    """Claim up to 10 contacts at `now`; return their phones."""
    claim = (await store.claim({job_id: 10}, now, namer))[job_id]
    return [c.phone for c in claim.contacts]


async def test_claim_reads_the_interval_and_rolls_it_when_it_ends(store: Store) -> None:
    """A contact is claimed only inside [next_call_at, call_until); once its interval ended the
    claim moves it to the next one (07:00-08:00 UTC daily) instead of dialing it."""
    store.calling_rules = Rules(cap=0)
    daily = json.dumps([{"days": list(windows.DAYS), "start": "07:00", "end": "08:00"}])
    await store.create_job(
        new_job(calling_windows=daily),
        [
            contact(
                "+12025550001", zones="UTC", next_call_at=T0 + 7 * HOUR, call_until=T0 + 8 * HOUR
            ),
            contact("+12025550002", zones="UTC", next_call_at=None, call_until=T0 + HOUR),
        ],
    )
    assert await store.start_jobs(["job_1"], ["pending"], T0) == ["job_1"]
    waiting = (await store.claim({"job_1": 10}, T0 + 2 * HOUR, namer))["job_1"]
    assert waiting.contacts == [] and waiting.short
    assert waiting.next_retry_due == T0 + 7 * HOUR  # both now wait for 07:00
    assert await claimed_phones(store, T0 + 7 * HOUR) == ["+12025550001", "+12025550002"]


async def test_claim_never_takes_a_listed_number(store: Store) -> None:
    """A number on the organization's list is skipped by the claim itself."""
    await running_job(store, [contact("+12025550001"), contact("+12025550002")])
    await store._write(
        lambda conn: conn.execute(
            "INSERT INTO dnc_numbers VALUES (?, '+12025550001', NULL, 'api', 0, NULL)", (ORG,)
        )
    )
    assert await claimed_phones(store, T0) == ["+12025550002"]


async def test_cap_defers_the_other_contacts_of_a_number(store: Store) -> None:
    """With a cap of 1, dialing a number makes its contact in another job wait 24 h from that
    dial, and that contact is claimed then."""
    store.calling_rules = Rules(cap=1)
    await running_job(store, [contact("+12025550001")], job_id="job_a")
    await running_job(store, [contact("+12025550001")], job_id="job_b")
    (first,) = (await store.claim({"job_a": 5}, T0, namer))["job_a"].contacts
    waiting = (await store.claim({"job_b": 5}, T0 + 1, namer))["job_b"]
    assert waiting.contacts == [] and waiting.next_retry_due == T0 + 24 * HOUR
    await store.record_outcomes([outcome_for(first, "completed")], T0 + 60)
    assert await claimed_phones(store, T0 + 24 * HOUR - 1, "job_b") == []
    assert await claimed_phones(store, T0 + 24 * HOUR, "job_b") == ["+12025550001"]


async def test_expiry_cancels_open_contacts_and_completes_the_job(store: Store) -> None:
    """An activation past a job's expiresAt cancels its open contacts (expired) and completes
    it; none is early."""
    await store.create_job(new_job(expires_at=T0 + HOUR), [contact("+12025550001")])
    early = await store.activate(T0 + HOUR - 1)
    assert (early.expired, early.started, early.next_expiry) == ([], ["job_1"], T0 + HOUR)
    assert [job.id for job in early.running] == ["job_1"]
    late = await store.activate(T0 + HOUR)
    assert (late.expired, late.running, late.next_expiry) == (["job_1"], [], None)
    job = await store.get_job_by_id("job_1")
    assert job is not None and (job.status, job.status_reason) == ("completed", "expired")
    (row,) = await store.list_contacts("job_1", None, 10, 0)
    assert (row.status, row.failure_reason) == ("cancelled", "expired")


async def test_activation_starts_scheduled_jobs_when_due(store: Store) -> None:
    """A scheduled job starts at its start time, not before; until then it is the next start."""
    await store.create_job(
        new_job(status="scheduled", scheduled_start_time=T0 + HOUR), [contact("+12025550001")]
    )
    early = await store.activate(T0 + HOUR - 1)
    assert (early.started, early.running, early.next_scheduled) == ([], [], T0 + HOUR)
    due = await store.activate(T0 + HOUR)
    assert (due.started, due.next_scheduled) == (["job_1"], None)
    assert [(job.id, job.status, job.actual_start_time) for job in due.running] == [
        ("job_1", "running", T0 + HOUR)
    ]
    again = await store.activate(T0 + HOUR + 1)
    assert again.started == [] and [job.id for job in again.running] == ["job_1"]


async def test_every_listing_moves_the_latest_listing_on_whatever_the_clock_says(
    store: Store,
) -> None:
    """The engine sees a listing made from outside the service (the CLI) by the latest listing
    moving on. One stamped before the latest (a clock stepped back, a CLI that waited for the
    lock behind a later one) did not move it, and contacts claimed ahead could be dialed."""
    await store.dnc_add(ORG, ["+12025550101"], None, "cli", 1000.0)
    first = await store.latest_listing()
    await store.dnc_add(ORG, ["+12025550102", "+12025550103"], None, "cli", 400.0)
    second = await store.latest_listing()
    assert first == 1000.0 and second is not None and second > first
    await store.dnc_add(ORG, ["+12025550104"], None, "cli", 2000.0)
    assert await store.latest_listing() == 2000.0  # the clock wins when it is ahead
