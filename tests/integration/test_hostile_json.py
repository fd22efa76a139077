"""Pathological JSON on every route that takes a body: 400 in the envelope, nothing written."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from aiohttp import FormData

from api import batch, jsonbody
from api import keys as appkeys
from dialer import intake
from tests.conftest import NUMBER, ORG, Running

HUGE_INT = "1" * 5000
DEEP = "[" * 100_000 + "]" * 100_000


def create_body(contact_json: str) -> str:
    """A create request whose single contact is `contact_json` (raw JSON text)."""
    return f'{{"fromPhoneNumberId": "{NUMBER}", "name": "x", "contacts": [{contact_json}]}}'


PATHOLOGICAL_CREATES = {
    "huge integer": create_body(f'{{"phone": "+12025550101", "n": {HUGE_INT}}}'),
    "deep nesting": create_body(f'{{"phone": "+12025550101", "n": {DEEP}}}'),
    "moderate nesting": create_body('{"phone": "+12025550101", "n": ' + "[" * 40 + "]" * 40 + "}"),
    "lone surrogate value": create_body('{"phone": "+12025550101", "n": "\\udfff"}'),
    "lone surrogate key": create_body('{"phone": "+12025550101", "\\ud800": 1}'),
    "surrogate in name": (
        f'{{"fromPhoneNumberId": "{NUMBER}", "name": "\\udfff", '
        '"contacts": [{"phone": "+12025550101"}]}'
    ),
    "NUL in a value": create_body('{"phone": "+12025550101", "n": "v\\u0000al"}'),
    "NUL in a key": create_body('{"phone": "+12025550101", "k\\u0000ey": "v"}'),
    "NaN": create_body('{"phone": "+12025550101", "n": NaN}'),
    "Infinity": create_body('{"phone": "+12025550101", "n": -Infinity}'),
    "float overflow": create_body('{"phone": "+12025550101", "n": 1e999}'),
    "millions of empty objects": create_body('{"phone": "+12025550101"}' + ", {}" * 400_000),
    "millions of empty arrays": create_body(
        '{"phone": "+12025550101", "n": [' + "[]," * 400_000 + "[]]}"
    ),
    "an object of too many keys": create_body(
        "{" + ",".join(f'"k{i}": 1' for i in range(1001)) + ', "phone": "+12025550101"}'
    ),
    "huge integer field": (
        f'{{"fromPhoneNumberId": "{NUMBER}", "name": "x", "maxAttempts": {HUGE_INT}, '
        '"contacts": [{"phone": "+12025550101"}]}'
    ),
}


async def post_raw(running: Running, method: str, path: str, body: str) -> tuple[int, Any]:
    resp = await running.client.request(
        method,
        path,
        data=io.BytesIO(body.encode("utf-8", "surrogatepass")),
        headers={**running.headers(), "Content-Type": "application/json"},
    )
    return resp.status, await resp.json()


async def job_total(running: Running) -> int:
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": ORG}, headers=running.headers()
    )
    total: int = (await resp.json())["total"]
    return total


@pytest.mark.parametrize("case", sorted(PATHOLOGICAL_CREATES))
async def test_pathological_create_is_invalid_json(running: Running, case: str) -> None:
    """Each pathological create body answers 400 invalid_json and creates no job."""
    status, body = await post_raw(running, "POST", "/batch/create", PATHOLOGICAL_CREATES[case])
    assert (status, body["code"]) == (400, "invalid_json"), body
    assert body["success"] is False
    assert await job_total(running) == 0


@pytest.mark.parametrize(
    "payload",
    [
        '{"reason": "\\udfff"}',
        f'{{"reason": {HUGE_INT}}}',
        DEEP,
        '{"reason": NaN}',
        '{"\\udc00": 1}',
    ],
)
async def test_pathological_bodies_on_job_controls(running: Running, payload: str) -> None:
    """Reschedule, pause and retry answer 400 invalid_json (413 payload_too_large past their
    64 KB) and leave the job as it was."""
    created = await running.create_json(
        [{"phone": "+12025550101"}], scheduledStartTime="2099-01-01T00:00:00Z"
    )
    job_id = created["batchJobId"]
    for method, path in (
        ("PATCH", f"/batch/jobs/{job_id}/reschedule"),
        ("POST", f"/batch/jobs/{job_id}/pause"),
        ("POST", f"/batch/jobs/{job_id}/retry"),
    ):
        status, body = await post_raw(running, method, path, payload)
        refused = (
            (413, "payload_too_large")
            if len(payload.encode()) > batch.SMALL_JSON_BYTES
            else (400, "invalid_json")
        )
        assert (status, body["code"]) == refused, (path, body)
    detail = await running.detail(job_id)
    assert detail["status"] == "scheduled"
    assert detail["scheduledStartTime"] == "2099-01-01T00:00:00Z"


async def test_validation_message_lists_at_most_twenty_problems(running: Running) -> None:
    """Thousands of unknown fields: the message names the first 20 and stays under 4 KB."""
    body: dict[str, Any] = {"fromPhoneNumberId": NUMBER, "name": "x", "contacts": []}
    body.update({f"field_{i}_" + "y" * 300: 1 for i in range(900)})
    resp = await running.client.post("/batch/create", json=body, headers=running.headers())
    answer = await resp.json()
    assert (resp.status, answer["code"]) == (400, "validation_error")
    assert len(answer["error"]) < 4096
    assert answer["error"].count("unknown field") == 20
    assert answer["error"].endswith("and 880 more")


async def test_one_object_of_a_million_keys_costs_little(running: Running) -> None:
    """An 8 MB body of one object of 700,000 unknown keys was refused only after every key had
    been listed as a problem (600 MB, seconds of the event loop); an object of more than
    1,000 keys is now refused as the JSON is checked, on every JSON route (the routes that
    take a few small fields refuse it by its size, unread)."""
    raw = "{" + ",".join(f'"k{i}":1' for i in range(200_000)) + "}"
    created = await running.create_json([{"phone": "+12025550101"}])
    for method, path in (("POST", "/batch/create"), ("POST", "/dnc")):
        status, body = await post_raw(running, method, path, raw)
        assert (status, body["code"]) == (400, "invalid_json"), (path, body)
        assert "more than 1000 keys" in body["error"]
    for method, path in (
        ("POST", "/webhooks/endpoints"),
        ("POST", f"/batch/jobs/{created['batchJobId']}/pause"),
    ):
        status, body = await post_raw(running, method, path, raw)
        assert (status, body["code"]) == (413, "payload_too_large"), (path, body)
    # Within their size, still refused as the JSON is checked.
    small = "{" + ",".join(f'"k{i}":1' for i in range(1_001)) + "}"
    status, body = await post_raw(running, "POST", "/webhooks/endpoints", small)
    assert (status, body["code"]) == (400, "invalid_json"), body
    assert "more than 1000 keys" in body["error"]


async def test_too_many_problems_to_list_are_counted_not_listed(running: Running) -> None:
    """Problems spread over many objects (each under the key cap): past 1,000 of them none is
    read one by one, and the answer says how many."""
    body = {
        "call_name": "x",
        "agent_id": "agent_a",
        "agent_phone_number_id": NUMBER,
        "recipients": [
            {"phone_number": f"+1202555{i:04d}", "bogus_a": 1, "bogus_b": 2} for i in range(600)
        ],
    }
    resp = await running.client.post(
        "/v1/convai/batch-calling/submit", json=body, headers=running.headers()
    )
    answer = await resp.json()
    assert resp.status == 422
    assert len(answer["detail"]) == 1
    assert answer["detail"][0]["msg"].startswith("the body has 1200 problems, too many to list")
    body["recipients"] = body["recipients"][:75]  # 150 problems: the first 100 listed
    resp = await running.client.post(
        "/v1/convai/batch-calling/submit", json=body, headers=running.headers()
    )
    answer = await resp.json()
    assert resp.status == 422
    assert len(answer["detail"]) == 101
    assert answer["detail"][-1]["msg"] == "and 50 more"
    assert answer["detail"][0]["loc"] == ["body", "recipients", 0, "bogus_a"]
    assert await job_total(running) == 0


async def test_malformed_api_keys_are_401_not_500(running: Running) -> None:
    """A key of non-UTF-8 bytes, non-ASCII text or 1,000 characters is simply not a key."""
    for raw in (b"\xed\xa0\x80", "clé".encode(), b"k" * 1_000):
        resp = await running.client.get(
            "/batch/jobs",
            params={"organizationId": ORG},
            headers={"x-api-key": raw.decode("latin-1")},
        )
        assert (resp.status, (await resp.json())["code"]) == (401, "unauthorized"), raw[:10]


async def test_a_results_post_for_a_made_up_call_is_refused_before_its_body(
    running: Running,
) -> None:
    """No key and a token of nobody: 401/404 at once, whatever the body (not read at all), so
    a stalled or enormous body costs nothing."""
    room = "batch_0000000000000000_c1_a1_000000"
    resp = await running.client.post(
        f"/calls/{room}/result",
        data=io.BytesIO(b"[" + b"{}," * 1_000_000 + b"{}]"),
        headers={"Authorization": "Bearer x", "Content-Type": "application/json"},
    )
    assert resp.status == 404, await resp.text()
    assert (await resp.json())["code"] == "call_not_found"


@pytest.mark.parametrize(
    "windows",
    [HUGE_INT, "[" * 3000 + "]" * 3000, '{"a":' * 1600, '[{"days": ["mon"], "start": NaN}]'],
)
async def test_calling_windows_as_json_text_are_checked_as_bodies(
    running: Running, windows: str
) -> None:
    """callingWindows sent as JSON text (a form field, or a string in the body) with a huge
    number or deep nesting: 400 invalid_calling_window, not a 500."""
    status, body = await post_raw(
        running,
        "POST",
        "/batch/create",
        create_body('{"phone": "+12025550101"}')[:-1]
        + f', "callingWindows": {json.dumps(windows)}}}',
    )
    assert (status, body["code"]) == (400, "invalid_calling_window"), body
    assert await job_total(running) == 0


async def test_a_job_scheduled_near_year_9999_has_a_detail(running: Running) -> None:
    """Its completion cannot be estimated within four-digit years: null, not a 500."""
    created = await running.create_json(
        [{"phone": "+12025550101"}],
        scheduledStartTime="9999-12-25T00:00:00Z",
        callingWindows=[{"days": ["mon"], "start": "09:00", "end": "09:01"}],
    )
    detail = await running.detail(created["batchJobId"])
    assert detail["status"] == "scheduled"
    assert detail["estimatedCompletionTime"] is None


async def test_big_bodies_are_parsed_a_few_at_a_time(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big JSON body or CSV is parsed in one of a few slots (parsed, an 8 MB body takes
    150-200 MB: eight at once took up to 1 GB, found from outside); a small one takes none and
    never waits behind them."""
    slots = running.client.app[appkeys.PARSE_SLOTS]
    held: list[tuple[str, bool]] = []
    real_loads, real_csv = jsonbody.loads, intake.parse_csv

    def loads(raw: bytes) -> Any:
        held.append(("json", slots._value < batch.BIG_PARSES))
        return real_loads(raw)

    def parse_csv(data: bytes, **kwargs: Any) -> Any:
        held.append(("csv", slots._value < batch.BIG_PARSES))
        return real_csv(data, **kwargs)

    monkeypatch.setattr(jsonbody, "loads", loads)
    monkeypatch.setattr(intake, "parse_csv", parse_csv)
    big = [{"phone": f"+1202555{i:04d}", "note": "n" * 100} for i in range(1000)]
    for contacts in ([{"phone": "+12025550101"}], big):
        await running.create_json(contacts)
    for rows in (1, 1000):
        form = FormData()
        form.add_field("fromPhoneNumberId", NUMBER)
        form.add_field("name", "x")
        text = "phone,note\n" + "".join(f"+1303555{i:04d},{'n' * 100}\n" for i in range(rows))
        form.add_field("file", text.encode(), filename="c.csv")
        resp = await running.client.post("/batch/create", data=form, headers=running.headers())
        assert resp.status == 201, await resp.text()
    assert held == [("json", False), ("json", True), ("csv", False), ("csv", True)]
    assert slots._value == batch.BIG_PARSES  # all given back
