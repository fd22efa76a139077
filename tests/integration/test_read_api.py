"""Auth, tenancy, list and detail: shapes, pagination, filters and error codes."""

from __future__ import annotations

from typing import Any

import pytest

from api.batch import contact_json
from dialer.states import ContactStatus
from tests.conftest import ORG, OTHER_ORG, Running, StartApp, make_config

DETAIL_FIELDS = {
    "id",
    "name",
    "description",
    "status",
    "organizationId",
    "agentId",
    "fromPhoneNumberId",
    "totalContacts",
    "contactsProcessed",
    "successfulCalls",
    "failedCalls",
    "statusBreakdown",
    "scheduledStartTime",
    "actualStartTime",
    "completedAt",
    "estimatedCompletionTime",
    "createdAt",
    "concurrentCallLimit",
    "retryPolicy",
    "contacts",
    "contactsTotal",
    "contactsPage",
    "contactsPageSize",
    "contactsHasMore",
    "callingWindows",
    "windowTimezone",
    "expiresAt",
}
CONTACT_FIELDS = {
    "id",
    "phoneNumber",
    "contactData",
    "status",
    "errorCode",
    "attemptCount",
    "maxAttempts",
    "lastAttemptAt",
    "nextRetryAt",
    "completedAt",
    "roomName",
    "failureReason",
    "callDuration",
    "timezone",
    "nextCallAt",
    "disposition",
    "summary",
    "resultData",
}
LIST_ITEM_FIELDS = {
    "id",
    "name",
    "description",
    "status",
    "totalContacts",
    "contactsProcessed",
    "successfulCalls",
    "failedCalls",
    "scheduledStartTime",
    "actualStartTime",
    "completedAt",
    "createdAt",
}


def phones(n: int, start: int = 101) -> list[dict[str, Any]]:
    return [{"phone": f"+1202555{start + i:04d}"} for i in range(n)]


async def test_missing_invalid_and_revoked_keys_are_401(running: Running) -> None:
    """No key, an unknown key and a revoked key are all 401 in the /batch envelope."""
    for headers in ({}, {"x-api-key": "dk_nope"}, {"Authorization": "Bearer dk_nope"}):
        resp = await running.client.get(
            "/batch/jobs", params={"organizationId": ORG}, headers=headers
        )
        assert resp.status == 401
        body = await resp.json()
        assert body["success"] is False
        assert body["code"] == "unauthorized"
    keys = await running.store.list_api_keys(ORG)
    await running.store.revoke_api_key(keys[0].id, running.clock.now())
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": ORG}, headers=running.headers()
    )
    assert resp.status == 401


async def test_bearer_key_works(running: Running) -> None:
    """`Authorization: Bearer KEY` authenticates like x-api-key."""
    resp = await running.client.get(
        "/batch/jobs",
        params={"organizationId": ORG},
        headers={"Authorization": f"Bearer {running.key}"},
    )
    assert resp.status == 200


async def test_keys_are_stored_hashed(running: Running) -> None:
    """The database holds only hashes of API keys, never the key itself."""
    rows = await running.store.list_api_keys(None)
    assert rows
    assert all(running.key not in (r.key_hash, r.prefix) for r in rows)
    assert all(len(r.key_hash) == 64 for r in rows)


async def test_other_organization_cannot_see_or_touch_a_job(running: Running) -> None:
    """Another organization's job is 404 job_not_found on every route, and is not listed."""
    created = await running.create_json(phones(1))
    job_id = created["batchJobId"]
    other = running.headers(running.other_key)
    for method, path, body in [
        ("GET", f"/batch/jobs/{job_id}", None),
        ("POST", f"/batch/jobs/{job_id}/cancel", None),
        ("POST", f"/batch/jobs/{job_id}/start", None),
        ("PATCH", f"/batch/jobs/{job_id}/reschedule", {"scheduledStartTime": "2030-01-01T00:00Z"}),
    ]:
        resp = await running.client.request(method, path, json=body, headers=other)
        assert resp.status == 404, path
        assert (await resp.json())["code"] == "job_not_found"
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": OTHER_ORG}, headers=other
    )
    assert (await resp.json())["total"] == 0
    assert (await running.detail(job_id))["status"] != "cancelled"


async def test_list_requires_own_organization(running: Running) -> None:
    """organizationId is required and must be the key's organization (403 otherwise)."""
    resp = await running.client.get("/batch/jobs", headers=running.headers())
    assert resp.status == 400
    assert (await resp.json())["code"] == "missing_organization_id"
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": OTHER_ORG}, headers=running.headers()
    )
    assert resp.status == 403
    assert (await resp.json())["code"] == "forbidden"


async def test_list_pages_newest_first_with_filter(running: Running) -> None:
    """Jobs list newest first, page by page, with total and a status filter."""
    ids = []
    for i in range(5):
        created = await running.create_json(phones(1, 101 + i), name=f"job {i}")
        ids.append(created["batchJobId"])
        await running.clock.advance(1)
    scheduled = await running.create_json(phones(1, 200), scheduledStartTime="2030-01-01T00:00:00Z")
    resp = await running.client.get(
        "/batch/jobs",
        params={"organizationId": ORG, "page": "1", "pageSize": "2"},
        headers=running.headers(),
    )
    body = await resp.json()
    assert body["total"] == 6
    assert (body["page"], body["pageSize"]) == (1, 2)
    assert [j["id"] for j in body["batchJobs"]] == [scheduled["batchJobId"], ids[4]]
    assert set(body["batchJobs"][0]) >= LIST_ITEM_FIELDS
    resp = await running.client.get(
        "/batch/jobs",
        params={"organizationId": ORG, "page": "3", "pageSize": "2"},
        headers=running.headers(),
    )
    assert [j["id"] for j in (await resp.json())["batchJobs"]] == [ids[1], ids[0]]
    resp = await running.client.get(
        "/batch/jobs",
        params={"organizationId": ORG, "status": "scheduled"},
        headers=running.headers(),
    )
    body = await resp.json()
    assert body["total"] == 1
    assert body["batchJobs"][0]["id"] == scheduled["batchJobId"]
    assert body["pageSize"] == 20


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"page": "0"}, "invalid_page"),
        ({"page": "x"}, "invalid_page"),
        ({"pageSize": "0"}, "invalid_page_size"),
        ({"pageSize": "101"}, "invalid_page_size"),
        ({"status": "exploded"}, "invalid_status"),
    ],
)
async def test_list_rejects_bad_parameters(
    running: Running, params: dict[str, str], code: str
) -> None:
    """Bad list parameters are 400 with the codes of the list page."""
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": ORG, **params}, headers=running.headers()
    )
    assert resp.status == 400
    assert (await resp.json())["code"] == code


async def test_detail_shape_and_breakdown(start_app: StartApp, tmp_path: Any) -> None:
    """Detail has every documented field; the breakdown has all 12 statuses and sums to total."""
    config = make_config(
        tmp_path,
        telephony={
            "simulated": {
                "rules": [
                    {"prefix": "+12025550102", "outcome": "invalid_number", "sip_code": 404},
                    {"prefix": "+12025550103", "outcome": "busy"},
                ]
            }
        },
    )
    running = await start_app(config)
    created = await running.create_json(phones(3), maxAttempts=1)
    body = await running.wait_status(created["batchJobId"], "completed")
    assert set(body) >= DETAIL_FIELDS
    assert set(body["statusBreakdown"]) == {s.value for s in ContactStatus}
    assert sum(body["statusBreakdown"].values()) == body["totalContacts"] == 3
    assert (body["successfulCalls"], body["failedCalls"], body["contactsProcessed"]) == (1, 2, 3)
    assert body["completedAt"] is not None
    assert body["actualStartTime"] is not None
    by_phone = {c["phoneNumber"]: c for c in body["contacts"]}
    assert all(set(c) >= CONTACT_FIELDS for c in body["contacts"])
    answered = by_phone["+12025550101"]
    assert answered["status"] == "completed"
    assert answered["errorCode"] is None
    assert answered["roomName"].startswith(created["batchJobId"])
    assert answered["attemptCount"] == 1
    bad = by_phone["+12025550102"]
    assert (bad["status"], bad["errorCode"]) == ("invalid_number", "404")
    assert bad["failureReason"]
    busy = by_phone["+12025550103"]
    assert (busy["status"], busy["errorCode"], busy["nextRetryAt"]) == ("busy", "486", None)
    assert body["createdAt"].endswith("Z")


async def test_detail_contacts_paging_and_filter(running: Running) -> None:
    """Contacts page in upload order with contactsTotal/contactsHasMore and a status filter."""
    created = await running.create_json(phones(7))
    job_id = created["batchJobId"]
    await running.wait_status(job_id, "completed")
    page = await running.detail(job_id, contactsPage=2, contactsPageSize=3)
    assert [c["phoneNumber"] for c in page["contacts"]] == [
        "+12025550104",
        "+12025550105",
        "+12025550106",
    ]
    assert (page["contactsTotal"], page["contactsPage"], page["contactsPageSize"]) == (7, 2, 3)
    assert page["contactsHasMore"] is True
    last = await running.detail(job_id, contactsPage=3, contactsPageSize=3)
    assert len(last["contacts"]) == 1
    assert last["contactsHasMore"] is False
    none = await running.detail(job_id, contactStatus="busy")
    assert (none["contacts"], none["contactsTotal"]) == ([], 0)
    done = await running.detail(job_id, contactStatus="completed")
    assert done["contactsTotal"] == 7


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"contactsPage": "0"}, "invalid_page"),
        ({"contactsPage": "9223372036854775808"}, "invalid_page"),
        ({"contactsPageSize": " 5"}, "invalid_page_size"),
        ({"contactsPageSize": "501"}, "invalid_page_size"),
        ({"contactsPageSize": "0"}, "invalid_page_size"),
        ({"contactStatus": "ringing"}, "invalid_contact_status"),
    ],
)
async def test_detail_rejects_bad_parameters(
    running: Running, params: dict[str, str], code: str
) -> None:
    """Bad detail parameters are 400 with the codes of the detail page."""
    created = await running.create_json(phones(1))
    resp = await running.client.get(
        f"/batch/jobs/{created['batchJobId']}", params=params, headers=running.headers()
    )
    assert resp.status == 400
    assert (await resp.json())["code"] == code


async def test_unknown_routes_and_methods_use_the_envelope(running: Running) -> None:
    """Unknown routes are 404 and wrong methods 405, both in the error envelope."""
    resp = await running.client.get("/batch/nothing-here", headers=running.headers())
    assert resp.status == 404
    assert (await resp.json())["code"] == "not_found"
    resp = await running.client.delete("/batch/jobs", headers=running.headers())
    assert resp.status == 405
    assert (await resp.json())["code"] == "method_not_allowed"
    resp = await running.client.get("/batch/jobs/batch_missing", headers=running.headers())
    assert resp.status == 404
    assert (await resp.json())["code"] == "job_not_found"


def test_contact_json_has_every_documented_field() -> None:
    """The contact serializer emits exactly the documented fields."""
    from storage.rows import ContactRow

    row = ContactRow(
        id=1,
        job_id="j",
        seq=1,
        phone="+12025550101",
        contact_data={"phone": "+12025550101"},
        status="busy",
        attempt_count=2,
        max_attempts=3,
        last_attempt_at=0.0,
        next_retry_at=None,
        completed_at=None,
        error_code="486",
        failure_reason="Busy Here",
        room_name="r",
        call_duration=None,
        updated_at=0.0,
    )
    assert set(contact_json(row)) == CONTACT_FIELDS
    assert contact_json(row)["lastAttemptAt"] == "1970-01-01T00:00:00Z"
