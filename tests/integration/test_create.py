"""POST /batch/create: CSV and JSON intake, validation, error codes, no partial state."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import FormData

from tests.conftest import NUMBER, ORG, Running, StartApp, make_config, record_threads


def form(csv_text: str | bytes, **fields: str) -> FormData:
    data = FormData()
    data.add_field(
        "file",
        io.BytesIO(csv_text.encode() if isinstance(csv_text, str) else csv_text),
        filename="contacts.csv",
        content_type="text/csv",
    )
    data.add_field("fromPhoneNumberId", fields.pop("fromPhoneNumberId", NUMBER))
    data.add_field("name", fields.pop("name", "csv job"))
    for key, value in fields.items():
        data.add_field(key, value)
    return data


async def post_csv(running: Running, csv_text: str | bytes, **fields: str) -> tuple[int, Any]:
    resp = await running.client.post(
        "/batch/create", data=form(csv_text, **fields), headers=running.headers()
    )
    return resp.status, await resp.json()


async def post_json(running: Running, body: Any) -> tuple[int, Any]:
    resp = await running.client.post("/batch/create", json=body, headers=running.headers())
    return resp.status, await resp.json()


async def job_count(running: Running) -> int:
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": ORG}, headers=running.headers()
    )
    total: int = (await resp.json())["total"]
    return total


async def test_csv_upload_reports_invalid_rows_and_duplicates(running: Running) -> None:
    """A CSV with a BOM, mixed-case header, bad rows and a duplicate keeps the good rows."""
    csv_text = (
        "\ufeffName,PHONE,plan\r\n"
        "Ada,+12025550101,gold\r\n"
        "Bad,12025550102,x\r\n"
        "Spaces,+1 202 555 0103,x\r\n"
        "Dup,+12025550101,again\r\n"
        "Alan,+442071838750,silver\r\n"
    )
    status, body = await post_csv(running, csv_text)
    assert status == 201, body
    assert body["success"] is True
    assert body["totalContacts"] == 2
    assert body["status"] == "pending"
    assert body["invalidCount"] == 2
    assert [r["row"] for r in body["invalidRows"]] == [3, 4]
    assert body["invalidRows"][0]["value"] == "12025550102"
    assert body["duplicatesRemoved"] == 1
    assert body["estimatedCost"].startswith("$")
    assert body["estimatedDuration"]
    detail = await running.detail(body["batchJobId"])
    data = [c["contactData"] for c in detail["contacts"]]
    assert data[0] == {"Name": "Ada", "phone": "+12025550101", "plan": "gold"}
    assert [c["phoneNumber"] for c in detail["contacts"]] == ["+12025550101", "+442071838750"]


async def test_semicolon_delimited_csv(running: Running) -> None:
    """Semicolon-delimited CSVs are read like comma-delimited ones."""
    status, body = await post_csv(running, "phone;name\n+12025550101;A\n+12025550102;B\n")
    assert status == 201, body
    assert body["totalContacts"] == 2


@pytest.mark.parametrize(
    ("csv_text", "code"),
    [
        ("name,fax\nA,+12025550101\n", "missing_phone_column"),
        ("phone\n12025550101\nabc\n", "no_valid_contacts"),
        ("", "invalid_csv"),
        (b"\xff\xfe\x00p\x00h\x00", "invalid_csv"),
        ('phone,name\n+12025550101,"unterminated\n', "invalid_csv"),
    ],
)
async def test_bad_csv_is_rejected_without_creating_a_job(
    running: Running, csv_text: str | bytes, code: str
) -> None:
    """Unusable CSVs answer 400 with the documented code and leave no job behind."""
    status, body = await post_csv(running, csv_text)
    assert status == 400, body
    assert body == {"success": False, "error": body["error"], "code": code, **_extra(body)}
    assert body["error"]
    assert await job_count(running) == 0


def _extra(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ("success", "error", "code")}


async def test_too_many_contacts(running: Running) -> None:
    """More than 10,000 valid contacts is too_many_contacts, in CSV and in JSON."""
    numbers = [f"+1202555{i:04d}" for i in range(10_000)] + ["+12025560101"]
    status, body = await post_csv(running, "phone\n" + "\n".join(numbers))
    assert (status, body["code"]) == (400, "too_many_contacts")
    contacts = [{"phone": n} for n in numbers]
    status, body = await post_json(
        running, {"fromPhoneNumberId": NUMBER, "name": "x", "contacts": contacts}
    )
    assert (status, body["code"]) == (400, "too_many_contacts")
    assert await job_count(running) == 0


async def test_csv_over_10mb_is_413(running: Running) -> None:
    """A CSV file over 10 MB is refused with 413 and creates nothing."""
    big = "phone,notes\n" + ("+12025550101," + "x" * 1000 + "\n") * 10_500
    status, body = await post_csv(running, big)
    assert status == 413
    assert body["code"] == "file_too_large"
    assert await job_count(running) == 0


async def test_json_invalid_phone_names_indexes(running: Running) -> None:
    """In JSON mode any invalid phone rejects the request, naming the offending indexes."""
    contacts: list[Any] = [
        {"phone": "+12025550101"},
        {"phone": "2025550102"},
        {"phone": "+12025550103"},
        {"phone": 12025550104},
    ]
    status, body = await post_json(
        running, {"fromPhoneNumberId": NUMBER, "name": "x", "contacts": contacts}
    )
    assert status == 400
    assert body["code"] == "invalid_phone_format"
    assert body["invalidIndexes"] == [1, 3]
    assert await job_count(running) == 0


async def test_json_contacts_keep_custom_fields(running: Running) -> None:
    """Custom fields of JSON contacts are stored as-is in contactData."""
    created = await running.create_json(
        [{"phone": "+12025550101", "name": "Ada", "balance": 12.5, "tags": ["vip"]}]
    )
    detail = await running.detail(created["batchJobId"])
    assert detail["contacts"][0]["contactData"] == {
        "phone": "+12025550101",
        "name": "Ada",
        "balance": 12.5,
        "tags": ["vip"],
    }


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"name": ""}, "validation_error"),
        ({"name": "x" * 201}, "validation_error"),
        ({"description": "x" * 1001}, "validation_error"),
        ({"concurrentCallLimit": 0}, "validation_error"),
        ({"concurrentCallLimit": 51}, "validation_error"),
        ({"concurrentCallLimit": "5"}, "validation_error"),
        ({"maxAttempts": 11}, "validation_error"),
        ({"maxAttempts": True}, "validation_error"),
        ({"surprise": 1}, "validation_error"),
        ({"contacts": "nope"}, "validation_error"),
        ({"timezone": "Mars/Olympus"}, "invalid_timezone"),
        ({"scheduledStartTime": "2020-01-01T00:00:00Z"}, "past_scheduled_time"),
        ({"scheduledStartTime": "tomorrow-ish"}, "invalid_scheduled_time"),
        ({"scheduledStartTime": "9999-12-31T23:59:59-14:00"}, "invalid_scheduled_time"),
        (
            {"scheduledStartTime": "9999-12-31T23:59:59", "timezone": "America/New_York"},
            "invalid_scheduled_time",
        ),
        ({"fromPhoneNumberId": "num_noagent"}, "no_outbound_agent"),
        ({"fromPhoneNumberId": "num_b"}, "phone_number_not_found"),
        ({"contacts": []}, "no_valid_contacts"),
    ],
)
async def test_json_validation_errors(running: Running, change: dict[str, Any], code: str) -> None:
    """Wrong values, wrong types and unknown fields answer a 4xx with a clear code."""
    body: dict[str, Any] = {
        "fromPhoneNumberId": NUMBER,
        "name": "x",
        "contacts": [{"phone": "+12025550101"}],
    }
    body.update(change)
    status, answer = await post_json(running, body)
    assert 400 <= status < 500, answer
    assert answer["success"] is False
    assert answer["code"] == code, answer
    assert await job_count(running) == 0


async def test_json_body_arriving_in_pieces_is_read_whole(running: Running) -> None:
    """A JSON body sent in several network writes (chunked) is read to its end, not cut short."""
    contacts = [{"phone": f"+1212555{i:04d}"} for i in range(2000)]
    body = json.dumps({"fromPhoneNumberId": NUMBER, "name": "slow", "contacts": contacts})
    pieces = [body[i : i + 16_000].encode() for i in range(0, len(body), 16_000)]

    async def slowly() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            await asyncio.sleep(0.01)  # network pacing: each piece arrives on its own

    headers = {**running.headers(), "Content-Type": "application/json"}
    resp = await running.client.post("/batch/create", data=slowly(), headers=headers)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["totalContacts"] == 2000


async def test_malformed_json_and_wrong_media_type(running: Running) -> None:
    """Malformed JSON is invalid_json; a body that is neither JSON nor multipart is 415."""
    resp = await running.client.post(
        "/batch/create",
        data=b'{"name": ',
        headers={**running.headers(), "Content-Type": "application/json"},
    )
    assert resp.status == 400
    assert (await resp.json())["code"] == "invalid_json"
    resp = await running.client.post(
        "/batch/create",
        data=b"phone\n+12025550101",
        headers={**running.headers(), "Content-Type": "text/plain"},
    )
    assert resp.status == 415
    assert (await resp.json())["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"garbage"),
        ("multipart/form-data; boundary=xyz", b"garbage"),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nbroken header line\r\n\r\nx\r\n--xyz--"),
    ],
)
async def test_malformed_multipart_is_invalid_csv(
    running: Running, content_type: str, body: bytes
) -> None:
    """A multipart body without a boundary or with broken framing is 400 invalid_csv, no job."""
    headers = {**running.headers(), "Content-Type": content_type}
    resp = await running.client.post("/batch/create", data=body, headers=headers)
    assert resp.status == 400
    assert (await resp.json())["code"] == "invalid_csv"
    assert await job_count(running) == 0


async def test_multipart_without_file_is_invalid_csv(running: Running) -> None:
    """A multipart request without the file field is invalid_csv."""
    data = FormData()
    data.add_field("fromPhoneNumberId", NUMBER)
    data.add_field("name", "no file")
    resp = await running.client.post("/batch/create", data=data, headers=running.headers())
    assert resp.status == 400
    assert (await resp.json())["code"] == "invalid_csv"


async def test_form_fields_are_validated(running: Running) -> None:
    """Form fields are converted and range-checked like JSON ones."""
    status, body = await post_csv(running, "phone\n+12025550101\n", concurrentCallLimit="abc")
    assert (status, body["code"]) == (400, "validation_error")
    status, body = await post_csv(running, "phone\n+12025550101\n", maxAttempts="0")
    assert (status, body["code"]) == (400, "validation_error")
    status, body = await post_csv(
        running, "phone\n+12025550101\n", concurrentCallLimit="7", maxAttempts="2"
    )
    assert status == 201, body
    detail = await running.detail(body["batchJobId"])
    assert detail["concurrentCallLimit"] == 7
    assert detail["retryPolicy"]["maxAttempts"] == 2


async def test_scheduled_time_in_timezone(running: Running) -> None:
    """A naive scheduledStartTime is read in `timezone`; an explicit offset wins; both in UTC Z."""
    created = await running.create_json(
        [{"phone": "+12025550101"}],
        scheduledStartTime="2026-07-01T09:00:00",
        timezone="America/New_York",
    )
    assert created["status"] == "scheduled"
    assert created["scheduledStartTime"] == "2026-07-01T13:00:00Z"
    created = await running.create_json(
        [{"phone": "+12025550102"}],
        scheduledStartTime="2026-07-01T09:00:00+02:00",
        timezone="America/New_York",
    )
    assert created["scheduledStartTime"] == "2026-07-01T07:00:00Z"


async def test_insufficient_credits(start_app: StartApp, tmp_path: Any) -> None:
    """A job whose estimated cost exceeds the organization's credits is refused."""
    config = make_config(
        tmp_path,
        organizations=[{"id": ORG, "credits_usd": 0.5}, {"id": "org_b"}],
        pricing={"usd_per_minute": 1.0},
        engine={"default_call_seconds": 60},
    )
    running = await start_app(config)
    status, body = await post_json(
        running,
        {
            "fromPhoneNumberId": NUMBER,
            "name": "x",
            "contacts": [{"phone": "+12025550101"}],
        },
    )
    assert status == 402
    assert body["code"] == "insufficient_credits"
    assert await job_count(running) == 0


async def test_hostile_strings_are_stored_as_data(running: Running) -> None:
    """Formula-like, markup and control strings are kept verbatim as data, never interpreted."""
    hostile = "=cmd|' /C calc'!A0<script>alert(1)</script>\u202e'; DROP TABLE jobs;--"
    created = await running.create_json([{"phone": "+12025550101", "name": hostile}], name=hostile)
    detail = await running.detail(created["batchJobId"])
    assert detail["name"] == hostile
    assert detail["contacts"][0]["contactData"]["name"] == hostile


# ----------------------------------------------------------------- files as tools export them


async def test_excel_windows_csv_with_default_country(running: Running) -> None:
    """An Excel CSV in Windows-1252 with a 'Phone Number' column of typed numbers: created, the
    answer says how the file was read, and reports the row that is still invalid."""
    csv_text = (
        "Name;Phone Number;Note\r\n"
        "Zoë;(202) 555-0141;déjà vu\r\n"
        "Ann;2025550145;€ 12\r\n"
        "Bob;12025550152;\r\n"
        "Eve;555-01;\r\n"
    ).encode("cp1252")
    status, body = await post_csv(running, csv_text, defaultCountry="US")
    assert status == 201, body
    assert body["totalContacts"] == 3 and body["invalidCount"] == 1
    assert (body["detectedEncoding"], body["phoneColumn"]) == ("windows-1252", "Phone Number")
    assert body["invalidRows"] == [
        {"row": 5, "value": "555-01", "reason": body["invalidRows"][0]["reason"]}
    ]
    assert "warning" not in body
    detail = await running.detail(body["batchJobId"])
    assert [c["phoneNumber"] for c in detail["contacts"]] == [
        "+12025550141",
        "+12025550145",
        "+12025550152",
    ]
    assert detail["contacts"][0]["contactData"] == {
        "Name": "Zoë",
        "phone": "+12025550141",
        "Note": "déjà vu",
    }


async def test_mostly_invalid_csv_is_created_with_a_warning(running: Running) -> None:
    """More than half the rows invalid: the job is still created, the answer carries a warning."""
    status, body = await post_csv(running, "phone\n+12025550101\n(202) 555-0102\n2025550103\n")
    assert status == 201, body
    assert body["invalidCount"] == 2 and body["totalContacts"] == 1
    assert body["warning"].startswith("2 of 3 rows")


async def test_phone_column_option_and_missing_column_lists_columns(running: Running) -> None:
    """phoneColumn names the column; without a usual name the error lists the columns found."""
    status, body = await post_csv(running, "Who,Dial\nAnn,+12025550101\n")
    assert (status, body["code"]) == (400, "missing_phone_column")
    assert body["columnsFound"] == ["Who", "Dial"] and "'Dial'" in body["error"]
    status, body = await post_csv(running, "Who,Dial\nAnn,+12025550101\n", phoneColumn="Dial")
    assert status == 201, body
    assert body["phoneColumn"] == "Dial"


async def test_utf16_tab_delimited_upload(running: Running) -> None:
    """Excel's "Unicode Text" (UTF-16 with BOM, tabs) is read."""
    data = "\ufeffmobile\tname\r\n+12025550101\tLi Lei\r\n".encode("utf-16-le")
    status, body = await post_csv(running, data)
    assert status == 201, body
    assert body["detectedEncoding"] == "utf-16" and body["totalContacts"] == 1


async def test_default_country_in_json_and_invalid_count(running: Running) -> None:
    """JSON mode takes defaultCountry and phoneNumber keys; the answer reports invalidCount."""
    status, body = await post_json(
        running,
        {
            "fromPhoneNumberId": NUMBER,
            "name": "x",
            "defaultCountry": "GB",
            "contacts": [{"phoneNumber": "020 7183 8750"}, {"Phone": "+44 (0)20 7183 8751"}],
        },
    )
    assert status == 201, body
    assert (body["totalContacts"], body["invalidCount"]) == (2, 0)
    detail = await running.detail(body["batchJobId"])
    assert [c["phoneNumber"] for c in detail["contacts"]] == ["+442071838750", "+442071838751"]


async def test_json_refusal_names_indexes_without_none(running: Running) -> None:
    """A JSON contact without a phone is refused by index; the answer never says None."""
    status, body = await post_json(
        running,
        {
            "fromPhoneNumberId": NUMBER,
            "name": "x",
            "contacts": [{"phone": "+12025550101"}, {"Phone": None}],
        },
    )
    assert (status, body["code"]) == (400, "invalid_phone_format")
    assert body["invalidContacts"] == [
        {"index": 1, "value": "", "reason": body["invalidContacts"][0]["reason"]}
    ]
    assert "None" not in json.dumps(body)


@pytest.mark.parametrize("mode", ["csv", "json"])
async def test_unknown_default_country_is_400(running: Running, mode: str) -> None:
    """An unknown defaultCountry is refused in both modes and creates nothing."""
    if mode == "csv":
        status, body = await post_csv(running, "phone\n+12025550101\n", defaultCountry="ZZ")
    else:
        status, body = await post_json(
            running,
            {
                "fromPhoneNumberId": NUMBER,
                "name": "x",
                "defaultCountry": "ZZ",
                "contacts": [{"phone": "+12025550101"}],
            },
        )
    assert (status, body["code"]) == (400, "invalid_default_country")
    assert await job_count(running) == 0


async def test_calling_windows_of_a_create_are_worked_out_off_the_event_loop(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each contact's zones and first calling interval are worked out on a thread (about 30 ms
    for 10,000 contacts): on the event loop they would hold every request and slot refill."""
    import threading

    from dialer import service

    threads = record_threads(monkeypatch, service, "_contacts_in_windows")
    status, body = await post_json(
        running,
        {
            "fromPhoneNumberId": NUMBER,
            "name": "windows",
            "contacts": [{"phone": "+12025550101"}, {"phone": "+442071838750"}],
        },
    )
    assert status == 201, body
    assert body["totalContacts"] == 2
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
