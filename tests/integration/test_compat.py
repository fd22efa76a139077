"""Compatibility routes against the shapes of the vendors' pages (shared/seeds): every field of
their examples present with the right type, the right enums, and their error envelopes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api import compat
from dialer.states import ContactStatus, JobStatus
from tests.conftest import OTHER_ORG, Running, StartApp, make_config, wait_until

# get-batch-call-by-id.txt, its example response ("<string>" -> str, 123 -> int, true -> bool).
BATCH_CALL_EXAMPLE: dict[str, Any] = {
    "id": "<string>",
    "name": "<string>",
    "agent_id": "<string>",
    "created_at_unix": 123,
    "scheduled_time_unix": 123,
    "last_updated_at_unix": 123,
    "status": "pending",
    "agent_name": "<string>",
    "recipients": [
        {
            "id": "<string>",
            "status": "pending",
            "created_at_unix": 123,
            "updated_at_unix": 123,
            "phone_number": "<string>",
            "whatsapp_user_id": "<string>",
            "conversation_id": "<string>",
            "conversation_initiation_client_data": {
                "conversation_config_override": {
                    "turn": {"soft_timeout_config": {"message": "<string>"}},
                    "tts": {
                        "voice_id": "<string>",
                        "stability": 123,
                        "speed": 123,
                        "similarity_boost": 123,
                    },
                    "conversation": {"text_only": True},
                    "agent": {
                        "first_message": "<string>",
                        "language": "<string>",
                        "prompt": {
                            "prompt": "<string>",
                            "llm": "<string>",
                            "native_mcp_server_ids": ["<string>"],
                        },
                    },
                },
                "custom_llm_extra_body": {},
                "user_id": "<string>",
                "source_info": {"source": "unknown", "version": "<string>"},
                "dynamic_variables": {},
            },
        }
    ],
    "phone_number_id": "<string>",
    "phone_provider": "twilio",
    # whatsapp_params: null here (WhatsApp is not supported); the SDK's model wants both template
    # names as strings when it is an object, so an object of nulls would fail it.
    "total_calls_dispatched": 0,
    "total_calls_scheduled": 0,
    "total_calls_finished": 0,
    "retry_count": 0,
}
# Fields the page marks required: never null.
BATCH_CALL_REQUIRED = (
    "id",
    "name",
    "agent_id",
    "created_at_unix",
    "scheduled_time_unix",
    "last_updated_at_unix",
    "status",
    "agent_name",
    "recipients",
)
BATCH_STATUSES = {"pending", "in_progress", "completed", "failed", "cancelled"}
PHONE_PROVIDERS = {"twilio", "vobiz", "sip_trunk"}

# list-calls-in-batch.txt, one item of its 200 example, its nulls given the type they take once
# the call was placed (seconds; ISO 8601 times).
CALL_ITEM_EXAMPLE: dict[str, Any] = {
    "call_id": "call_a1b2c3d4",
    "external_id": "101",
    "phone_number": "919876543210",
    "name": "John Doe",
    "status": "pending",
    "duration_seconds": 0,
    "started_at": "<string>",
    "ended_at": "<string>",
    "metadata": {},  # free-form: the contact's own fields (the page shows two)
}
CALL_STATUSES = {
    "pending",
    "queued",
    "ringing",
    "answered",
    "in_progress",
    "completed",
    "failed",
    "no_answer",
    "busy",
    "cancelled",
}

BUSY, NO_ANSWER, BLOCKED = "+1312555", "+1617555", "+1415555"


def assert_shape(example: Any, actual: Any, where: str = "$") -> None:
    """Every key of `example` is in `actual`, recursively, with a value of the same JSON type
    (or null, where the example's leaf is a placeholder value)."""
    if isinstance(example, dict):
        assert isinstance(actual, dict), f"{where}: expected an object, got {actual!r}"
        missing = set(example) - set(actual)
        assert not missing, f"{where}: missing {sorted(missing)}"
        if example:  # `{}` in the example is a free-form object
            for key, value in example.items():
                assert_shape(value, actual[key], f"{where}.{key}")
    elif isinstance(example, list):
        assert isinstance(actual, list), f"{where}: expected an array, got {actual!r}"
        for i, item in enumerate(actual):
            assert_shape(example[0], item, f"{where}[{i}]")
    elif actual is not None:
        kind = bool if isinstance(example, bool) else int if isinstance(example, int) else str
        assert isinstance(actual, kind) and not (kind is int and isinstance(actual, bool)), (
            f"{where}: expected {kind.__name__}, got {actual!r}"
        )


async def outcomes_app(start_app: StartApp, tmp_path: Path) -> Running:
    """Numbers +1312555... are busy, +1617555... ring out, +1415555... are blocked."""
    rules = [
        {"prefix": BUSY, "outcome": "busy", "sip_code": 486},
        {"prefix": NO_ANSWER, "outcome": "no_answer", "sip_code": 480},
        {"prefix": BLOCKED, "outcome": "blocked", "sip_code": 603},
    ]
    return await start_app(make_config(tmp_path, telephony={"simulated": {"rules": rules}}))


async def finished_job(running: Running, **fields: Any) -> str:
    contacts = [
        {"phone": "+12025550101", "name": "Ada", "external_id": "e-1", "plan": "gold"},
        {"phone": f"{BUSY}0101", "Name": "Alan", "contact_id": 101},
        {"phone": f"{NO_ANSWER}0101", "tier": 2},
        {"phone": f"{BLOCKED}0101"},
    ]
    job_id: str = (await running.create_json(contacts, **fields))["batchJobId"]
    await running.wait_status(job_id, "completed")
    return job_id


async def get_batch_call(running: Running, batch_id: str, key: str | None = None) -> Any:
    resp = await running.client.get(
        f"/v1/voiceai/batch-calling/{batch_id}", headers={"x-api-key": key or running.key}
    )
    return resp.status, await resp.json()


async def list_calls(running: Running, batch_id: str, key: str | None = None, **params: Any) -> Any:
    resp = await running.client.get(
        f"/api/v1/public/call-batches/{batch_id}/calls",
        params=params,
        headers={"Authorization": f"Bearer {key or running.key}"},
    )
    return resp.status, await resp.json()


# ----------------------------------------------------------------- GET batch call by id


async def test_batch_call_has_every_field_of_the_page(start_app: StartApp, tmp_path: Path) -> None:
    """A finished batch answers the page's shape: snake_case, unix ints, recipients, totals."""
    running = await outcomes_app(start_app, tmp_path)
    job_id = await finished_job(running, maxAttempts=1)
    status, body = await get_batch_call(running, job_id)
    assert status == 200, body
    assert_shape(BATCH_CALL_EXAMPLE, body)
    for field in BATCH_CALL_REQUIRED:
        assert body[field] is not None, field
    assert body["id"] == job_id
    assert body["status"] == "completed"
    assert body["agent_id"] == "agent_a" and body["phone_number_id"] == "num_a"
    assert body["phone_provider"] in PHONE_PROVIDERS
    assert body["whatsapp_params"] is None
    assert body["created_at_unix"] <= body["scheduled_time_unix"] <= body["last_updated_at_unix"]
    assert (body["total_calls_scheduled"], body["total_calls_dispatched"]) == (4, 4)
    assert body["total_calls_finished"] == 4 and body["retry_count"] == 0
    recipients = {r["phone_number"]: r for r in body["recipients"]}
    assert [r["status"] for r in body["recipients"]] == ["completed", "failed", "failed", "failed"]
    ada = recipients["+12025550101"]["conversation_initiation_client_data"]
    assert ada["dynamic_variables"] == {"name": "Ada", "external_id": "e-1", "plan": "gold"}
    assert all(r["conversation_id"] for r in body["recipients"])  # the room of the last attempt


async def test_batch_call_of_a_scheduled_job_is_pending(running: Running) -> None:
    """Before it starts a batch is pending, scheduled at its start time, nothing dispatched."""
    created = await running.create_json(
        [{"phone": "+12025550101"}], scheduledStartTime="2030-01-01T09:00:00Z"
    )
    status, body = await get_batch_call(running, created["batchJobId"])
    assert status == 200
    assert body["status"] == "pending"
    assert body["scheduled_time_unix"] == 1893488400
    assert body["total_calls_dispatched"] == 0
    assert [r["status"] for r in body["recipients"]] == ["pending"]
    assert body["recipients"][0]["conversation_id"] is None
    # Paused before it ever started: still pending for this vendor.
    resp = await running.client.post(
        f"/batch/jobs/{created['batchJobId']}/pause", headers=running.headers()
    )
    assert resp.status == 200
    assert (await get_batch_call(running, created["batchJobId"]))[1]["status"] == "pending"


async def test_batch_call_statuses_cover_cancelled(running: Running) -> None:
    """A cancelled batch and its undialed recipients are `cancelled`."""
    created = await running.create_json(
        [{"phone": "+12025550101"}], scheduledStartTime="2030-01-01T09:00:00Z"
    )
    resp = await running.client.post(
        f"/batch/jobs/{created['batchJobId']}/cancel", headers=running.headers()
    )
    assert resp.status == 200
    _, body = await get_batch_call(running, created["batchJobId"])
    assert body["status"] == "cancelled"
    assert [r["status"] for r in body["recipients"]] == ["cancelled"]


async def test_batch_call_retry_count_counts_redials(start_app: StartApp, tmp_path: Path) -> None:
    """retry_count is the number of dials after each recipient's first."""
    running = await outcomes_app(start_app, tmp_path)
    job_id = await finished_job(running, maxAttempts=1)
    resp = await running.client.post(
        f"/batch/jobs/{job_id}/retry", json={"statuses": ["busy"]}, headers=running.headers()
    )
    assert resp.status == 200
    await running.wait_status(job_id, "completed")
    _, body = await get_batch_call(running, job_id)
    assert body["retry_count"] == 1
    assert body["total_calls_dispatched"] == 4


async def test_batch_call_errors(running: Running) -> None:
    """No key is 401; another organization's batch and an unknown one are the same 404."""
    created = await running.create_json([{"phone": "+12025550101"}])
    resp = await running.client.get(f"/v1/voiceai/batch-calling/{created['batchJobId']}")
    assert resp.status == 401
    foreign = await get_batch_call(running, created["batchJobId"], key=running.other_key)
    unknown = await get_batch_call(running, "batch_nope")
    assert foreign[0] == unknown[0] == 404
    assert set(foreign[1]) == set(unknown[1]) == {"detail"}


# ----------------------------------------------------------------- GET calls in a batch


async def test_list_calls_has_the_page_envelope_and_items(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Items carry every field of the example, statuses in its vocabulary, phone without +."""
    running = await outcomes_app(start_app, tmp_path)
    job_id = await finished_job(running, maxAttempts=1)
    status, body = await list_calls(running, job_id)
    assert status == 200, body
    assert set(body) == {"status_code", "message", "error", "data"}
    assert (body["status_code"], body["message"], body["error"]) == (
        200,
        "Batch calls fetched successfully",
        None,
    )
    data = body["data"]
    assert set(data) == {"items", "total", "page", "limit", "has_more"}
    assert (data["total"], data["page"], data["limit"], data["has_more"]) == (4, 1, 100, False)
    for item in data["items"]:
        assert_shape(CALL_ITEM_EXAMPLE, item)
        assert set(item) == set(CALL_ITEM_EXAMPLE)
        assert item["status"] in CALL_STATUSES
    ada, alan, tier, blocked = data["items"]
    assert (ada["phone_number"], ada["external_id"], ada["name"]) == ("12025550101", "e-1", "Ada")
    assert ada["status"] == "completed" and isinstance(ada["duration_seconds"], int)
    assert ada["started_at"].endswith("Z") and ada["ended_at"].endswith("Z")
    assert ada["metadata"] == {"name": "Ada", "external_id": "e-1", "plan": "gold"}
    assert (alan["external_id"], alan["name"], alan["status"]) == ("101", "Alan", "busy")
    assert (tier["external_id"], tier["name"], tier["status"]) == (None, None, "no_answer")
    assert tier["duration_seconds"] is None
    assert blocked["status"] == "failed"


async def test_list_calls_filters_and_pages(start_app: StartApp, tmp_path: Path) -> None:
    """status and external_id filter; limit and page slice; has_more says if more follow."""
    running = await outcomes_app(start_app, tmp_path)
    job_id = await finished_job(running, maxAttempts=1)
    _, failed = await list_calls(running, job_id, status="failed")
    assert [i["phone_number"] for i in failed["data"]["items"]] == ["14155550101"]
    _, by_id = await list_calls(running, job_id, external_id="101")
    assert [i["phone_number"] for i in by_id["data"]["items"]] == ["13125550101"]
    _, by_ext = await list_calls(running, job_id, external_id="e-1", status="completed")
    assert by_ext["data"]["total"] == 1
    _, none = await list_calls(running, job_id, status="ringing")
    assert none["data"]["items"] == [] and none["data"]["total"] == 0
    _, first = await list_calls(running, job_id, limit=3)
    _, second = await list_calls(running, job_id, limit=3, page=2)
    assert (len(first["data"]["items"]), first["data"]["has_more"]) == (3, True)
    assert (len(second["data"]["items"]), second["data"]["has_more"]) == (1, False)
    assert second["data"]["total"] == 4 and second["data"]["page"] == 2
    _, past = await list_calls(running, job_id, limit=3, page=9)
    assert past["data"]["items"] == [] and past["data"]["has_more"] is False


async def test_list_calls_errors_use_the_page_envelope(running: Running) -> None:
    """401, 404 and 400 answer the page's envelope with its codes and messages."""
    created = await running.create_json([{"phone": "+12025550101"}])
    job_id = created["batchJobId"]
    resp = await running.client.get(f"/api/v1/public/call-batches/{job_id}/calls")
    assert resp.status == 401
    assert await resp.json() == {
        "status_code": 401,
        "message": "Missing or invalid API key",
        "error": {
            "code": "UNAUTHORIZED",
            "details": ["Provide a valid Bearer token in the Authorization header"],
        },
        "data": None,
    }
    status, body = await list_calls(running, job_id, key="sk_wrong")
    assert status == 401 and body["error"]["code"] == "UNAUTHORIZED"
    for key, batch_id in ((running.other_key, job_id), (running.key, "sched_bdb2b840")):
        status, body = await list_calls(running, batch_id, key=key)
        assert status == 404
        assert body == {
            "status_code": 404,
            "message": "Batch not found",
            "error": {"code": "NOT_FOUND", "details": [f"No batch found with id {batch_id}"]},
            "data": None,
        }
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "abc"}, {"page": 0}, {"status": "x"}):
        status, body = await list_calls(running, job_id, **params)
        assert status == 400, params
        assert body["status_code"] == 400 and body["data"] is None
        assert body["error"]["code"] == "VALIDATION_ERROR"
        assert body["error"]["details"] and all(
            isinstance(d, str) for d in body["error"]["details"]
        )


async def test_list_calls_of_another_organization_is_never_shown(running: Running) -> None:
    """A batch of organization B is not found for A's key, even with its exact id."""
    resp = await running.client.post(
        "/batch/create",
        json={"fromPhoneNumberId": "num_b", "name": "b", "contacts": [{"phone": "+12025550101"}]},
        headers={"x-api-key": running.other_key},
    )
    b_job = (await resp.json())["batchJobId"]
    status, _ = await list_calls(running, b_job)
    assert status == 404
    status, body = await list_calls(running, b_job, key=running.other_key)
    assert status == 200 and body["data"]["total"] == 1
    assert OTHER_ORG not in str(body)


async def test_live_call_is_in_progress(start_app: StartApp, tmp_path: Path) -> None:
    """A contact on a live call is `in_progress` on both routes."""
    running = await start_app(make_config(tmp_path, telephony={"simulated": {"call_seconds": 60}}))
    created = await running.create_json([{"phone": "+12025550101"}])
    job_id = created["batchJobId"]

    async def dialing() -> bool:
        return (await running.detail(job_id))["statusBreakdown"]["dialing"] == 1

    await wait_until(dialing)
    _, calls = await list_calls(running, job_id)
    assert calls["data"]["items"][0]["status"] == "in_progress"
    _, batch = await get_batch_call(running, job_id)
    assert batch["status"] == "in_progress"
    assert batch["recipients"][0]["status"] == "in_progress"


async def test_a_batchs_last_update_moves_with_its_calls(
    start_app: StartApp, tmp_path: Path
) -> None:
    """`last_updated_at_unix` is the latest change of the batch or of one of its recipients:
    it stayed at the job's start while its calls went on (found from outside)."""
    running = await start_app(make_config(tmp_path, telephony={"simulated": {"call_seconds": 60}}))
    created = await running.create_json(
        [{"phone": "+12025550101"}, {"phone": "+12025550102"}], concurrentCallLimit=1
    )
    job_id = created["batchJobId"]

    async def completed(n: int) -> bool:
        return (await running.detail(job_id))["statusBreakdown"]["completed"] == n

    async def dialing() -> bool:
        return (await running.detail(job_id))["statusBreakdown"]["dialing"] == 1

    await wait_until(dialing)
    await running.clock.advance(60)  # the first call ends; the second is then live
    await wait_until(lambda: completed(1))
    _, batch = await get_batch_call(running, job_id)
    assert batch["status"] == "in_progress"
    latest = max(r["updated_at_unix"] for r in batch["recipients"])
    assert latest >= batch["created_at_unix"] + 60
    assert batch["last_updated_at_unix"] == latest


def test_status_tables_cover_every_status() -> None:
    """Each vendor table maps every one of our statuses into that vendor's vocabulary."""
    assert set(compat.BATCH_STATUS) == set(JobStatus)
    assert set(compat.BATCH_STATUS.values()) <= BATCH_STATUSES
    assert set(compat.RECIPIENT_STATUS) == set(ContactStatus)
    assert set(compat.RECIPIENT_STATUS.values()) <= BATCH_STATUSES
    assert set(compat.CALL_STATUS) == set(ContactStatus)
    assert set(compat.CALL_STATUS.values()) <= CALL_STATUSES
    assert set(compat.CALL_STATUS_VALUES) == CALL_STATUSES


async def test_external_id_is_shown_as_it_is_filtered(running: Running) -> None:
    """Only text and integers are ids; an empty external_id falls back to contact_id."""
    contacts = [
        {"phone": "+12025550101", "external_id": True},
        {"phone": "+12025550102", "external_id": 7.5},
        {"phone": "+12025550103", "external_id": "", "contact_id": "c-3"},
        {"phone": "+12025550104", "external_id": 12},
    ]
    job_id = (await running.create_json(contacts))["batchJobId"]
    _, body = await list_calls(running, job_id)
    shown = [item["external_id"] for item in body["data"]["items"]]
    assert shown == [None, None, "c-3", "12"]
    for wanted in ("c-3", "12"):
        _, found = await list_calls(running, job_id, external_id=wanted)
        assert [i["external_id"] for i in found["data"]["items"]] == [wanted]
    for not_an_id in ("True", "true", "1", "7.5"):
        _, found = await list_calls(running, job_id, external_id=not_an_id)
        assert found["data"]["total"] == 0, not_an_id


async def test_external_id_integers_of_any_size_match_as_text(running: Running) -> None:
    """Integer ids beyond 64 bits are shown and matched by their exact digits."""
    big = 2**64 + 1
    huge = 10**40 + 7
    contacts = [
        {"phone": "+12025550101", "external_id": big},
        {"phone": "+12025550102", "contact_id": huge},
        {"phone": "+12025550103", "external_id": 2**63 - 1},
        {"phone": "+12025550104", "contact_id": ""},
    ]
    job_id = (await running.create_json(contacts))["batchJobId"]
    _, body = await list_calls(running, job_id)
    assert [i["external_id"] for i in body["data"]["items"]] == [
        str(big),
        str(huge),
        str(2**63 - 1),
        None,
    ]
    for wanted in (str(big), str(huge), str(2**63 - 1)):
        _, found = await list_calls(running, job_id, external_id=wanted)
        assert [i["external_id"] for i in found["data"]["items"]] == [wanted]
    _, found = await list_calls(running, job_id, external_id="18446744073709551616")
    assert found["data"]["total"] == 0  # 2**64: a float would have matched it
