"""The Store on a real (temporary) SQLite file: jobs, claims, outcomes, cancel, API keys."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import errno
import io
import json
import os
import sqlite3
import threading

import pytest

from api.batch import contact_json, job_summary
from dialer import export
from storage import db as dbmod
from storage.connection import StorageUnavailable
from storage.db import StorageError, TransitionError
from storage.dialing import prepare_scratch
from storage.rows import (
    ApiKeyRow,
    ClaimedContact,
    ContactRow,
    JobDetailRow,
    JobVerdict,
    NewContact,
    Outcome,
)
from storage.store import Store
from tests.unit.conftest import (
    ORG,
    T0,
    namer,
    new_contacts,
    new_job,
    outcome_for,
    phones,
    running_job,
)


async def contacts_of(store: Store, job_id: str = "job_1") -> list[ContactRow]:
    """All contacts of a job in upload order."""
    return await store.list_contacts(job_id, None, 1000, 0)


async def nonzero_counts(store: Store, job_id: str = "job_1") -> dict[str, int]:
    """The job's status breakdown, checked to sum to total_contacts, without the zero entries."""
    counts = await store.status_counts(job_id)
    job = await store.get_job_by_id(job_id)
    assert job is not None
    assert sum(counts.values()) == job.total_contacts
    return {status: n for status, n in counts.items() if n}


async def claim(
    store: Store, limit: int, now: float = T0, job_id: str = "job_1"
) -> list[ClaimedContact]:
    """Claim up to `limit` contacts of the job with the deterministic room namer."""
    return (await store.claim({job_id: limit}, now, namer))[job_id].contacts


async def record(
    store: Store, *outcomes: Outcome, now: float = T0 + 60
) -> tuple[list[str], list[Outcome]]:
    """Record outcomes in one group commit; return (completed jobs, refused outcomes)."""
    return await store.record_outcomes(outcomes, now)


# ------------------------------------------------------------------ create


async def test_create_job_stores_job_and_contacts_in_upload_order(store: Store) -> None:
    """A created job has its fields, total and contacts (pending, data intact) in upload order."""
    items = [
        NewContact("+12025550101", {"phone": "+12025550101", "name": "Zoë 😀"}),
        *new_contacts(2),
    ]
    await store.create_job(new_job(description="d"), items)
    job = await store.get_job(ORG, "job_1")
    assert job is not None
    assert (job.status, job.total_contacts, job.description) == ("pending", 3, "d")
    assert job.retry_statuses == ("no_answer", "busy", "timeout", "carrier_error")
    contacts = await contacts_of(store)
    assert [c.phone for c in contacts] == [i.phone for i in items]
    assert [c.seq for c in contacts] == [1, 2, 3]
    assert contacts[0].contact_data == {"phone": "+12025550101", "name": "Zoë 😀"}
    assert {(c.status, c.attempt_count, c.max_attempts) for c in contacts} == {("pending", 0, 3)}


async def test_new_job_breakdown_lists_every_status(store: Store) -> None:
    """The breakdown of a new job has an entry for every contact status, pending = total."""
    await store.create_job(new_job(), new_contacts(4))
    counts = await store.status_counts("job_1")
    assert len(counts) == 12
    assert await nonzero_counts(store) == {"pending": 4}


async def test_job_of_another_organization_is_not_found(store: Store) -> None:
    """get_job is scoped to the organization."""
    await store.create_job(new_job(), new_contacts(1))
    assert await store.get_job("org_other", "job_1") is None


# ------------------------------------------------------------------ claim


async def test_claim_marks_dialing_and_writes_attempt_rows(store: Store) -> None:
    """A claim moves contacts to dialing, counts the attempt and writes its row before any dial."""
    await running_job(store, 3)
    claimed = await claim(store, 2, now=T0 + 5)
    assert [(c.seq, c.attempt_no, c.started_at) for c in claimed] == [
        (1, 1, T0 + 5),
        (2, 1, T0 + 5),
    ]
    assert [c.room_name for c in claimed] == [namer("job_1", c.id, 1) for c in claimed]
    contacts = await contacts_of(store)
    assert [(c.status, c.attempt_count) for c in contacts] == [
        ("dialing", 1),
        ("dialing", 1),
        ("pending", 0),
    ]
    assert contacts[0].last_attempt_at == T0 + 5
    assert contacts[0].room_name == claimed[0].room_name
    attempts = await store.list_attempts(claimed[0].id)
    assert [(a.attempt_no, a.room_name, a.started_at, a.outcome) for a in attempts] == [
        (1, claimed[0].room_name, T0 + 5, None)
    ]
    assert await nonzero_counts(store) == {"dialing": 2, "pending": 1}


async def test_claim_respects_limit_and_stops_when_nothing_is_ready(store: Store) -> None:
    """Claims take at most `limit`, in upload order, and nothing once all are dialing."""
    await running_job(store, 3)
    assert await claim(store, 0) == []
    assert [c.seq for c in await claim(store, 1)] == [1]
    assert [c.seq for c in await claim(store, 5)] == [2, 3]
    assert await claim(store, 5) == []


async def test_claimed_contacts_are_left_for_reconciliation(store: Store) -> None:
    """dialing_contacts lists what is live with its room and start, as a restart needs it."""
    await running_job(store, 2)
    claimed = await claim(store, 1)
    assert await store.dialing_contacts() == claimed


async def test_claim_takes_due_retries_before_fresh_contacts(store: Store) -> None:
    """Due retries go first (earliest due first), then fresh contacts; retries not due wait."""
    await running_job(store, 4)
    first, second = await claim(store, 2)
    await record(
        store,
        outcome_for(first, "no_answer", "queued", next_retry_at=T0 + 400),
        outcome_for(second, "busy", "queued", next_retry_at=T0 + 300),
    )
    assert [c.seq for c in await claim(store, 1, now=T0 + 100)] == [3]  # no retry due yet
    retry = await claim(store, 1, now=T0 + 500)
    assert [(c.seq, c.attempt_no) for c in retry] == [(2, 2)]  # due earlier than seq 1
    assert [(c.seq, c.attempt_no) for c in await claim(store, 2, now=T0 + 500)] == [(1, 2), (4, 1)]
    nothing = (await store.claim({"job_1": 1}, T0 + 500, namer))["job_1"]
    assert (nothing.short, nothing.next_retry_due, nothing.completed) == (True, None, False)


async def test_claim_for_a_job_that_is_not_running_claims_nothing(store: Store) -> None:
    """A job that has not been started has its contacts left alone."""
    await store.create_job(new_job(), new_contacts(2))
    assert await claim(store, 2) == []
    assert await nonzero_counts(store) == {"pending": 2}


# ------------------------------------------------------------------ outcomes


async def test_final_outcome_is_recorded_on_contact_and_attempt(store: Store) -> None:
    """A completed call closes the contact and its attempt row with every call fact."""
    await running_job(store, 2)
    (claimed,) = await claim(store, 1)
    done = outcome_for(
        claimed, "completed", sip_code=200, answered_at=T0 + 3, ended_at=T0 + 45, duration=42
    )
    assert await record(store, done) == ([], [])
    (contact, _) = await contacts_of(store)
    assert (contact.status, contact.completed_at, contact.call_duration) == (
        "completed",
        T0 + 45,
        42,
    )
    assert contact.error_code == "200"
    (attempt,) = await store.list_attempts(claimed.id)
    assert (
        attempt.outcome,
        attempt.sip_code,
        attempt.answered_at,
        attempt.ended_at,
        attempt.duration,
    ) == (
        "completed",
        200,
        T0 + 3,
        T0 + 45,
        42,
    )


async def test_retry_outcome_queues_contact_and_keeps_history(store: Store) -> None:
    """A retried outcome queues the contact with nextRetryAt; its attempt row keeps the outcome."""
    await running_job(store, 1)
    (claimed,) = await claim(store, 1)
    await record(
        store, outcome_for(claimed, "busy", "queued", next_retry_at=T0 + 300, sip_code=486)
    )
    (contact,) = await contacts_of(store)
    assert (contact.status, contact.next_retry_at, contact.completed_at) == (
        "queued",
        T0 + 300,
        None,
    )
    (again,) = await claim(store, 1, now=T0 + 300)
    await record(store, outcome_for(again, "completed"))
    attempts = await store.list_attempts(claimed.id)
    assert [(a.attempt_no, a.outcome, a.sip_code) for a in attempts] == [
        (1, "busy", 486),
        (2, "completed", None),
    ]


async def test_outcome_for_contact_not_dialing_is_refused(store: Store) -> None:
    """An outcome for a contact that was never claimed is refused and changes nothing."""
    await running_job(store, 2)
    (claimed,) = await claim(store, 1)
    ghost = outcome_for(claimed, "completed", contact_id=claimed.id + 1)
    assert await record(store, ghost) == ([], [ghost])
    assert [c.status for c in await contacts_of(store)] == ["dialing", "pending"]


async def test_outcome_for_another_attempt_is_refused(store: Store) -> None:
    """An outcome naming an attempt other than the live one is refused."""
    await running_job(store, 1)
    (claimed,) = await claim(store, 1)
    stale = outcome_for(claimed, "busy", attempt_no=claimed.attempt_no + 1)
    assert (await record(store, stale))[1] == [stale]
    (contact,) = await contacts_of(store)
    assert contact.status == "dialing"
    assert [a.outcome for a in await store.list_attempts(claimed.id)] == [None]


async def test_second_outcome_never_overwrites_the_first(store: Store) -> None:
    """Recording an attempt twice refuses the second; contact and attempt keep the first."""
    await running_job(store, 1)
    (claimed,) = await claim(store, 1)
    await record(store, outcome_for(claimed, "no_answer", sip_code=480))
    late = outcome_for(claimed, "completed", sip_code=200)
    assert (await record(store, late))[1] == [late]
    (contact,) = await contacts_of(store)
    assert (contact.status, contact.error_code) == ("no_answer", "480")
    assert [(a.outcome, a.sip_code) for a in await store.list_attempts(claimed.id)] == [
        ("no_answer", 480)
    ]


async def test_refused_outcome_does_not_block_the_rest_of_the_batch(store: Store) -> None:
    """In one group commit, a refused outcome is reported while the others are recorded."""
    await running_job(store, 2)
    a, b = await claim(store, 2)
    bad = outcome_for(a, "busy", attempt_no=7)
    assert (await record(store, bad, outcome_for(b, "completed")))[1] == [bad]
    assert [c.status for c in await contacts_of(store)] == ["dialing", "completed"]


async def test_counts_add_up_through_every_transition(store: Store) -> None:
    """Through claims, retries and final outcomes the breakdown always sums to the total."""
    await running_job(store, 5)
    assert await nonzero_counts(store) == {"pending": 5}
    c1, c2, c3 = await claim(store, 3)
    assert await nonzero_counts(store) == {"pending": 2, "dialing": 3}
    await record(
        store,
        outcome_for(c1, "completed"),
        outcome_for(c2, "no_answer", "queued", next_retry_at=T0 + 10),
        outcome_for(c3, "invalid_number"),
    )
    assert await nonzero_counts(store) == {
        "pending": 2,
        "completed": 1,
        "queued": 1,
        "invalid_number": 1,
    }
    await claim(store, 3, now=T0 + 10)
    assert await nonzero_counts(store) == {"dialing": 3, "completed": 1, "invalid_number": 1}


async def test_spend_is_added_per_organization(store: Store) -> None:
    """Charged amounts of recorded attempts add up in the organization's spend."""
    await running_job(store, 2)
    a, b = await claim(store, 2)
    await record(
        store,
        outcome_for(a, "completed", charged_usd=0.25),
        outcome_for(b, "completed", charged_usd=0.5),
    )
    assert await store.organization_spend(ORG) == pytest.approx(0.75)
    assert await store.organization_spend("org_other") == 0.0


# ------------------------------------------------------------------ give back


async def test_give_back_returns_the_attempt(store: Store) -> None:
    """A dial that never reached the provider does not count: attempt_count goes back down and
    its attempt row goes."""
    await running_job(store, 1)
    (claimed,) = await claim(store, 1)
    back = outcome_for(claimed, "failed", "queued", next_retry_at=T0 + 10, give_back=True)
    assert await record(store, back) == ([], [])
    (contact,) = await contacts_of(store)
    assert (contact.status, contact.attempt_count, contact.next_retry_at) == ("queued", 0, T0 + 10)
    assert await store.list_attempts(claimed.id) == []  # no dial was sent: no attempt row
    (again,) = await claim(store, 1, now=T0 + 10)
    assert again.attempt_no == 1
    attempts = await store.list_attempts(claimed.id)
    assert [(a.attempt_no, a.outcome) for a in attempts] == [(1, None)]


async def test_give_back_of_a_retry_shows_the_previous_attempt_again(store: Store) -> None:
    """The contact's last attempt and room are its previous attempt's again (none before the
    first: see test_give_back_returns_the_attempt)."""
    await running_job(store, 1)
    (first,) = await claim(store, 1)
    await record(store, outcome_for(first, "busy", "queued", next_retry_at=T0 + 10))
    (second,) = await claim(store, 1, now=T0 + 10)
    assert second.attempt_no == 2
    back = outcome_for(second, "failed", "queued", next_retry_at=T0 + 20, give_back=True)
    await record(store, back, now=T0 + 11)
    (contact,) = await contacts_of(store)
    assert (contact.attempt_count, contact.last_attempt_at, contact.room_name) == (
        1,
        first.started_at,
        first.room_name,
    )


# ------------------------------------------------------------------ cancel


async def test_cancel_cancels_pending_and_queued_but_not_dialing(store: Store) -> None:
    """Cancel ends pending/queued contacts; a live call stays dialing and its outcome is kept."""
    await running_job(store, 4)
    live, retrying = await claim(store, 2)
    await record(store, outcome_for(retrying, "busy", "queued", next_retry_at=T0 + 300))
    assert await store.cancel_job(ORG, "job_1", T0 + 100) == 3
    job = await store.get_job(ORG, "job_1")
    assert job is not None and (job.status, job.completed_at) == ("cancelled", T0 + 100)
    assert [c.status for c in await contacts_of(store)] == [
        "dialing",
        "cancelled",
        "cancelled",
        "cancelled",
    ]
    assert await nonzero_counts(store) == {"dialing": 1, "cancelled": 3}
    assert await claim(store, 5, now=T0 + 400) == []
    assert await record(store, outcome_for(live, "completed")) == ([], [])
    assert await nonzero_counts(store) == {"completed": 1, "cancelled": 3}
    job = await store.get_job(ORG, "job_1")
    assert job is not None and job.status == "cancelled"


async def test_second_cancel_raises_transition_error(store: Store) -> None:
    """Cancelling an already cancelled job is a TransitionError, not a silent success."""
    await running_job(store, 1)
    await store.cancel_job(ORG, "job_1", T0)
    with pytest.raises(TransitionError):
        await store.cancel_job(ORG, "job_1", T0 + 1)


async def test_cancel_by_another_organization_changes_nothing(store: Store) -> None:
    """Another organization cannot cancel the job."""
    await running_job(store, 1)
    with pytest.raises(TransitionError):
        await store.cancel_job("org_other", "job_1", T0)
    assert await nonzero_counts(store) == {"pending": 1}


async def test_retry_decided_after_cancel_becomes_the_final_outcome(store: Store) -> None:
    """A live call whose job was cancelled is not queued again: its outcome is final."""
    await running_job(store, 2)
    (claimed,) = await claim(store, 1)
    await store.cancel_job(ORG, "job_1", T0 + 10)
    await record(
        store, outcome_for(claimed, "no_answer", "queued", next_retry_at=T0 + 300, ended_at=T0 + 30)
    )
    contact = (await contacts_of(store))[0]
    assert (contact.status, contact.next_retry_at, contact.completed_at) == (
        "no_answer",
        None,
        T0 + 30,
    )
    assert await nonzero_counts(store) == {"no_answer": 1, "cancelled": 1}


async def test_give_back_after_cancel_cancels_the_contact(store: Store) -> None:
    """A dial that never happened for a cancelled job leaves the contact cancelled, uncounted."""
    await running_job(store, 1)
    (claimed,) = await claim(store, 1)
    await store.cancel_job(ORG, "job_1", T0 + 10)
    await record(
        store, outcome_for(claimed, "failed", "queued", next_retry_at=T0 + 20, give_back=True)
    )
    (contact,) = await contacts_of(store)
    assert (contact.status, contact.attempt_count, contact.next_retry_at) == ("cancelled", 0, None)


# ------------------------------------------------------------------ completion


async def test_job_completes_when_its_last_open_contact_closes(store: Store) -> None:
    """The job is completed by the outcome that closes its last contact, and only then."""
    await running_job(store, 2)
    a, b = await claim(store, 2)
    assert not (await store.claim({"job_1": 1}, T0 + 1, namer))["job_1"].completed
    assert await record(store, outcome_for(a, "completed"), now=T0 + 50) == ([], [])
    assert await record(store, outcome_for(b, "blocked"), now=T0 + 70) == (["job_1"], [])
    job = await store.get_job(ORG, "job_1")
    assert job is not None and (job.status, job.completed_at) == ("completed", T0 + 70)
    assert not (await store.claim({"job_1": 1}, T0 + 80, namer))["job_1"].completed


async def test_queued_retry_keeps_the_job_open(store: Store) -> None:
    """A contact waiting for its retry keeps the job running."""
    await running_job(store, 1)
    (claimed,) = await claim(store, 1)
    assert await record(store, outcome_for(claimed, "busy", "queued", next_retry_at=T0 + 300)) == (
        [],
        [],
    )
    waiting = (await store.claim({"job_1": 1}, T0 + 100, namer))["job_1"]
    assert (waiting.next_retry_due, waiting.completed) == (T0 + 300, False)
    job = await store.get_job(ORG, "job_1")
    assert job is not None and job.status == "running"


async def test_claim_only_completes_running_jobs_with_nothing_open(store: Store) -> None:
    """A claim completes only a running job without pending/queued/dialing contacts, once."""
    await store.create_job(new_job("empty_running", status="running"), [])
    await store.create_job(new_job("empty_pending"), [])
    await running_job(store, 1, job_id="open_running")
    jobs = ["empty_running", "empty_pending", "open_running"]

    async def completed(now: float) -> list[str]:
        claims = await store.claim(dict.fromkeys(jobs, 1), now, namer)
        return [j for j in jobs if claims[j].completed]

    assert await completed(T0 + 5) == ["empty_running"]
    job = await store.get_job(ORG, "empty_running")
    assert job is not None and (job.status, job.completed_at) == ("completed", T0 + 5)
    assert await completed(T0 + 6) == []  # open_running's contact is dialing now


# ------------------------------------------------------------------ api keys


def api_key(key_id: str, org: str = ORG) -> ApiKeyRow:
    """An unrevoked API key row whose hash is derived from its id."""
    return ApiKeyRow(key_id, org, f"hash-{key_id}", "dk_abc", None, T0, None)


async def test_api_keys_insert_find_revoke(store: Store) -> None:
    """A key is found by its hash until revoked; revoking twice reports False."""
    await store.insert_api_key(api_key("k1"))
    assert await store.find_api_key("hash-k1") == api_key("k1")
    assert await store.find_api_key("hash-unknown") is None
    assert await store.revoke_api_key("k1", T0 + 5) is True
    assert await store.find_api_key("hash-k1") is None
    assert await store.revoke_api_key("k1", T0 + 6) is False
    (listed,) = await store.list_api_keys(ORG)
    assert listed.revoked_at == T0 + 5


async def test_api_keys_are_listed_per_organization(store: Store) -> None:
    """list_api_keys filters by organization, or lists all with None."""
    for key in (api_key("k1"), api_key("k2", "org_b"), api_key("k3")):
        await store.insert_api_key(key)
    assert [k.id for k in await store.list_api_keys(ORG)] == ["k1", "k3"]
    assert [k.id for k in await store.list_api_keys(None)] == ["k1", "k2", "k3"]


async def test_closed_store_refuses_work(store: Store) -> None:
    """After close, calls fail with StorageError instead of touching a closed connection."""
    await store.close()
    with pytest.raises(StorageError, match="closed"):
        await store.status_counts("job_1")


# ------------------------------------------------------------------ claims over several jobs


async def test_one_claim_serves_several_jobs(store: Store) -> None:
    """One claim transaction takes contacts of several jobs, each within its own limit."""
    await running_job(store, 3, job_id="job_a")
    others = [NewContact(phone=p, data={"phone": p}) for p in phones(2, start=100)]
    await running_job(store, others, job_id="job_b")
    claims = await store.claim({"job_a": 2, "job_b": 5}, T0, namer)
    assert [c.seq for c in claims["job_a"].contacts] == [1, 2]
    assert not claims["job_a"].short
    assert [c.seq for c in claims["job_b"].contacts] == [1, 2]
    assert claims["job_b"].short and claims["job_b"].next_retry_due is None
    assert not claims["job_b"].completed  # its two contacts are dialing
    assert {c.job_id for c in claims["job_b"].contacts} == {"job_b"}


async def test_short_claim_reports_the_next_retry_or_completes_the_job(store: Store) -> None:
    """A job with nothing ready says when its next retry is due; with nothing open it completes."""
    await running_job(store, 1)
    (contact,) = await claim(store, 1)
    await record(store, outcome_for(contact, "busy", "queued", next_retry_at=T0 + 300))
    waiting = (await store.claim({"job_1": 5}, T0 + 10, namer))["job_1"]
    assert (waiting.contacts, waiting.short, waiting.next_retry_due) == ([], True, T0 + 300)
    assert not waiting.completed
    (again,) = await claim(store, 1, now=T0 + 300)
    assert again.attempt_no == 2
    await record(store, outcome_for(again, "completed"))
    job = await store.get_job_by_id("job_1")
    assert job is not None and job.status == "completed"


# ------------------------------------------------------------------ rendering


async def test_contact_pages_rendered_by_sql_match_contact_json(store: Store) -> None:
    """The detail route's contact pages, rendered by SQLite, equal api.batch.contact_json."""
    hostile = {"phone": "+12025550000", "name": 'Zoë "quoted" \\ <b>', "n": 1.5, "z": None}
    contacts = [NewContact(phone=hostile["phone"], data=hostile), *new_contacts(4)[1:]]
    await running_job(store, contacts)
    first, second, third = await claim(store, 3, now=T0 + 0.9996)  # rounds up to the next second
    await record(
        store,
        outcome_for(first, "completed", duration=42, ended_at=T0 + 61.5),
        outcome_for(
            second, "busy", "queued", next_retry_at=T0 + 300.25, sip_code=486, reason="Busy Here"
        ),
        now=T0 + 62.0004,
    )
    for status in (None, "completed", "queued", "dialing", "pending"):
        detail = await store.job_detail(ORG, "job_1", status, 50, 0)
        assert detail is not None
        rows = await store.list_contacts("job_1", status, 50, 0)
        assert rows, status
        assert json.loads(detail.contacts_json) == [contact_json(c) for c in rows], status
    assert third.attempt_no == 1
    empty = await store.job_detail(ORG, "job_1", "cancelled", 50, 0)
    assert empty is not None and json.loads(empty.contacts_json) == []
    beyond = await store.job_detail(ORG, "job_1", None, 50, 50)
    assert beyond is not None and json.loads(beyond.contacts_json) == []


async def test_repeated_small_reads_are_kept_until_a_commit_or_a_wait_ends(store: Store) -> None:
    """A detail or list read repeated with nothing committed meanwhile is answered from what was
    kept (a dashboard polling between two engine cycles); a commit by any connection, or a
    contact's nextCallAt passing, makes it read again; another organization never gets it."""
    await running_job(store)
    (first,) = await claim(store, 1)
    retry_at = T0 + 300
    await record(store, outcome_for(first, "busy", "queued", next_retry_at=retry_at, sip_code=486))

    async def detail(now: float) -> JobDetailRow:
        found = await store.job_detail(ORG, "job_1", None, 50, 0, now)
        assert found is not None
        return found

    def next_call_at(found: JobDetailRow) -> str | None:
        at: str | None = json.loads(found.contacts_json)[0]["nextCallAt"]
        return at

    shown = await detail(T0 + 100)
    assert next_call_at(shown) == "2026-01-01T00:05:00Z"
    hits = store.kept_hits
    assert await detail(T0 + 200) == shown
    assert store.kept_hits == hits + 1
    # Time alone: once the retry is due, the page no longer shows it waiting.
    due = await detail(retry_at)
    assert next_call_at(due) is None and store.kept_hits == hits + 1
    assert await store.job_detail("org_other", "job_1", None, 50, 0, retry_at) is None
    # A write through the writer connection: the next read sees it.
    await store.cancel_job(ORG, "job_1", retry_at + 1)
    cancelled = await detail(retry_at + 2)
    assert cancelled.job.status == "cancelled" and store.kept_hits == hits + 1

    page, total = await store.list_jobs_json(ORG, None, 20, 0)
    assert (await store.list_jobs_json(ORG, None, 20, 0)) == (page, total)
    assert store.kept_hits == hits + 2
    await store.create_job(new_job("job_2"), new_contacts(1))
    page, total = await store.list_jobs_json(ORG, None, 20, 0)
    assert total == 2 and [j["id"] for j in json.loads(page)] == ["job_2", "job_1"]
    assert await store.list_jobs_json("org_other", None, 20, 0) == ("[]", 0)


async def test_kept_answers_are_bounded_in_size(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer over the size for one is never kept (a page of large contacts could be
    megabytes); the answers kept stay within the size for all, the least recently used going
    first."""
    from storage import store as storemod

    await running_job(store, 30)
    one_page = await store.job_detail(ORG, "job_1", None, 10, 0)
    assert one_page is not None
    page_chars = len(one_page.contacts_json)
    monkeypatch.setattr(storemod, "KEPT_ANSWER_CHARS", page_chars - 1)
    hits = store.kept_hits
    await store.job_detail(ORG, "job_1", None, 10, 10)
    await store.job_detail(ORG, "job_1", None, 10, 10)
    assert store.kept_hits == hits  # too big to keep
    monkeypatch.setattr(storemod, "KEPT_ANSWER_CHARS", 10 * page_chars)
    monkeypatch.setattr(storemod, "KEPT_TOTAL_CHARS", 2 * page_chars + page_chars // 2)
    store._kept.clear()
    store._kept_chars = 0
    for offset in (0, 10, 20):
        await store.job_detail(ORG, "job_1", None, 10, offset)
    assert len(store._kept) == 2 and store._kept_chars <= storemod.KEPT_TOTAL_CHARS
    await store.job_detail(ORG, "job_1", None, 10, 20)  # kept: the latest
    assert store.kept_hits == hits + 1
    await store.job_detail(ORG, "job_1", None, 10, 0)  # gone: the least recently used
    assert store.kept_hits == hits + 1


async def test_a_small_cycle_is_written_on_the_loops_connection_and_read_back(
    store: Store,
) -> None:
    """A small cycle commits at once on the event loop's own connection (no hop to the
    writer's thread); the other connections, and the reads kept for repeats, see it."""
    await running_job(store, 4)
    kept = await store.job_detail(ORG, "job_1", None, 50, 0)
    assert kept is not None and kept.counts.get("dialing", 0) == 0
    before = store.write_seconds.count
    result = await store.cycle((), (), {"job_1": 2}, T0, namer, here=True)
    assert len(result.claims["job_1"].contacts) == 2
    assert store._inline_writes == 1 and store.write_seconds.count == before + 1
    assert (await nonzero_counts(store))["dialing"] == 2  # read on the writer's connection
    seen = await store.job_detail(ORG, "job_1", None, 50, 0)
    assert seen is not None and seen.counts["dialing"] == 2  # not the kept answer


async def test_every_few_small_cycles_one_goes_to_the_writer_which_checkpoints(
    store: Store,
) -> None:
    """The loop's connection never checkpoints the write-ahead log (that would hold the event
    loop for a disk flush): after INLINE_RUN small cycles in a row the next one goes to the
    writer, whose commits checkpoint it, and the run starts again."""
    from storage import store as storemod

    await running_job(store, 200)
    assert store._inline is not None
    assert store._inline.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    claimed = (await store.cycle((), (), {"job_1": 1}, T0, namer, here=True)).claims
    for i in range(storemod.INLINE_RUN + 1):
        outcomes = [outcome_for(c, "completed") for c in claimed["job_1"].contacts]
        result = await store.cycle(outcomes, (), {"job_1": 1}, T0 + i, namer, here=True)
        claimed = result.claims
    # INLINE_RUN on the loop's connection, then one on the writer, then one more here.
    assert store._inline_writes == storemod.INLINE_RUN + 1
    assert (await nonzero_counts(store))["completed"] == storemod.INLINE_RUN + 1


async def test_a_small_cycle_goes_to_the_writer_when_the_lock_is_taken(store: Store) -> None:
    """Another connection holding the write lock: the small cycle is handed to the writer,
    which waits for the lock as every write does, and commits once it is free."""
    await running_job(store, 4)
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    cycle = asyncio.ensure_future(store.cycle((), (), {"job_1": 2}, T0, namer, here=True))
    for _ in range(5):  # turns of the loop, not time: written here, it would be done
        await asyncio.sleep(0)
    assert not cycle.done()  # waiting for the lock on the writer's thread
    holder.execute("COMMIT")
    holder.close()
    assert len((await cycle).claims["job_1"].contacts) == 2
    assert store._inline_writes == 0


async def test_a_small_cycle_that_fails_on_the_loops_connection_is_a_storage_failure(
    store: Store,
) -> None:
    """An error of SQLite's half way through the transaction (here: its scratch table gone)
    rolls it back whole and is reported as the writer's would be: StorageUnavailable, counted,
    the engine's callback told; the next cycle succeeds."""
    await running_job(store, 4)
    told: list[bool] = []
    store.on_write_failed = lambda: told.append(True)
    assert store._inline is not None
    store._inline.execute("DROP TABLE temp.claim_batch")
    with pytest.raises(StorageUnavailable, match="claim_batch"):
        await store.cycle((), (), {"job_1": 2}, T0, namer, here=True)
    assert told == [True] and store.write_failures == 1 and store.last_write_error
    assert await nonzero_counts(store) == {"pending": 4}  # nothing of it was kept
    assert not store._inline.in_transaction
    prepare_scratch(store._inline)
    result = await store.cycle((), (), {"job_1": 2}, T0, namer, here=True)
    assert len(result.claims["job_1"].contacts) == 2 and store.last_write_error is None


async def test_the_loops_commits_are_flushed_by_a_thread_while_the_loop_runs_on(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop's connection commits into the system's cache (synchronous = NORMAL; the
    writer's stays FULL) and a thread flushes the log: the event loop runs on meanwhile (a
    disk that stalls a flush for a second stalls no request), and the cycle returns, so the
    engine starts its claimed calls, only once the flush is done."""
    from storage import store as storemod

    await running_job(store, 4)
    assert store._inline is not None and store._writer is not None
    assert store._inline.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    writer_sync = await store._writer.call(lambda c: c.execute("PRAGMA synchronous").fetchone())
    assert writer_sync[0] == 2  # FULL
    release = threading.Event()
    flushed_on: list[str] = []

    def slow_flush(fd: int) -> None:
        assert release.wait(10)
        flushed_on.append(threading.current_thread().name)
        os.fsync(fd)

    monkeypatch.setattr(storemod, "flush_file", slow_flush)
    cycle = asyncio.ensure_future(store.cycle((), (), {"job_1": 2}, T0, namer, here=True))
    turns = 0
    while turns < 20:  # the loop turns while the flush waits
        await asyncio.sleep(0)
        turns += 1
    assert not cycle.done() and not flushed_on
    assert (await nonzero_counts(store))["dialing"] == 2  # committed, not yet returned
    release.set()
    result = await cycle
    assert len(result.claims["job_1"].contacts) == 2
    assert len(flushed_on) == 1 and flushed_on[0].startswith("wal-flush")
    assert store._inline_writes == 1 and store.last_write_error is None


async def test_a_flush_that_fails_refuses_every_write_after_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush of the log that fails means the disk may have dropped what was written (Linux
    may forget the failed pages): the cycle is a storage failure, and every write is refused
    from then on, until a restart reconciles what was left dialing."""
    from storage import store as storemod

    await running_job(store, 4)
    told: list[bool] = []
    store.on_write_failed = lambda: told.append(True)

    def failing_flush(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(storemod, "flush_file", failing_flush)
    with pytest.raises(StorageUnavailable, match="failed to flush"):
        await store.cycle((), (), {"job_1": 2}, T0, namer, here=True)
    assert told == [True] and store.write_failures == 1
    assert store.lost is not None and "Input/output error" in store.lost
    assert store.storage_problem == store.lost
    with pytest.raises(StorageUnavailable):
        await store.cycle((), (), {"job_1": 1}, T0, namer, here=True)
    with pytest.raises(StorageUnavailable):
        await store.probe(T0)


async def test_job_pages_rendered_by_sql_match_job_summary(store: Store) -> None:
    """The list route's job pages, rendered by SQLite, equal api.batch.job_summary."""
    await store.create_job(new_job("pending", description='d\\n "q" ✓'), new_contacts(2))
    await store.create_job(
        new_job("scheduled", status="scheduled", scheduled_start_time=T0 + 3600.9996),
        new_contacts(1),
    )
    await running_job(store, 4, job_id="running")
    first, second = await claim(store, 2, now=T0 + 5.25, job_id="running")
    await record(
        store,
        outcome_for(first, "completed", duration=30),
        outcome_for(second, "busy", sip_code=486),
        now=T0 + 40.5,
    )
    await running_job(store, 1, job_id="paused")
    assert (await store.pause_job("paused", "Automatic pause: 9 of 10", T0 + 7, ["running"]))[0]
    await running_job(store, 1, job_id="failed")
    failed = await store.cycle(
        (), [JobVerdict("failed", "failed", "bad credentials")], {}, T0 + 8, namer
    )
    assert failed.verdicts == [JobVerdict("failed", "failed", "bad credentials")]
    await store.create_job(new_job("cancelled"), new_contacts(1))
    await store.cancel_job(ORG, "cancelled", T0 + 9)
    page, total = await store.list_jobs_json(ORG, None, 50, 0)
    assert total == 6
    rendered = {job["id"]: job for job in json.loads(page)}
    for job_id in ("pending", "scheduled", "running", "paused", "failed", "cancelled"):
        found = await store.job_with_counts(ORG, job_id)
        assert found is not None
        assert rendered[job_id] == job_summary(*found), job_id
    assert rendered["running"]["failedCalls"] == 1 and rendered["running"]["successfulCalls"] == 1
    only, _ = await store.list_jobs_json(ORG, "paused", 50, 0)
    assert [j["id"] for j in json.loads(only)] == ["paused"]
    assert json.loads((await store.list_jobs_json(ORG, None, 2, 6))[0]) == []


def test_a_claim_started_later_keeps_every_other_field() -> None:
    """ClaimedContact.started is dataclasses.replace(started_at=...), written out for speed: a
    field added to the claim and forgotten there would be lost from calls started ahead."""
    values = {f.name: object() for f in dataclasses.fields(ClaimedContact)}  # all distinct
    claim = ClaimedContact(**values)  # type: ignore[arg-type]
    assert claim.started(9.0) == dataclasses.replace(claim, started_at=9.0)
    assert claim.started(9.0).started_at == 9.0


async def test_pause_and_resume_tell_another_organization_nothing_of_a_job(store: Store) -> None:
    """A pause or resume of another organization's job changes nothing and answers no status
    (as for no such job): the status read beside the write is the organization's own."""
    job_id = await running_job(store)
    assert await store.pause_job(job_id, "x", T0, ["running"], organization_id="org_other") == (
        False,
        None,
    )
    assert await store.resume_job("org_other", job_id, T0) == (False, None)
    assert await store.pause_job(job_id, "x", T0, ["running"], organization_id=ORG) == (
        True,
        "paused",
    )
    assert await store.resume_job(ORG, job_id, T0) == (True, "running")


# ------------------------------------------------------------------ call records


async def test_call_records_page_past_attempts_started_at_the_same_moment(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attempts started in the same microsecond (one claim) across a page's end are each
    exported once: the keyset is the attempt's own start time, not the one in the page's JSON
    rows, rounded to 15 digits (rows were repeated or left out: found from outside)."""
    monkeypatch.setattr(export, "PAGE_SIZE", 5)
    await running_job(store, 12)
    started = 1_796_226_717.9116595  # 17 digits: JSON gives it as 1796226717.91166
    assert len(await claim(store, 12, now=started)) == 12
    chunks = [c async for c in export.call_record_chunks(store, ORG, T0, started + 1)]
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    ids = [r["attempt_id"] for r in rows]
    assert len(ids) == 12 and len(set(ids)) == 12


async def test_the_do_not_call_count_at_create_looks_each_number_up(store: Store) -> None:
    """The count of a new list's numbers on the do-not-call list searches the list by its key
    for each number: as a join SQLite scanned the organization's whole list for each (14 s for
    1,000 contacts against 110,000 listed numbers, every other write waiting: found from
    outside)."""
    await store.dnc_add(ORG, [f"+1202555{i:04d}" for i in range(200)], None, "api", T0)
    plan = await store._read(
        lambda conn: [
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + dbmod.queries()["count_listed"],
                {"org": ORG, "numbers": json.dumps(phones(50))},
            )
        ]
    )
    assert any("PRIMARY KEY (organization_id=? AND number=?)" in step for step in plan), plan
    assert not any(
        step.startswith("SEARCH d USING PRIMARY KEY (organization_id=?)") for step in plan
    )
