"""Calling within the law, through the HTTP API with a fake clock: windows in each recipient's
zones, expiry, do-not-call lists, per-number caps and the call records export."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import FormData

from dialer import windows
from dialer.clock import FakeClock
from tests.conftest import NUMBER, ORG, OTHER_ORG, Running, StartApp, make_config, wait_until

NEW_YORK = "+12025550101"  # America/New_York
LONDON = "+442079460001"  # Europe/London
SYDNEY = "+61291234567"  # Australia/Sydney
TOLL_FREE = "+18005550100"  # every North American zone
MONDAY_NOON_UTC = "2026-01-05T12:00:00Z"  # 07:00 New York, 12:00 London, 23:00 Sydney


def ts(text: str) -> float:
    """An ISO UTC time as unix seconds."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def lawful_config(tmp_path: Path, **org_a: Any) -> Any:
    """Organizations with the product defaults (windows 08:00-21:00, cap 3) unless given."""
    return make_config(
        tmp_path,
        organizations=[{"id": ORG, "name": "A", **org_a}, {"id": OTHER_ORG, "name": "B"}],
    )


async def start_lawful(
    start_app: StartApp, tmp_path: Path, at: str = MONDAY_NOON_UTC, **org_a: Any
) -> Running:
    """The app with lawful defaults and the fake clock at `at`."""
    return await start_app(lawful_config(tmp_path, **org_a), clock=FakeClock(start=ts(at)))


def by_phone(detail: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The detail's contacts keyed by phone number."""
    return {c["phoneNumber"]: c for c in detail["contacts"]}


async def settled(running: Running, job_id: str, **expected: str) -> dict[str, Any]:
    """Wait until each phone in `expected` (phone digits after '+', as keyword `p<digits>`) has
    the expected status; return the detail."""
    body: dict[str, Any] = {}

    async def check() -> bool:
        nonlocal body
        body = await running.detail(job_id)
        contacts = by_phone(body)
        return all(contacts["+" + key[1:]]["status"] == status for key, status in expected.items())

    await wait_until(check)
    return body


async def idle(running: Running) -> None:
    """Let the engine finish what it can do now."""
    await running.clock.advance(0)
    await wait_until(lambda: _idle(running))


async def _idle(running: Running) -> bool:
    return running.engine.idle.is_set() and running.engine.live_calls() == 0


# ------------------------------------------------------------------ windows


async def test_contacts_wait_for_their_own_window_then_are_dialed(
    start_app: StartApp, tmp_path: Path
) -> None:
    """At 12:00 UTC London is dialed at once; New York waits for 08:00 local and Sydney for
    08:00 the next local morning, each showing its zone and nextCallAt; moving the clock
    across New York's opening dials it."""
    running = await start_lawful(start_app, tmp_path)
    created = await running.create_json([{"phone": NEW_YORK}, {"phone": LONDON}, {"phone": SYDNEY}])
    assert created["callingWindows"] == windows.windows_json(windows.DEFAULT_WINDOWS)
    assert created["windowTimezone"] == "recipient"
    job_id = created["batchJobId"]
    body = await settled(running, job_id, p442079460001="completed")
    contacts = by_phone(body)
    assert contacts[LONDON]["timezone"] == "Europe/London"
    assert contacts[LONDON]["nextCallAt"] is None
    assert contacts[NEW_YORK]["status"] == "pending"
    assert contacts[NEW_YORK]["timezone"] == "America/New_York"
    assert contacts[NEW_YORK]["nextCallAt"] == "2026-01-05T13:00:00Z"
    assert contacts[SYDNEY]["nextCallAt"] == "2026-01-05T21:00:00Z"  # 08:00 AEDT
    assert body["status"] == "running"
    assert body["callingWindows"] == windows.windows_json(windows.DEFAULT_WINDOWS)
    # The estimate cannot end before Sydney's window opens.
    assert body["estimatedCompletionTime"] >= "2026-01-05T21:00:00Z"

    await running.clock.advance(ts("2026-01-05T13:00:00Z") - running.clock.now() - 1)
    await idle(running)
    assert by_phone(await running.detail(job_id))[NEW_YORK]["status"] == "pending"
    await running.clock.advance(1)
    body = await settled(running, job_id, p12025550101="completed")
    assert by_phone(body)[NEW_YORK]["nextCallAt"] is None
    assert by_phone(body)[SYDNEY]["status"] == "pending"

    await running.clock.advance(ts("2026-01-05T21:00:00Z") - running.clock.now())
    body = await settled(running, job_id, p61291234567="completed")
    await running.wait_status(job_id, "completed")


async def test_window_closing_stops_new_calls_until_the_next_opening(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A call in progress at the window's end finishes; a contact not dialed before the end
    waits for the next opening (shown as its nextCallAt) and is dialed then."""
    config = make_config(
        tmp_path,
        organizations=[
            {
                "id": ORG,
                "calling_windows": [{"days": ["mon", "tue"], "start": "08:00", "end": "08:30"}],
            },
            {"id": OTHER_ORG},
        ],
        telephony={"simulated": {"call_seconds": 2400}},
    )
    running = await start_app(config, clock=FakeClock(start=ts("2026-01-05T13:00:00Z")))
    second = "+12025550102"
    created = await running.create_json(
        [{"phone": NEW_YORK}, {"phone": second}], concurrentCallLimit=1
    )
    job_id = created["batchJobId"]
    await settled(running, job_id, p12025550101="dialing")
    await running.clock.advance(2400)  # 08:40: the first call ends after the window closed
    body = await settled(running, job_id, p12025550101="completed")
    await wait_until(lambda: _running_and_idle(running, job_id))
    contact = by_phone(await running.detail(job_id))[second]
    assert (contact["status"], contact["attemptCount"]) == ("pending", 0)
    assert contact["nextCallAt"] == "2026-01-06T13:00:00Z"  # Tuesday 08:00 EST
    assert by_phone(body)[NEW_YORK]["callDuration"] is not None
    await running.clock.advance(ts("2026-01-06T13:00:00Z") - running.clock.now())
    await settled(running, job_id, p12025550102="dialing")


async def _running_and_idle(running: Running, job_id: str) -> bool:
    body = await running.detail(job_id)
    return body["status"] == "running" and running.engine.idle.is_set()


async def test_explicit_zone_and_window_timezone(start_app: StartApp, tmp_path: Path) -> None:
    """A contact's own timezone wins over its number's; windowTimezone reads every contact's
    windows in one zone."""
    running = await start_lawful(start_app, tmp_path)
    own = await running.create_json([{"phone": LONDON, "timezone": "Asia/Tokyo"}])
    contact = by_phone(await running.detail(own["batchJobId"]))[LONDON]
    assert contact["timezone"] == "Asia/Tokyo"
    assert contact["nextCallAt"] == "2026-01-05T23:00:00Z"  # 08:00 Tuesday in Tokyo
    fixed = await running.create_json(
        [{"phone": SYDNEY}, {"phone": NEW_YORK, "timezone": "Asia/Tokyo"}],
        windowTimezone="Europe/London",
    )
    assert fixed["windowTimezone"] == "Europe/London"
    body = await settled(running, fixed["batchJobId"], p61291234567="completed")
    await settled(running, fixed["batchJobId"], p12025550101="completed")
    assert {c["timezone"] for c in body["contacts"]} == {"Europe/London"}


async def test_no_common_window_is_reported_and_cancelled(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A toll-free number spans every North American zone: 09:00-12:00 is never open in all of
    them, so it is cancelled at create with no_common_window and reported."""
    running = await start_lawful(start_app, tmp_path)
    created = await running.create_json(
        [{"phone": TOLL_FREE}, {"phone": LONDON}],
        callingWindows=[{"days": list(windows.DAYS), "start": "09:00", "end": "12:00"}],
    )
    assert created["noCommonWindowCount"] == 1
    assert created["noCommonWindow"] == [TOLL_FREE]
    body = await running.detail(created["batchJobId"])
    toll_free = by_phone(body)[TOLL_FREE]
    assert (toll_free["status"], toll_free["failureReason"]) == ("cancelled", "no_common_window")
    assert "America/New_York" in toll_free["timezone"].split(",")


async def test_retry_outside_the_window_moves_to_its_next_opening(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A busy number whose 300 s retry would fall after the window's end is retried at the
    next opening instead."""
    config = make_config(
        tmp_path,
        organizations=[
            {
                "id": ORG,
                "calling_windows": [{"days": list(windows.DAYS), "start": "08:00", "end": "08:03"}],
            },
            {"id": OTHER_ORG},
        ],
        telephony={"simulated": {"rules": [{"prefix": NEW_YORK, "outcome": "busy"}]}},
    )
    running = await start_app(config, clock=FakeClock(start=ts("2026-01-05T13:00:00Z")))
    created = await running.create_json([{"phone": NEW_YORK}])
    job_id = created["batchJobId"]
    body = await settled(running, job_id, p12025550101="queued")
    contact = by_phone(body)[NEW_YORK]
    assert contact["nextRetryAt"] == "2026-01-06T13:00:00Z"
    assert contact["nextCallAt"] == "2026-01-06T13:00:00Z"
    await running.clock.advance(600)
    await idle(running)
    assert by_phone(await running.detail(job_id))[NEW_YORK]["attemptCount"] == 1
    await running.clock.advance(ts("2026-01-06T13:00:00Z") - running.clock.now())
    await wait_until(lambda: _attempts(running, job_id, NEW_YORK, 2))


async def _attempts(running: Running, job_id: str, phone: str, count: int) -> bool:
    return int(by_phone(await running.detail(job_id))[phone]["attemptCount"]) >= count


async def test_expiry_cancels_waiting_contacts_and_completes_the_job(
    start_app: StartApp, tmp_path: Path
) -> None:
    """At expiresAt, contacts still waiting for their window are cancelled (expired) and the
    job completes."""
    running = await start_lawful(start_app, tmp_path)
    created = await running.create_json(
        [{"phone": LONDON}, {"phone": SYDNEY}], expiresAt="2026-01-05T15:00:00Z"
    )
    assert created["expiresAt"] == "2026-01-05T15:00:00Z"
    job_id = created["batchJobId"]
    await settled(running, job_id, p442079460001="completed")
    await running.clock.advance(3 * 3600)
    body = await running.wait_status(job_id, "completed")
    sydney = by_phone(body)[SYDNEY]
    assert (sydney["status"], sydney["failureReason"]) == ("cancelled", "expired")
    assert sydney["nextCallAt"] is None
    assert body["expiresAt"] == "2026-01-05T15:00:00Z"


async def test_invalid_windows_zones_and_expiry_are_refused(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Malformed windows, unknown zones and a past expiresAt answer 400 with their code and
    create nothing."""
    running = await start_lawful(start_app, tmp_path)
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"callingWindows": [{"days": ["mon"], "start": "21:00", "end": "08:00"}]},
            "invalid_calling_window",
        ),
        ({"callingWindows": "nope"}, "invalid_calling_window"),
        ({"callingWindows": []}, "invalid_calling_window"),
        ({"windowTimezone": "Mars/Base"}, "invalid_timezone"),
        ({"expiresAt": "2025-01-01T00:00:00Z"}, "invalid_expires_at"),
        ({"expiresAt": "tomorrow"}, "invalid_expires_at"),
        ({"contacts": [{"phone": LONDON, "timezone": "Nowhere/City"}]}, "invalid_timezone"),
    ]
    for fields, code in cases:
        body = {"fromPhoneNumberId": NUMBER, "name": "x", "contacts": [{"phone": LONDON}]}
        body.update(fields)
        resp = await running.client.post("/batch/create", json=body, headers=running.headers())
        answer = await resp.json()
        assert (resp.status, answer["code"]) == (400, code), (fields, answer)
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": ORG}, headers=running.headers()
    )
    assert (await resp.json())["total"] == 0


async def test_multipart_create_takes_windows_as_json_text(
    start_app: StartApp, tmp_path: Path
) -> None:
    """In a form, callingWindows is JSON text; a CSV timezone column sets the zone and an
    unknown one makes its row invalid."""
    running = await start_lawful(start_app, tmp_path)
    form = FormData()
    form.add_field(
        "file",
        f"phone,timezone\n{LONDON},America/Chicago\n{NEW_YORK},Bogus/Zone\n{SYDNEY},\n".encode(),
        filename="c.csv",
        content_type="text/csv",
    )
    form.add_field("fromPhoneNumberId", NUMBER)
    form.add_field("name", "form job")
    form.add_field(
        "callingWindows",
        json.dumps([{"days": ["mon", "tue"], "start": "06:00", "end": "22:00"}]),
    )
    form.add_field("expiresAt", "2026-01-09T00:00:00Z")
    resp = await running.client.post("/batch/create", data=form, headers=running.headers())
    created = await resp.json()
    assert resp.status == 201, created
    assert created["callingWindows"] == [{"days": ["mon", "tue"], "start": "06:00", "end": "22:00"}]
    assert created["invalidRows"][0]["value"] == "Bogus/Zone"
    body = await running.detail(created["batchJobId"])
    contacts = by_phone(body)
    assert contacts[LONDON]["timezone"] == "America/Chicago"
    assert contacts[LONDON]["nextCallAt"] is None  # 06:00 in Chicago
    assert contacts[SYDNEY]["nextCallAt"] == "2026-01-05T19:00:00Z"  # Tuesday 06:00 AEDT
    bad = FormData()
    bad.add_field("file", f"phone\n{LONDON}\n".encode(), filename="c.csv")
    bad.add_field("fromPhoneNumberId", NUMBER)
    bad.add_field("name", "bad")
    bad.add_field("callingWindows", "[{")
    resp = await running.client.post("/batch/create", data=bad, headers=running.headers())
    assert (resp.status, (await resp.json())["code"]) == (400, "invalid_calling_window")


async def test_export_shows_zone_and_next_call(start_app: StartApp, tmp_path: Path) -> None:
    """The job's CSV export has timezone and next_call_at columns."""
    running = await start_lawful(start_app, tmp_path)
    created = await running.create_json([{"phone": NEW_YORK}])
    await idle(running)
    resp = await running.client.get(
        f"/batch/jobs/{created['batchJobId']}/export", headers=running.headers()
    )
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert rows[0]["timezone"] == "America/New_York"
    assert rows[0]["next_call_at"] == "2026-01-05T13:00:00Z"
