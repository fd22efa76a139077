"""Calling within the law, through the HTTP API with a fake clock: windows in each recipient's
zones, expiry, do-not-call lists, per-number caps and the call records export."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import FormData
from structlog.testing import capture_logs
from yarl import URL

from dialer import dnc, intake, windows
from dialer.clock import FakeClock
from storage.connection import StorageUnavailable
from tests.conftest import NUMBER, ORG, OTHER_ORG, Running, StartApp, make_config, wait_until

NEW_YORK = "+12025550101"  # America/New_York
LONDON = "+442079460001"  # Europe/London
SYDNEY = "+61291234567"  # Australia/Sydney
INDIA = "+919876559301"  # Asia/Calcutta (Kolkata)
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


async def test_the_estimate_reads_the_windows_in_the_recipients_zone(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Numbers in India called 10:00-11:00 their time, the job in UTC: the estimate is just
    after their next opening (04:30 UTC), not at 10:00 UTC, when their window is shut (found
    from outside: the windows were read in the job's own zone)."""
    running = await start_lawful(start_app, tmp_path)
    every_day = [{"days": list(windows.DAYS), "start": "10:00", "end": "11:00"}]
    created = await running.create_json([{"phone": INDIA}], callingWindows=every_day)
    body = await running.detail(created["batchJobId"])
    contact = body["contacts"][0]
    assert contact["nextCallAt"] == "2026-01-06T04:30:00Z"  # (phonenumbers: Asia/Calcutta)
    assert "2026-01-06T04:30:00Z" <= body["estimatedCompletionTime"] < "2026-01-06T05:00:00Z"


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
    await wait_until(lambda: _call_on_the_clock(running))  # safe to advance the clock now
    await running.clock.advance(2400)  # 08:40: the first call ends after the window closed
    body = await settled(running, job_id, p12025550101="completed")
    await wait_until(lambda: _running_and_idle(running, job_id))
    contact = by_phone(await running.detail(job_id))[second]
    assert (contact["status"], contact["attemptCount"]) == ("pending", 0)
    assert contact["nextCallAt"] == "2026-01-06T13:00:00Z"  # Tuesday 08:00 EST
    assert by_phone(body)[NEW_YORK]["callDuration"] is not None
    await running.clock.advance(ts("2026-01-06T13:00:00Z") - running.clock.now())
    await settled(running, job_id, p12025550102="dialing")


async def _call_on_the_clock(running: Running) -> bool:
    """The live call waits on the fake clock (its task has run up to its sleep)."""
    return running.clock.sleeping >= 1


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


async def other_completed(running: Running, job_id: str) -> None:
    """Wait until the other organization's job is completed."""

    async def check() -> bool:
        resp = await running.client.get(
            f"/batch/jobs/{job_id}", headers=running.headers(running.other_key)
        )
        return bool((await resp.json())["status"] == "completed")

    await wait_until(check)


# ------------------------------------------------------------------ do-not-call


async def dnc_post(running: Running, numbers: list[Any], key: str | None = None) -> Any:
    """POST /dnc; returns (status, body)."""
    resp = await running.client.post(
        "/dnc", json={"numbers": numbers, "reason": "asked"}, headers=running.headers(key)
    )
    return resp.status, await resp.json()


async def test_dnc_routes_add_list_remove_and_import(start_app: StartApp, tmp_path: Path) -> None:
    """POST /dnc counts added and already listed, GET pages and filters, DELETE removes (404
    when absent), import lists a CSV's phone column; invalid numbers are listed in a 400."""
    running = await start_lawful(start_app, tmp_path)
    assert await dnc_post(running, [LONDON, NEW_YORK, LONDON]) == (
        200,
        {"added": 2, "alreadyListed": 0},
    )
    assert await dnc_post(running, [LONDON]) == (200, {"added": 0, "alreadyListed": 1})
    status, body = await dnc_post(running, [LONDON, "12345", 7])
    assert (status, body["code"]) == (400, "invalid_numbers")
    assert [b["index"] for b in body["invalidNumbers"]] == [1, 2]
    status, body = await dnc_post(running, [])
    assert status == 400
    resp = await running.client.get("/dnc", params={"pageSize": "1"}, headers=running.headers())
    page = await resp.json()
    assert (page["total"], page["page"], page["pageSize"]) == (2, 1, 1)
    assert page["numbers"] == [
        {
            "number": NEW_YORK,
            "reason": "asked",
            "source": "api",
            "addedAt": MONDAY_NOON_UTC,
            "jobId": None,
        }
    ]
    resp = await running.client.get("/dnc", params={"number": LONDON}, headers=running.headers())
    assert [n["number"] for n in (await resp.json())["numbers"]] == [LONDON]
    resp = await running.client.delete(f"/dnc/{LONDON}", headers=running.headers())
    assert resp.status == 200
    resp = await running.client.delete(f"/dnc/{LONDON}", headers=running.headers())
    assert (resp.status, (await resp.json())["code"]) == (404, "not_listed")
    form = FormData()
    form.add_field(
        "file", f"name,phone\na,{NEW_YORK}\nb,{SYDNEY}\nc,oops\n".encode(), filename="d.csv"
    )
    resp = await running.client.post("/dnc/import", data=form, headers=running.headers())
    imported = await resp.json()
    assert resp.status == 200, imported
    assert (imported["added"], imported["alreadyListed"], imported["invalidCount"]) == (1, 1, 1)
    assert imported["invalidRows"][0]["value"] == "oops"
    form = FormData()  # a column of another name, named with phoneColumn
    form.add_field("phoneColumn", "mobile")
    form.add_field("file", f"name,mobile\nd,{LONDON}\n".encode(), filename="d.csv")
    resp = await running.client.post("/dnc/import", data=form, headers=running.headers())
    assert (resp.status, (await resp.json())["added"]) == (200, 1)
    resp = await running.client.get("/dnc", headers=running.headers(running.other_key))
    assert (await resp.json())["total"] == 0  # another organization's list is its own


async def test_dnc_lookup_reads_an_unencoded_plus_and_a_formatted_number(
    start_app: StartApp, tmp_path: Path
) -> None:
    """GET /dnc?number= finds a listed number whose `+` came unencoded (a space once decoded)
    or that is formatted as people write it; it answered total 0, as if it were not listed."""
    running = await start_lawful(start_app, tmp_path)
    await dnc_post(running, [LONDON])
    for query in (
        "%2B442079460001",
        "+442079460001",
        "%20442079460001",
        "+44+20+7946+0001",
        "%2B44%20(0)20%207946-0001",
    ):
        resp = await running.client.get(
            URL(f"/dnc?number={query}", encoded=True), headers=running.headers()
        )
        body = await resp.json()
        assert (resp.status, body["total"]) == (200, 1), query
        assert [n["number"] for n in body["numbers"]] == [LONDON]
    resp = await running.client.get(
        URL("/dnc?number=%2B12025550101", encoded=True), headers=running.headers()
    )
    assert (resp.status, (await resp.json())["total"]) == (200, 0)  # valid, not listed
    for query in ("442079460001", "%2B44%20oops", "020%207946%200001"):
        # No + and country code: 400, not total 0 as if such a number were not listed.
        resp = await running.client.get(
            URL(f"/dnc?number={query}", encoded=True), headers=running.headers()
        )
        assert (resp.status, (await resp.json())["code"]) == (400, "invalid_numbers"), query
    for query in ("", "%20", "+"):  # blank: not the whole list, as if it were no filter
        resp = await running.client.get(
            URL(f"/dnc?number={query}", encoded=True), headers=running.headers()
        )
        assert (resp.status, (await resp.json())["code"]) == (400, "invalid_numbers"), query
    for path in ("442079460001", "020%207946%200001", "abc"):
        # Taking off a number without its + and country code: 400, not 404 not_listed (the
        # number is listed with them).
        resp = await running.client.delete(
            URL(f"/dnc/{path}", encoded=True), headers=running.headers()
        )
        assert (resp.status, (await resp.json())["code"]) == (400, "invalid_numbers"), path
    resp = await running.client.delete(
        URL("/dnc/%2B44%2020%207946%200001", encoded=True), headers=running.headers()
    )
    assert (resp.status, await resp.json()) == (200, {"removed": LONDON})
    # The import's path is its own: no DELETE there, and its Allow header says so.
    resp = await running.client.delete("/dnc/import", headers=running.headers())
    assert (resp.status, resp.headers["Allow"]) == (405, "POST")


async def test_dnc_import_reads_only_the_phone_column_and_honours_default_country(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A do-not-call import lists every valid number whatever the other cells hold (an unknown
    timezone, a field past the header), reads national numbers with defaultCountry, and still
    reports invalid numbers; such opt-outs were dropped, and defaultCountry ignored."""
    running = await start_lawful(start_app, tmp_path)

    async def imported(data: bytes, **fields: str) -> tuple[int, dict[str, Any]]:
        form = FormData()
        for name, value in fields.items():
            form.add_field(name, value)
        form.add_field("file", data, filename="optouts.csv")
        resp = await running.client.post("/dnc/import", data=form, headers=running.headers())
        return resp.status, await resp.json()

    status, body = await imported(
        b"phone,timezone,name\n+12025558001,Mars/Base,a\n+12025558002,,b,extra\noops,UTC,c\n"
        b"+12025558001,,again\n"
    )
    assert status == 200, body
    assert (body["added"], body["invalidCount"], body["duplicatesRemoved"]) == (2, 1, 1)
    assert [(r["row"], r["value"]) for r in body["invalidRows"]] == [(4, "oops")]
    national = b"Phone Number;Name\n(202) 555-8005;x\n+1 202 555 8006;y\n2025558007;z\n555;w\n"
    status, body = await imported(national, defaultCountry="us")
    assert status == 200, body
    assert (body["added"], body["invalidCount"]) == (3, 1)
    assert [(r["row"], r["value"]) for r in body["invalidRows"]] == [(5, "555")]
    status, body = await imported(b"phone\n2025558009\n", defaultCountry="Narnia")
    assert (status, body["code"]) == (400, "invalid_default_country")
    resp = await running.client.get("/dnc", headers=running.headers())
    assert [n["number"] for n in (await resp.json())["numbers"]] == [
        f"+1202555800{i}" for i in (1, 2, 5, 6, 7)
    ]


async def _import(running: Running, data: bytes) -> tuple[int, dict[str, Any]]:
    form = FormData()
    form.add_field("file", io.BytesIO(data), filename="optouts.csv")  # (a big body: streamed)
    resp = await running.client.post("/dnc/import", data=form, headers=running.headers())
    return resp.status, await resp.json()


def _optouts(n: int, first: int = 0) -> list[str]:
    return [f"+1303{5_000_000 + first + i:07d}" for i in range(n)]


async def test_dnc_import_lists_more_than_ten_thousand_numbers(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A file of 25,000 opt-outs is listed whole (it was refused past 10,000: a list of 300,000
    took 30 files), and the waiting contacts with any of them are cancelled, the last chunk's
    too; past intake.MAX_NUMBERS numbers the file is refused, nothing listed."""
    running = await start_lawful(start_app, tmp_path)
    numbers = _optouts(25_000)
    job_id = (
        await running.create_json(
            [{"phone": numbers[0]}, {"phone": numbers[-1]}, {"phone": NEW_YORK}],
            scheduledStartTime="2030-01-01T00:00:00Z",
        )
    )["batchJobId"]
    status, body = await _import(running, ("phone\n" + "\n".join(numbers)).encode())
    assert status == 200, body
    assert (body["added"], body["alreadyListed"], body["invalidCount"]) == (25_000, 0, 0)
    resp = await running.client.get("/dnc", params={"pageSize": "1"}, headers=running.headers())
    assert (await resp.json())["total"] == 25_000
    shown = by_phone(await running.detail(job_id))
    assert [shown[n]["failureReason"] for n in (numbers[0], numbers[-1])] == ["do_not_call"] * 2
    assert shown[NEW_YORK]["status"] == "pending"
    too_many = "phone\n" + "\n".join(_optouts(intake.MAX_NUMBERS + 1, first=100_000))
    status, body = await _import(running, too_many.encode())
    assert (status, body["code"]) == (400, "too_many_contacts")
    assert f"more than {intake.MAX_NUMBERS} valid numbers" in body["error"]
    resp = await running.client.get("/dnc", params={"pageSize": "1"}, headers=running.headers())
    assert (await resp.json())["total"] == 25_000


async def test_dnc_import_cut_by_a_storage_failure_lists_the_rest_when_sent_again(
    start_app: StartApp, tmp_path: Path
) -> None:
    """An import is listed 10,000 numbers a transaction: a storage failure part way answers 503
    with the chunks before it listed (never fewer opt-outs than before; the contacts claimed
    ahead given back after each); the same file sent again lists the rest and counts the
    others as already listed."""
    running = await start_lawful(start_app, tmp_path)
    store = running.store
    real_add = store.dnc_add
    calls = 0

    async def second_fails(*args: Any, **kwargs: Any) -> tuple[int, list[str]]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise StorageUnavailable("disk I/O error")
        return await real_add(*args, **kwargs)

    store.dnc_add = second_fails  # type: ignore[method-assign]
    engine = running.engine
    real_give_back = engine.give_back_claimed_ahead
    given_back_after: list[int] = []  # dnc_add calls made when contacts claimed ahead went back

    def give_back(job_id: str | None = None) -> None:
        given_back_after.append(calls)
        real_give_back(job_id)

    engine.give_back_claimed_ahead = give_back  # type: ignore[method-assign]
    data = ("phone\n" + "\n".join(_optouts(15_000))).encode()
    status, body = await _import(running, data)
    assert (status, body["code"]) == (503, "storage_unavailable")
    # Before the first transaction and after it: the listed numbers' contacts claimed ahead
    # are not dialed, though the import failed later.
    assert given_back_after == [0, 1]
    resp = await running.client.get("/dnc", params={"pageSize": "1"}, headers=running.headers())
    assert (await resp.json())["total"] == dnc.MAX_NUMBERS
    status, body = await _import(running, data)
    assert status == 200, body
    assert (body["added"], body["alreadyListed"]) == (15_000 - dnc.MAX_NUMBERS, dnc.MAX_NUMBERS)


async def test_dnc_suppresses_at_create_and_mid_job_for_its_organization_only(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A listed number is cancelled (do_not_call) at create and counted in suppressedCount;
    one listed while its job waits is never dialed; the other organization still dials it."""
    running = await start_lawful(start_app, tmp_path)
    await dnc_post(running, [LONDON])
    created = await running.create_json([{"phone": LONDON}, {"phone": NEW_YORK}])
    assert created["suppressedCount"] == 1
    job_id = created["batchJobId"]
    body = await running.detail(job_id)
    london = by_phone(body)[LONDON]
    assert (london["status"], london["failureReason"], london["attemptCount"]) == (
        "cancelled",
        "do_not_call",
        0,
    )
    assert by_phone(body)[NEW_YORK]["status"] == "pending"  # its window opens at 13:00
    await dnc_post(running, [NEW_YORK])
    await running.clock.advance(ts("2026-01-05T14:00:00Z") - running.clock.now())
    body = await running.wait_status(job_id, "completed")
    new_york = by_phone(body)[NEW_YORK]
    assert (new_york["status"], new_york["failureReason"], new_york["attemptCount"]) == (
        "cancelled",
        "do_not_call",
        0,
    )
    other = await running.create_json(
        [{"phone": LONDON}], key=running.other_key, fromPhoneNumberId="num_b"
    )
    assert other["suppressedCount"] == 0
    await other_completed(running, other["batchJobId"])


async def test_dnc_listed_during_a_retry_wait_is_never_dialed_again(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A number listed while its contact waits for a retry is cancelled, not dialed."""
    config = make_config(
        tmp_path,
        telephony={"simulated": {"rules": [{"prefix": LONDON, "outcome": "busy"}]}},
    )
    running = await start_app(config, clock=FakeClock(start=ts(MONDAY_NOON_UTC)))
    created = await running.create_json([{"phone": LONDON}])
    job_id = created["batchJobId"]
    await settled(running, job_id, p442079460001="queued")
    await dnc_post(running, [LONDON])
    body = await running.wait_status(job_id, "completed")
    contact = by_phone(body)[LONDON]
    assert (contact["status"], contact["failureReason"], contact["attemptCount"]) == (
        "cancelled",
        "do_not_call",
        1,
    )


async def test_retry_leaves_a_listed_number_as_it_ended_and_the_job_completes(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Retry does not re-queue a contact whose number was listed since its call: it keeps its
    outcome, is counted in suppressedCount, and the job completes (it stayed running for good
    with that contact queued, holding its credits and its active-job slot)."""
    config = make_config(
        tmp_path,
        telephony={
            "simulated": {
                "rules": [
                    {"prefix": LONDON, "outcome": "busy"},
                    {"prefix": NEW_YORK, "outcome": "busy"},
                ]
            }
        },
    )
    running = await start_app(config, clock=FakeClock(start=ts(MONDAY_NOON_UTC)))
    created = await running.create_json([{"phone": LONDON}, {"phone": NEW_YORK}], maxAttempts=1)
    job_id = created["batchJobId"]
    await running.wait_status(job_id, "completed")
    await dnc_post(running, [LONDON])
    retry = f"/batch/jobs/{job_id}/retry"
    resp = await running.client.post(retry, headers=running.headers())
    answer = await resp.json()
    assert resp.status == 200, answer
    assert (answer["contactsRequeued"], answer["suppressedCount"]) == (1, 1)
    body = await running.wait_status(job_id, "completed")
    london, new_york = by_phone(body)[LONDON], by_phone(body)[NEW_YORK]
    assert (london["status"], london["errorCode"], london["attemptCount"]) == ("busy", "486", 1)
    assert (london["maxAttempts"], london["completedAt"]) == (1, MONDAY_NOON_UTC)
    assert (new_york["status"], new_york["attemptCount"]) == ("busy", 2)

    await dnc_post(running, [NEW_YORK])  # every one listed: nothing to do, the job stays done
    resp = await running.client.post(retry, headers=running.headers())
    answer = await resp.json()
    assert (answer["contactsRequeued"], answer["suppressedCount"]) == (0, 2)
    assert (answer["status"], answer["retryRounds"]) == ("completed", 1)
    assert "do-not-call" in answer["message"]


# ------------------------------------------------------------------ caps


async def after_two_dials_of_london(running: Running) -> dict[str, Any]:
    """Two jobs that dial London 10 minutes apart, then a third of London and Sydney (created)."""
    first = await running.create_json([{"phone": LONDON}])
    await running.wait_status(first["batchJobId"], "completed")
    await running.clock.advance(600)
    second = await running.create_json([{"phone": LONDON}])
    await running.wait_status(second["batchJobId"], "completed")
    return await running.create_json([{"phone": LONDON}, {"phone": SYDNEY}])


async def test_per_number_cap_across_two_jobs(start_app: StartApp, tmp_path: Path) -> None:
    """With a cap of 2 dials per 24 h, the third job's contact of that number waits until the
    first dial turns 24 h old (nextCallAt), then is dialed; other numbers are not held."""
    running = await start_lawful(
        start_app,
        tmp_path,
        calling_windows=[{"days": list(windows.DAYS), "start": "00:00", "end": "24:00"}],
        max_attempts_per_number_per_day=2,
    )
    third = await after_two_dials_of_london(running)
    job_id = third["batchJobId"]
    body = await settled(running, job_id, p61291234567="completed")
    waiting = by_phone(body)[LONDON]
    assert (waiting["status"], waiting["attemptCount"]) == ("pending", 0)
    assert waiting["nextCallAt"] == "2026-01-06T12:00:00Z"
    await running.clock.advance(ts("2026-01-06T12:00:00Z") - running.clock.now() - 1)
    await idle(running)
    assert by_phone(await running.detail(job_id))[LONDON]["status"] == "pending"
    await running.clock.advance(1)
    await settled(running, job_id, p442079460001="completed")


async def test_a_contact_held_by_the_cap_shows_its_windows_next_opening_after_it(
    start_app: StartApp, tmp_path: Path
) -> None:
    """The cap lifts at a moment the contact's windows are closed (Tuesday noon; it may be
    called on Mondays only): its nextCallAt is the windows' next opening after that, the next
    Monday, not the moment the cap lifts (found from outside; it was dialed then all the
    same)."""
    running = await start_lawful(
        start_app,
        tmp_path,
        calling_windows=[{"days": ["mon"], "start": "11:00", "end": "13:00"}],
        max_attempts_per_number_per_day=2,
    )
    third = await after_two_dials_of_london(running)
    body = await running.detail(third["batchJobId"])
    waiting = by_phone(body)[LONDON]
    assert (waiting["status"], waiting["attemptCount"]) == ("pending", 0)
    assert waiting["nextCallAt"] == "2026-01-12T11:00:00Z"


async def test_cap_holds_back_retries_of_the_same_number(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Retries count: a busy number with cap 2 is dialed twice, then its retry waits for the
    first dial to turn 24 h old."""
    config = make_config(
        tmp_path,
        organizations=[
            {
                "id": ORG,
                **{
                    "calling_windows": [
                        {"days": list(windows.DAYS), "start": "00:00", "end": "24:00"}
                    ]
                },
                "max_attempts_per_number_per_day": 2,
            },
            {"id": OTHER_ORG},
        ],
        engine={"retry_delay_seconds": 60, "retry_backoff": 1.0},
        telephony={"simulated": {"rules": [{"prefix": LONDON, "outcome": "busy"}]}},
    )
    running = await start_app(config, clock=FakeClock(start=ts(MONDAY_NOON_UTC)))
    created = await running.create_json([{"phone": LONDON}], maxAttempts=5)
    job_id = created["batchJobId"]
    await settled(running, job_id, p442079460001="queued")
    await running.clock.advance(60)
    await wait_until(lambda: _attempts(running, job_id, LONDON, 2))
    await running.clock.advance(60)
    await idle(running)
    contact = by_phone(await running.detail(job_id))[LONDON]
    assert (contact["status"], contact["attemptCount"]) == ("queued", 2)
    assert contact["nextCallAt"] == "2026-01-06T12:00:00Z"


async def test_operator_retry_at_the_cap_waits_for_it_to_lift_then_dials(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A contact re-queued by /retry while its number is at its cap waits until the cap lifts
    (nextCallAt) and is dialed then (it had no nextCallAt and was never woken)."""
    config = make_config(
        tmp_path,
        organizations=[
            {
                "id": ORG,
                "calling_windows": [{"days": list(windows.DAYS), "start": "00:00", "end": "24:00"}],
                "max_attempts_per_number_per_day": 1,
            },
            {"id": OTHER_ORG},
        ],
        telephony={"simulated": {"rules": [{"prefix": LONDON, "outcome": "busy"}]}},
    )
    running = await start_app(config, clock=FakeClock(start=ts(MONDAY_NOON_UTC)))
    created = await running.create_json([{"phone": LONDON}], maxAttempts=1)
    job_id = created["batchJobId"]
    await running.wait_status(job_id, "completed")
    resp = await running.client.post(f"/batch/jobs/{job_id}/retry", headers=running.headers())
    assert (resp.status, (await resp.json())["contactsRequeued"]) == (200, 1)
    await idle(running)
    contact = by_phone(await running.detail(job_id))[LONDON]
    assert (contact["status"], contact["attemptCount"]) == ("queued", 1)
    assert contact["nextCallAt"] == contact["nextRetryAt"] == "2026-01-06T12:00:00Z"
    await running.clock.advance(ts("2026-01-06T12:00:00Z") - running.clock.now() - 1)
    await idle(running)
    assert by_phone(await running.detail(job_id))[LONDON]["attemptCount"] == 1
    await running.clock.advance(1)
    body = await running.wait_status(job_id, "completed")
    assert by_phone(body)[LONDON]["attemptCount"] == 2


async def test_a_number_is_never_in_two_live_calls_of_one_organization(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Two jobs with the same number: its second call starts only after the first ends."""
    config = make_config(tmp_path, telephony={"simulated": {"call_seconds": 30}})
    running = await start_app(config, clock=FakeClock(start=ts(MONDAY_NOON_UTC)))
    one = await running.create_json([{"phone": LONDON}])
    two = await running.create_json([{"phone": LONDON}, {"phone": SYDNEY}])
    await settled(running, two["batchJobId"], p61291234567="dialing")
    await idle_with_live(running)
    statuses = [
        by_phone(await running.detail(job))[LONDON]["status"]
        for job in (one["batchJobId"], two["batchJobId"])
    ]
    assert sorted(statuses) == ["dialing", "pending"]
    assert running.engine.live_calls() == 2
    await running.clock.advance(30)
    for job in (one["batchJobId"], two["batchJobId"]):
        await wait_until(lambda job=job: _attempts(running, job, LONDON, 1))
    await wait_until(lambda: _live(running, 1))
    await running.clock.advance(30)
    await running.wait_status(one["batchJobId"], "completed")
    await running.wait_status(two["batchJobId"], "completed")


async def idle_with_live(running: Running) -> None:
    """Let the engine park (calls may still be live, each waiting on the fake clock)."""
    await running.clock.advance(0)
    await wait_until(lambda: _parked(running))
    await wait_until(lambda: _calls_on_the_clock(running))


async def _calls_on_the_clock(running: Running) -> bool:
    return running.clock.sleeping >= running.engine.live_calls()


async def _live(running: Running, count: int) -> bool:
    return running.engine.live_calls() == count


async def _parked(running: Running) -> bool:
    return running.engine.idle.is_set()


# ------------------------------------------------------------------ call records


async def test_call_records_export(start_app: StartApp, tmp_path: Path) -> None:
    """GET /calls/export streams one row per attempt of the organization in the range, with
    both numbers, UTC times, duration, outcome and SIP code; other organizations' are not in it."""
    config = make_config(
        tmp_path,
        telephony={
            "simulated": {
                "call_seconds": 42,
                "rules": [{"prefix": SYDNEY, "outcome": "busy", "sip_code": 486}],
            }
        },
    )
    running = await start_app(config, clock=FakeClock(start=ts(MONDAY_NOON_UTC)))
    created = await running.create_json([{"phone": LONDON}, {"phone": SYDNEY}], maxAttempts=1)
    await settled(running, created["batchJobId"], p442079460001="dialing")
    await idle_with_live(running)
    await running.clock.advance(60)
    await running.wait_status(created["batchJobId"], "completed")
    other = await running.create_json(
        [{"phone": LONDON}], key=running.other_key, fromPhoneNumberId="num_b"
    )
    await wait_until(lambda: _live(running, 1))
    await running.clock.advance(60)
    await other_completed(running, other["batchJobId"])
    resp = await running.client.get(
        "/calls/export",
        params={"from": "2026-01-05T00:00:00Z", "to": "2026-01-06T00:00:00Z"},
        headers=running.headers(),
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    # Numbers start with "+": written with a leading ' so a spreadsheet never reads a formula.
    assert [r["called_number"] for r in rows] == [f"'{LONDON}", f"'{SYDNEY}"]
    london, sydney = rows
    assert london["calling_number"] == "'+12025550100"
    assert london["job_id"] == created["batchJobId"]
    assert london["attempt_id"].startswith("attempt_")
    assert london["contact_id"].startswith("contact_")
    assert london["started_at"] == MONDAY_NOON_UTC
    assert (london["outcome"], london["duration_seconds"]) == ("completed", "42")
    assert london["answered_at"] and london["ended_at"]
    assert (sydney["outcome"], sydney["sip_code"]) == ("busy", "486")
    empty = await running.client.get(
        "/calls/export", params={"from": "2026-01-06T00:00:00Z"}, headers=running.headers()
    )
    assert len((await empty.text()).strip().splitlines()) == 1  # the header only
    bad = await running.client.get(
        "/calls/export", params={"from": "yesterday"}, headers=running.headers()
    )
    assert (bad.status, (await bad.json())["code"]) == (400, "invalid_time_range")
    backwards = await running.client.get(
        "/calls/export",
        params={"from": "2026-01-06T00:00:00Z", "to": "2026-01-05T00:00:00Z"},
        headers=running.headers(),
    )
    assert backwards.status == 400


async def test_operator_retry_waits_for_the_window(start_app: StartApp, tmp_path: Path) -> None:
    """Contacts an operator re-queues after the window closed wait for its next opening."""
    config = make_config(
        tmp_path,
        organizations=[
            {
                "id": ORG,
                "calling_windows": [{"days": list(windows.DAYS), "start": "12:00", "end": "12:05"}],
            },
            {"id": OTHER_ORG},
        ],
        telephony={"simulated": {"rules": [{"prefix": LONDON, "outcome": "busy"}]}},
    )
    running = await start_app(config, clock=FakeClock(start=ts(MONDAY_NOON_UTC)))
    created = await running.create_json([{"phone": LONDON}], maxAttempts=1)
    job_id = created["batchJobId"]
    await running.wait_status(job_id, "completed")
    await running.clock.advance(3600)
    resp = await running.client.post(f"/batch/jobs/{job_id}/retry", headers=running.headers())
    assert resp.status == 200, await resp.json()
    await wait_until(lambda: _waits_until(running, job_id, LONDON, "2026-01-06T12:00:00Z"))
    contact = by_phone(await running.detail(job_id))[LONDON]
    assert (contact["status"], contact["attemptCount"]) == ("queued", 1)
    await running.clock.advance(ts("2026-01-06T12:00:00Z") - running.clock.now())
    await wait_until(lambda: _attempts(running, job_id, LONDON, 2))


async def _waits_until(running: Running, job_id: str, phone: str, when: str) -> bool:
    return bool(by_phone(await running.detail(job_id))[phone]["nextCallAt"] == when)


async def test_a_scheduled_job_started_early_still_keeps_to_the_window(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A job scheduled for a time its contacts' window is open, started at night, waits."""
    running = await start_lawful(start_app, tmp_path, at="2026-01-05T03:00:00Z")  # 22:00 NY
    created = await running.create_json(
        [{"phone": NEW_YORK}], scheduledStartTime="2026-01-05T15:00:00Z"
    )
    job_id = created["batchJobId"]
    resp = await running.client.post(f"/batch/jobs/{job_id}/start", headers=running.headers())
    assert resp.status == 200
    await wait_until(lambda: _running_and_idle(running, job_id))
    contact = by_phone(await running.detail(job_id))[NEW_YORK]
    assert (contact["status"], contact["nextCallAt"]) == ("pending", "2026-01-05T13:00:00Z")


async def test_one_person_one_spelling_for_the_list_and_duplicates(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A national trunk prefix written after the country code (+44 0 20...) is the same person
    as +44 20...: listed under one spelling, it suppresses the other at create, both spellings
    in one upload are one contact, and the list is looked up and taken off by either."""
    running = await start_lawful(start_app, tmp_path)
    trunk = "+4402079460001"  # LONDON with the trunk 0 kept
    status, body = await dnc_post(running, [trunk])
    assert (status, body["added"]) == (200, 1), body
    resp = await running.client.get("/dnc", params={"number": LONDON}, headers=running.headers())
    assert [n["number"] for n in (await resp.json())["numbers"]] == [LONDON]
    created = await running.create_json([{"phone": LONDON}, {"phone": NEW_YORK}])
    assert created["suppressedCount"] == 1  # LONDON, listed as the trunk spelling
    created = await running.create_json([{"phone": "+493012345678"}, {"phone": "+4903012345678"}])
    assert (created["totalContacts"], created["duplicatesRemoved"]) == (1, 1)
    detail = await running.detail(created["batchJobId"])
    assert [c["phoneNumber"] for c in detail["contacts"]] == ["+493012345678"]
    resp = await running.client.delete(f"/dnc/{trunk}", headers=running.headers())
    assert (resp.status, await resp.json()) == (200, {"removed": LONDON})
    # Read from a region, the trunk spelling of a listed number is suppressed too.
    assert (await dnc_post(running, ["+61291234567"]))[0] == 200
    created = await running.create_json([{"phone": "(02) 9123 4567"}], defaultCountry="AU")
    assert created["suppressedCount"] == 1


async def test_numbers_stored_before_the_upgrade_are_respelled_once(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Migration 0016's chore: at the next start, a contact still to be dialed and a listing
    stored under a trunk-0 spelling take the canonical one too, so a listing under either
    spelling stops the call; once done, it is not done again."""
    running = await start_lawful(start_app, tmp_path, at="2026-01-05T05:00:00Z")  # windows shut
    created = await running.create_json([{"phone": LONDON}, {"phone": NEW_YORK}])
    job_id = created["batchJobId"]
    db = running.store.path
    running.engine.stop()
    await running.client.close()
    with sqlite3.connect(db) as conn:  # as an older version stored them
        conn.execute("UPDATE contacts SET phone = '+4402079460001' WHERE phone = ?", (LONDON,))
        conn.execute(
            "INSERT INTO dnc_numbers (organization_id, number, reason, source, added_at)"
            " VALUES (?, '+610291234567', 'asked', 'api', 0)",
            (ORG,),
        )
        conn.execute("INSERT INTO chores (name) VALUES ('canonical_phones')")
    with capture_logs() as logs:
        again = await start_lawful(start_app, tmp_path, at="2026-01-05T05:00:00Z")
    assert [
        (e["contacts"], e["do_not_call_listings_added"])
        for e in logs
        if e["event"] == "numbers_respelled"
    ] == [(1, 1)]
    detail = await again.detail(job_id)
    assert sorted(c["phoneNumber"] for c in detail["contacts"]) == sorted([LONDON, NEW_YORK])
    resp = await again.client.get("/dnc", headers=again.headers())
    assert {n["number"] for n in (await resp.json())["numbers"]} == {SYDNEY, "+610291234567"}
    status, body = await dnc_post(again, [LONDON])
    assert (status, body["added"]) == (200, 1)
    assert (await again.detail(job_id))["statusBreakdown"]["cancelled"] == 1
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM chores").fetchone()[0] == 0


async def test_a_retry_whose_common_window_vanished_is_cancelled_not_dialed_at_any_hour(
    start_app: StartApp, tmp_path: Path
) -> None:
    """An Australian mobile spans 8 zones, Cocos to Lord Howe: weekdays 09:00-13:15 they share
    15 minutes a day until daylight saving starts on 4 October 2026, then none. Busy on 2
    October, its retry (an hour later) falls after that: it is cancelled `no_common_window` like
    a contact created without one. (It waited with no interval, and was dialed at 14:00 Lord
    Howe.)"""
    mobile = "+61412345678"
    weekdays = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "13:15"}]
    config = make_config(
        tmp_path,
        engine={"retry_delay_seconds": 3600},
        organizations=[{"id": ORG, "max_attempts_per_number_per_day": 0}, {"id": OTHER_ORG}],
        telephony={"simulated": {"rules": [{"prefix": mobile, "outcome": "busy"}]}},
    )
    running = await start_app(config, clock=FakeClock(start=ts("2026-10-02T02:30:00Z")))
    created = await running.create_json([{"phone": mobile}], callingWindows=weekdays, maxAttempts=3)
    assert created["noCommonWindowCount"] == 0
    job_id = created["batchJobId"]

    async def attempted() -> bool:
        contact = by_phone(await running.detail(job_id))[mobile]
        return contact["attemptCount"] == 1 and contact["status"] != "dialing"

    await wait_until(attempted)
    await running.clock.advance(ts("2026-10-02T03:30:00Z") - running.clock.now())  # its retry
    detail = await running.wait_status(job_id, "completed")
    contact = by_phone(detail)[mobile]
    assert (contact["status"], contact["failureReason"]) == ("cancelled", "no_common_window")
    assert contact["attemptCount"] == 1
