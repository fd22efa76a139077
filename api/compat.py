"""Compatibility routes: the same store, answered in two other vendors' wire shapes.

- `GET /v1/voiceai/batch-calling/{batch_id}` (shared/seeds/get-batch-call-by-id.txt): snake_case,
  unix-second times, every recipient. Errors: `{"detail": {"status": code, "message": text}}`.
- `GET /api/v1/public/call-batches/{batch_id}/calls` (shared/seeds/list-calls-in-batch.txt): a
  page of calls in the `{status_code, message, error, data}` envelope, errors included.

Our statuses map to each vendor's vocabulary through the tables below (mirrored in the README).
"""

from __future__ import annotations

import asyncio
import copy
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web

from api import keys as appkeys
from api import openapi, schemas
from api.auth import organization
from api.batch import bounded_int
from api.errors import ApiError, Envelope
from dialer import config as configmod
from dialer import service
from dialer.states import ContactStatus, JobStatus
from storage.store import CallFilter, CallRow, ContactRow, JobRow

routes = web.RouteTableDef()

BATCH_CALLING_PREFIX = "/v1/voiceai/batch-calling/"
CALL_BATCHES_PREFIX = "/api/v1/public/call-batches/"

# ----------------------------------------------------------------- status tables

# get-batch-call-by-id.txt: job status -> batch `status`. The vendor has no paused status; a
# paused job is not finished, so it reports in_progress (pending if it never started).
BATCH_STATUS: dict[JobStatus, str] = {
    JobStatus.PENDING: "pending",
    JobStatus.SCHEDULED: "pending",
    JobStatus.RUNNING: "in_progress",
    JobStatus.PAUSED: "in_progress",
    JobStatus.COMPLETED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}


def batch_status(job: JobRow) -> str:
    """The vendor's batch status; a job paused before it ever started is still `pending`."""
    if job.status == JobStatus.PAUSED and job.actual_start_time is None:
        return "pending"
    return BATCH_STATUS[JobStatus(job.status)]


# get-batch-call-by-id.txt: contact status -> recipient `status` (same vocabulary as the batch).
RECIPIENT_STATUS: dict[ContactStatus, str] = {
    ContactStatus.PENDING: "pending",
    ContactStatus.QUEUED: "pending",
    ContactStatus.DIALING: "in_progress",
    ContactStatus.COMPLETED: "completed",
    ContactStatus.NO_ANSWER: "failed",
    ContactStatus.BUSY: "failed",
    ContactStatus.TIMEOUT: "failed",
    ContactStatus.BLOCKED: "failed",
    ContactStatus.INVALID_NUMBER: "failed",
    ContactStatus.CARRIER_ERROR: "failed",
    ContactStatus.FAILED: "failed",
    ContactStatus.CANCELLED: "cancelled",
}

# list-calls-in-batch.txt: contact status -> call `status`. Its `ringing` and `answered` have no
# counterpart here (a live call is `in_progress`); filtering on them matches nothing.
CALL_STATUS: dict[ContactStatus, str] = {
    ContactStatus.PENDING: "pending",
    ContactStatus.QUEUED: "queued",
    ContactStatus.DIALING: "in_progress",
    ContactStatus.COMPLETED: "completed",
    ContactStatus.NO_ANSWER: "no_answer",
    ContactStatus.BUSY: "busy",
    ContactStatus.TIMEOUT: "no_answer",
    ContactStatus.BLOCKED: "failed",
    ContactStatus.INVALID_NUMBER: "failed",
    ContactStatus.CARRIER_ERROR: "failed",
    ContactStatus.FAILED: "failed",
    ContactStatus.CANCELLED: "cancelled",
}
CALL_STATUS_VALUES = (
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
)

CALLS_DEFAULT_LIMIT = 100
CALLS_MAX_LIMIT = 500
MAX_EXTERNAL_ID_CHARS = 200
MAX_PAGE = 1_000_000

# ----------------------------------------------------------------- error envelopes


def batch_calling_envelope(
    status: int, code: str, message: str, details: dict[str, Any]
) -> web.Response:
    return web.json_response({"detail": {"status": code, "message": message}}, status=status)


# Our error codes -> the call-batches vendor's.
CALLS_ERROR_CODES = {
    "unauthorized": "UNAUTHORIZED",
    "job_not_found": "NOT_FOUND",
    "not_found": "NOT_FOUND",
    "validation_error": "VALIDATION_ERROR",
    "method_not_allowed": "METHOD_NOT_ALLOWED",
    "internal_error": "INTERNAL_ERROR",
}


def call_batches_envelope(
    status: int, code: str, message: str, details: dict[str, Any]
) -> web.Response:
    reasons = details.get("details")
    if status == 401:
        message = "Missing or invalid API key"
        reasons = ["Provide a valid Bearer token in the Authorization header"]
    body = {
        "status_code": status,
        "message": message,
        "error": {
            "code": CALLS_ERROR_CODES.get(code, code.upper()),
            "details": reasons if isinstance(reasons, list) else [message],
        },
        "data": None,
    }
    return web.json_response(body, status=status)


def setup(app: web.Application, envelopes: list[tuple[str, Envelope]]) -> None:
    """Add the compatibility routes, each family answering errors in its vendor's envelope."""
    envelopes.append((BATCH_CALLING_PREFIX, batch_calling_envelope))
    envelopes.append((CALL_BATCHES_PREFIX, call_batches_envelope))
    app.router.add_routes(routes)


# ----------------------------------------------------------------- shared helpers


def custom_fields(contact: ContactRow) -> dict[str, Any]:
    """The contact's own fields, without the phone number (which has its own field)."""
    return {k: v for k, v in contact.contact_data.items() if k != "phone"}


def unix(ts: float | None) -> int | None:
    return None if ts is None else int(ts)


# ----------------------------------------------------------------- GET batch call by id

# No per-recipient overrides: every field of the shape is present, and null.
_OVERRIDE_TEMPLATE: dict[str, Any] = {
    "turn": {"soft_timeout_config": {"message": None}},
    "tts": {"voice_id": None, "stability": None, "speed": None, "similarity_boost": None},
    "conversation": {"text_only": None},
    "agent": {
        "first_message": None,
        "language": None,
        "prompt": {"prompt": None, "llm": None, "native_mcp_server_ids": []},
    },
}


def recipient_json(job: JobRow, contact: ContactRow) -> dict[str, Any]:
    return {
        "id": f"contact_{contact.id}",
        "status": RECIPIENT_STATUS[ContactStatus(contact.status)],
        "created_at_unix": int(job.created_at),
        "updated_at_unix": int(contact.updated_at),
        "phone_number": contact.phone,
        "whatsapp_user_id": None,
        "conversation_id": contact.room_name,
        "conversation_initiation_client_data": {
            "conversation_config_override": copy.deepcopy(_OVERRIDE_TEMPLATE),
            "custom_llm_extra_body": {},
            "user_id": None,
            "source_info": {"source": "unknown", "version": None},
            "dynamic_variables": custom_fields(contact),
        },
    }


def agent_name(config: configmod.Config, agent_id: str) -> str:
    agent = config.agent(agent_id)
    if agent is None:
        return agent_id
    return agent.name or agent.livekit_agent_name or agent.id


def batch_call_json(
    config: configmod.Config,
    job: JobRow,
    counts: dict[str, int],
    dispatched: int,
    contacts: list[ContactRow],
) -> dict[str, Any]:
    number = config.phone_number(job.phone_number_id)
    progress = service.progress(job, counts)
    return {
        "id": job.id,
        "name": job.name,
        "agent_id": job.agent_id,
        "created_at_unix": int(job.created_at),
        "scheduled_time_unix": int(
            job.scheduled_start_time or job.actual_start_time or job.created_at
        ),
        "last_updated_at_unix": int(job.updated_at),
        "status": batch_status(job),
        "agent_name": agent_name(config, job.agent_id),
        "recipients": [recipient_json(job, c) for c in contacts],
        "phone_number_id": job.phone_number_id,
        "phone_provider": number.provider if number is not None else None,
        "whatsapp_params": {
            "whatsapp_call_permission_request_template_name": None,
            "whatsapp_call_permission_request_template_language_code": None,
            "whatsapp_phone_number_id": None,
        },
        "total_calls_dispatched": dispatched,
        "total_calls_scheduled": job.total_contacts,
        "total_calls_finished": progress["contactsProcessed"],
        # Retries attempted: every dial of a contact after its first.
        "retry_count": sum(max(c.attempt_count - 1, 0) for c in contacts),
    }


# Recipients read and rendered per page: every page is a short hold of the GIL (a C-level
# json.loads or json.dumps of 10,000 recipients at once would hold it for a tenth of a second).
RECIPIENTS_PAGE = 200
# One rendering thread for all requests: parallel requests take turns rather than each holding
# the GIL in its own thread, which would keep the event loop waiting behind all of them.
_RENDERER = ThreadPoolExecutor(1, thread_name_prefix="render")


def recipients_text(job: JobRow, contacts: list[ContactRow]) -> str:
    """A page of recipients as JSON array items (no brackets)."""
    return json.dumps([recipient_json(job, c) for c in contacts])[1:-1]


@routes.get(BATCH_CALLING_PREFIX + "{batch_id}")
async def get_batch_call(request: web.Request) -> web.StreamResponse:
    """The batch with every recipient, streamed page by page: the head (job, counts) from one
    read, then the recipients in upload order, then the totals that follow them."""
    batch_id = request.match_info["batch_id"]
    store = request.app[appkeys.STORE]
    found = await store.batch_overview(organization(request), batch_id, with_contacts=False)
    if found is None:
        raise service.not_found(batch_id)
    job, counts, dispatched, _ = found
    body = batch_call_json(request.app[appkeys.CONFIG], job, counts, dispatched, [])
    keys = list(body)
    split = keys.index("recipients")
    head = {k: body[k] for k in keys[:split]}
    tail = {k: body[k] for k in keys[split + 1 :] if k != "retry_count"}
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write((json.dumps(head)[:-1] + ', "recipients": [').encode())
    retries = 0
    offset = 0
    while True:
        contacts = await store.list_contacts(job.id, None, RECIPIENTS_PAGE, offset)
        if contacts:
            loop = asyncio.get_running_loop()
            text = await loop.run_in_executor(_RENDERER, recipients_text, job, contacts)
            await response.write(((", " if offset else "") + text).encode())
            retries += sum(max(c.attempt_count - 1, 0) for c in contacts)
        if len(contacts) < RECIPIENTS_PAGE:
            break
        offset += RECIPIENTS_PAGE
    await response.write(f'], {json.dumps(tail)[1:-1]}, "retry_count": {retries}}}'.encode())
    await response.write_eof()
    return response


# ----------------------------------------------------------------- GET calls in a batch


def external_id(contact: ContactRow) -> str | None:
    """The client's own id for the contact: its `external_id` field, else its `contact_id`."""
    for field in ("external_id", "contact_id"):
        value = contact.contact_data.get(field)
        # Only text and integers are ids (the same rule as the store's external_id filter).
        if isinstance(value, str) and value != "":
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def contact_name(contact: ContactRow) -> str | None:
    for key, value in contact.contact_data.items():
        if key.lower() == "name" and value is not None:
            return str(value)
    return None


def call_json(call: CallRow) -> dict[str, Any]:
    c = call.contact
    return {
        "call_id": f"contact_{c.id}",
        "external_id": external_id(c),
        "phone_number": c.phone.lstrip("+"),
        "name": contact_name(c),
        "status": CALL_STATUS[ContactStatus(c.status)],
        "duration_seconds": c.call_duration,
        "started_at": service.iso(call.started_at),
        "ended_at": service.iso(call.ended_at),
        "metadata": custom_fields(c),
    }


def _invalid(problem: str) -> ApiError:
    return ApiError(400, "validation_error", "Invalid request parameters", {"details": [problem]})


def _query_int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name, "")
    value = default if raw == "" else bounded_int(raw, 1, high)
    if value is None:
        raise _invalid(f"{name} must be an integer between 1 and {high}")
    return value


@routes.get(CALL_BATCHES_PREFIX + "{batch_id}/calls")
async def list_batch_calls(request: web.Request) -> web.Response:
    batch_id = request.match_info["batch_id"]
    status = request.query.get("status") or None
    if status is not None and status not in CALL_STATUS_VALUES:
        raise _invalid(f"status must be one of: {', '.join(CALL_STATUS_VALUES)}")
    wanted_external = request.query.get("external_id") or None
    if wanted_external is not None and len(wanted_external) > MAX_EXTERNAL_ID_CHARS:
        raise _invalid(f"external_id must be at most {MAX_EXTERNAL_ID_CHARS} characters")
    limit = _query_int(request, "limit", CALLS_DEFAULT_LIMIT, CALLS_MAX_LIMIT)
    page = _query_int(request, "page", 1, MAX_PAGE)
    store = request.app[appkeys.STORE]
    if await store.get_job(organization(request), batch_id) is None:
        raise ApiError(
            404, "not_found", "Batch not found", {"details": [f"No batch found with id {batch_id}"]}
        )
    statuses = (
        None if status is None else [ours.value for ours, v in CALL_STATUS.items() if v == status]
    )
    calls, total = await store.list_calls(
        batch_id,
        CallFilter(statuses=statuses, external_id=wanted_external),
        limit,
        (page - 1) * limit,
        count=True,
    )
    total = total or 0
    return web.json_response(
        {
            "status_code": 200,
            "message": "Batch calls fetched successfully",
            "error": None,
            "data": {
                "items": [call_json(c) for c in calls],
                "total": total,
                "page": page,
                "limit": limit,
                "has_more": page * limit < total,
            },
        }
    )


# ----------------------------------------------------------------- contract (api.openapi)

openapi.register(
    "GET",
    BATCH_CALLING_PREFIX + "{batch_id}",
    "A batch with every recipient (compatibility shape)",
    ok=schemas.BatchCall,
    errors={404: ["job_not_found"], 405: ["method_not_allowed"]},
)
openapi.register(
    "GET",
    CALL_BATCHES_PREFIX + "{batch_id}/calls",
    "A page of a batch's calls (compatibility shape)",
    query=schemas.CallsQuery,
    ok=schemas.CallsPage,
    errors={400: ["validation_error"], 404: ["not_found"], 405: ["method_not_allowed"]},
)
