"""CSV export of a job's contacts: final status, attempts, SIP code, reason, times, custom fields.

Streamed: the header first, then one chunk per page of contacts read in upload order (keyset
paging on `seq`), so a 10,000-contact export never holds more than one page in memory.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

from storage.rows import CallFilter, CallRow
from storage.store import Store

PAGE_SIZE = 500

COLUMNS = (
    "contact_id",
    "phone",
    "status",
    "attempts",
    "max_attempts",
    "sip_code",
    "reason",
    "duration_seconds",
    "last_call_started_at",
    "last_call_answered_at",
    "last_call_ended_at",
    "next_retry_at",
    "completed_at",
    "room_name",
    "timezone",
    "next_call_at",
    "disposition",
    "summary",
    "result_data",
)


def custom_columns(field_names: Iterable[str]) -> list[tuple[str, str]]:
    """(column header, contact field) for every custom field; a name taken by a fixed column
    gets a `data.` prefix."""
    return [
        (f"data.{name}" if name in COLUMNS else name, name)
        for name in field_names
        if name != "phone"  # the phone column already holds it
    ]


def _time(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def row(call: CallRow, custom: list[tuple[str, str]], now: float = 0.0) -> list[str]:
    c = call.contact
    fixed = [
        f"contact_{c.id}",
        c.phone,
        c.status,
        str(c.attempt_count),
        str(c.max_attempts),
        c.error_code or "",
        c.failure_reason or "",
        "" if c.call_duration is None else str(c.call_duration),
        _time(call.started_at),
        _time(call.answered_at),
        _time(call.ended_at),
        _time(c.next_retry_at),
        _time(c.completed_at),
        c.room_name or "",
        c.timezone or "",
        _time(c.wait_until(now)),
        c.disposition or "",
        c.summary or "",
        _cell(c.result_data),
    ]
    return fixed + [_cell(c.contact_data.get(field)) for _, field in custom]


# A cell a spreadsheet would read as a formula (OWASP CSV injection): it starts with one of
# these, possibly after whitespace, which some spreadsheets skip.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """`value` with a `'` in front when it starts like a formula (leading whitespace included,
    and kept), so that spreadsheets show it as text instead of evaluating it."""
    if value.startswith(_FORMULA_START) or value.lstrip().startswith(_FORMULA_START):
        return "'" + value
    return value


def _encode(rows: Iterable[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows([safe_cell(cell) for cell in row] for row in rows)
    return buffer.getvalue().encode("utf-8")


async def csv_chunks(store: Store, job_id: str, now: float = 0.0) -> AsyncIterator[bytes]:
    """The header, then one encoded chunk per page of `PAGE_SIZE` contacts (next_call_at:
    when a contact waits past `now`)."""
    page_size = PAGE_SIZE
    custom = custom_columns(await store.contact_field_names(job_id))
    yield _encode([[*COLUMNS, *(header for header, _ in custom)]])
    after = 0
    while True:
        calls, _ = await store.list_calls(job_id, CallFilter(after_seq=after), page_size)
        if not calls:
            return
        # Encoded on a worker thread: a page of wide rows takes a while.
        yield await asyncio.to_thread(_encode, [row(call, custom, now) for call in calls])
        if len(calls) < page_size:
            return
        after = calls[-1].contact.seq


# The call records regulators ask for (e.g. the FTC's Telemarketing Sales Rule): one row per
# attempt, times in UTC.
CALL_COLUMNS = (
    "attempt_id",
    "job_id",
    "contact_id",
    "calling_number",
    "called_number",
    "started_at",
    "answered_at",
    "ended_at",
    "duration_seconds",
    "outcome",
    "sip_code",
    "reason",
)


def _call_record(values: list[Any]) -> list[str]:
    attempt_id, job_id, contact_id, calling, called, started, answered, ended = values[:8]
    duration, outcome, sip_code, reason = values[8:]
    return [
        f"attempt_{attempt_id}",
        job_id,
        f"contact_{contact_id}",
        calling or "",
        called or "",
        _time(started),
        _time(answered),
        _time(ended),
        "" if duration is None else str(duration),
        outcome or "in_progress",
        "" if sip_code is None else str(sip_code),
        reason or "",
    ]


async def call_record_chunks(
    store: Store, organization_id: str, start: float, end: float
) -> AsyncIterator[bytes]:
    """The header, then one chunk per page of attempts started in [start, end), in start order
    (keyset paging on start time and id)."""
    yield _encode([list(CALL_COLUMNS)])
    after: tuple[float, int] = (-1e18, 0)
    while True:
        rows = await store.call_records(organization_id, start, end, after, PAGE_SIZE)
        if not rows:
            return
        yield _encode(_call_record(r) for r in rows)
        if len(rows) < PAGE_SIZE:
            return
        after = (float(rows[-1][5]), int(rows[-1][0]))
