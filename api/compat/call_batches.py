"""`GET /api/v1/public/call-batches/{batch_id}/calls` (shared/seeds/list-calls-in-batch.txt): a
page of calls in the `{status_code, message, error, data}` envelope, errors included.

Our statuses map to the vendor's vocabulary through the table below (mirrored in the README).
"""

from __future__ import annotations

from typing import Any, get_args

from aiohttp import web

from api import keys as appkeys
from api import openapi, schemas
from api.auth import organization
from api.batch import bounded_int
from api.errors import ApiError, Envelope
from dialer import service
from dialer.states import ContactStatus
from storage.rows import CallFilter, CallRow, ContactRow

routes = web.RouteTableDef()

CALL_BATCHES_PREFIX = "/api/v1/public/call-batches/"

# ----------------------------------------------------------------- status tables

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
CALL_STATUS_VALUES: tuple[str, ...] = get_args(schemas.CallStatus)  # the vendor's enum

CALLS_DEFAULT_LIMIT = 100
CALLS_MAX_LIMIT = 500
MAX_EXTERNAL_ID_CHARS = 200
MAX_PAGE = 1_000_000

# ----------------------------------------------------------------- error envelopes


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
    """Add the route, answering errors in the vendor's envelope."""
    envelopes.append((CALL_BATCHES_PREFIX, call_batches_envelope))
    app.router.add_routes(routes)


# ----------------------------------------------------------------- helpers


def custom_fields(contact: ContactRow) -> dict[str, Any]:
    """The contact's own fields, without the phone number (which has its own field)."""
    return {k: v for k, v in contact.contact_data.items() if k != "phone"}


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
    statuses = (
        None if status is None else [ours.value for ours, v in CALL_STATUS.items() if v == status]
    )
    try:
        calls, total = await request.app[appkeys.SERVICE].calls(
            organization(request),
            batch_id,
            CallFilter(statuses=statuses, external_id=wanted_external),
            limit,
            (page - 1) * limit,
        )
    except service.ServiceError as exc:
        if exc.code != "job_not_found":
            raise
        raise ApiError(
            404, "not_found", "Batch not found", {"details": [f"No batch found with id {batch_id}"]}
        ) from None
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
    CALL_BATCHES_PREFIX + "{batch_id}/calls",
    "A page of a batch's calls (compatibility shape)",
    query=schemas.CallsQuery,
    ok=schemas.CallsPage,
    errors={400: ["validation_error"], 404: ["not_found"], 405: ["method_not_allowed"]},
)
