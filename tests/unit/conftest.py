"""Unit-test helpers: a Store on a temp file, job/contact/outcome builders, CSV bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dialer import states
from storage.rows import ClaimedContact, NewContact, NewJob, Outcome
from storage.store import Store

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ORG = "org_a"


def phones(count: int, start: int = 0) -> list[str]:
    """`count` distinct valid US numbers (+1202555xxxx)."""
    return [f"+1202555{i:04d}" for i in range(start, start + count)]


def csv_bytes(*lines: str, bom: bool = False, newline: str = "\n") -> bytes:
    """A CSV upload made of `lines`, UTF-8 encoded, optionally with a byte-order mark."""
    data = newline.join(lines).encode("utf-8")
    return b"\xef\xbb\xbf" + data if bom else data


def new_job(job_id: str = "job_1", **overrides: Any) -> NewJob:
    """A pending job with the default retry policy."""
    job = NewJob(
        id=job_id,
        organization_id=ORG,
        name="campaign",
        description=None,
        status=states.JobStatus.PENDING.value,
        agent_id="agent_a",
        phone_number_id="num_a",
        concurrent_call_limit=5,
        max_attempts=3,
        retry_statuses=[s.value for s in states.DEFAULT_RETRY_STATUSES],
        retry_delay_seconds=300.0,
        retry_backoff=2.0,
        timezone="UTC",
        scheduled_start_time=None,
        created_at=T0,
        estimated_cost_usd=0.0,
    )
    return replace(job, **overrides)


def new_contacts(count: int) -> list[NewContact]:
    """`count` contacts with distinct numbers and a custom `name` field."""
    return [
        NewContact(phone=p, data={"phone": p, "name": f"n{i}"}) for i, p in enumerate(phones(count))
    ]


def namer(job_id: str, contact_id: int, attempt_no: int) -> str:
    """A deterministic room namer for claims."""
    return f"room-{job_id}-{contact_id}-{attempt_no}"


def outcome_for(
    contact: ClaimedContact,
    outcome: str,
    next_status: str | None = None,
    *,
    next_retry_at: float | None = None,
    ended_at: float = T0 + 60,
    **overrides: Any,
) -> Outcome:
    """The Outcome of `contact`'s current attempt; next status defaults to `outcome`."""
    result = Outcome(
        contact_id=contact.id,
        job_id=contact.job_id,
        organization_id=ORG,
        attempt_no=contact.attempt_no,
        outcome=outcome,
        next_status=next_status or outcome,
        next_retry_at=next_retry_at,
        sip_code=None,
        reason=None,
        answered_at=None,
        ended_at=ended_at,
        duration=None,
        charged_usd=0.0,
        started_at=contact.started_at,
    )
    return replace(result, **overrides)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated Store on a fresh file database, closed after the test."""
    opened = await Store.open(str(tmp_path / "x.db"))
    yield opened
    await opened.close()


async def running_job(
    store: Store, contacts: int | Sequence[NewContact] = 3, job_id: str = "job_1"
) -> str:
    """Create a job with contacts and move it to running, as the engine does; return its id."""
    items = new_contacts(contacts) if isinstance(contacts, int) else contacts
    await store.create_job(new_job(job_id), items)
    assert await store.start_jobs([job_id], [states.JobStatus.PENDING.value], T0) == [job_id]
    return job_id
