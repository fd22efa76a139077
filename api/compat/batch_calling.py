"""The batch-calling API of shared/seeds/get-batch-call-by-id.txt, as the official ElevenLabs SDK
calls it (`client.conversational_ai.batch_calls`, version 2.78): snake_case, unix-second times.

- `/v1/convai/batch-calling/`: `POST submit`, `GET workspace`, `GET {id}`, `POST {id}/cancel`,
  `POST {id}/retry`, `DELETE {id}`, `GET {id}/export`.
- `/v1/voiceai/batch-calling/{id}` (the seed's path): the same `GET {id}`.

Every answer passes the SDK's response models under strict validation. A batch is an ordinary
job: submitted here, it is visible on every route, and the other way round. Errors are
`{"detail": {"status": code, "message": text}}`, validation errors 422 with `detail` a list of
`{loc, msg, type}` (the vendor's FastAPI shape).

A recipient becomes a contact whose data holds its `dynamic_variables` as custom fields, plus
`recipient_id` (the client's id) and `conversation_config_override` when given: all of it
reaches the agent in the dispatch metadata (`contactData`), and comes back in the recipient.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from api import errors, openapi, schemas
from api import keys as appkeys
from api.auth import organization
from api.batch import CreateFields, bounded_int, read_json
from api.controls import export_response, stream_answer
from api.errors import ApiError, Envelope
from dialer import config as configmod
from dialer import intake, service, windows
from dialer.service import JobService
from dialer.states import ContactStatus, JobStatus
from storage.rows import BatchSummary, ContactRow, JobRow

routes = web.RouteTableDef()

CONVAI_PREFIX = "/v1/convai/batch-calling/"
VOICEAI_PREFIX = "/v1/voiceai/batch-calling/"

# Contact data keys that are not dynamic variables (the phone number has its own field).
RECIPIENT_ID_KEY = "recipient_id"
OVERRIDE_KEY = "conversation_config_override"
RESERVED_KEYS = frozenset({"phone", RECIPIENT_ID_KEY, OVERRIDE_KEY})

MAX_UNIX_TIME = 253_402_300_799  # 9999-12-31T23:59:59Z, the last time ISO 8601 can show
LIST_DEFAULT_LIMIT = 100
LIST_MAX_LIMIT = 100
# What a batch gets that the vendor's submit has no field for: the /batch/create defaults.
DEFAULT_CONCURRENCY: int = CreateFields.model_fields["concurrentCallLimit"].default
DEFAULT_MAX_ATTEMPTS: int = CreateFields.model_fields["maxAttempts"].default

# `retry`: the vendor retries "failed and no-response recipients". Not blocked (the callee or
# their carrier refused the call) nor invalid_number (it can never connect).
RETRY_STATUSES = (
    ContactStatus.NO_ANSWER,
    ContactStatus.BUSY,
    ContactStatus.TIMEOUT,
    ContactStatus.CARRIER_ERROR,
    ContactStatus.FAILED,
)

# ----------------------------------------------------------------- status tables

# Job status -> batch `status`. The vendor has no paused status; a paused job is not finished,
# so it reports in_progress (pending if it never started).
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


# Contact status -> recipient `status` (same vocabulary as the batch).
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

# ----------------------------------------------------------------- errors


# `detail` entries of a 422 at most (a body of 100,000 unknown fields answered 9.7 MB).
MAX_DETAIL = 100


def envelope(status: int, code: str, message: str, details: dict[str, Any]) -> web.Response:
    if status == 422 and isinstance(details.get("detail"), list):
        return web.json_response({"detail": details["detail"]}, status=422)
    return web.json_response({"detail": {"status": code, "message": message}}, status=status)


def unprocessable(problems: Sequence[tuple[Sequence[str | int], str]]) -> ApiError:
    """422 with the vendor's `detail` list: one `{loc, msg, type}` per problem."""
    detail = [{"loc": list(loc), "msg": msg, "type": "value_error"} for loc, msg in problems]
    return ApiError(422, "validation_error", "; ".join(m for _, m in problems), {"detail": detail})


def from_validation_error(exc: ValidationError, where: str) -> ApiError:
    """422 with one `detail` entry per problem, at most MAX_DETAIL (with one more saying how
    many were left out); with too many problems to read, one entry saying how many."""
    errs = errors.validation_problems(exc)
    if errs is None:
        return unprocessable([((where,), errors.too_many_problems(exc))])
    detail = [
        {"loc": [where, *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in errs[:MAX_DETAIL]
    ]
    if len(errs) > MAX_DETAIL:
        left = len(errs) - MAX_DETAIL
        detail.append({"loc": [where], "msg": f"and {left} more", "type": "value_error"})
    message = "; ".join(f"{'.'.join(str(p) for p in d['loc'])}: {d['msg']}" for d in detail)
    return ApiError(422, "validation_error", message, {"detail": detail})


def setup(app: web.Application, envelopes: list[tuple[str, Envelope]]) -> None:
    """Add the routes, answering errors in the vendor's envelope."""
    envelopes.append((CONVAI_PREFIX, envelope))
    envelopes.append((VOICEAI_PREFIX, envelope))
    app.router.add_routes(routes)


# ----------------------------------------------------------------- submit request


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    """Override objects: the fields used here are typed, the rest pass through as sent."""

    model_config = ConfigDict(extra="allow")


class SoftTimeoutOverride(_Open):
    message: StrictStr | None = None


class TurnOverride(_Open):
    soft_timeout_config: SoftTimeoutOverride | None = None


class TtsOverride(_Open):
    voice_id: StrictStr | None = None
    stability: StrictFloat | None = None
    speed: StrictFloat | None = None
    similarity_boost: StrictFloat | None = None


class ConversationOverride(_Open):
    text_only: StrictBool | None = None
    max_duration_seconds: StrictInt | None = None


class PromptOverride(_Open):
    prompt: StrictStr | None = None
    llm: StrictStr | None = None
    native_mcp_server_ids: list[StrictStr] | None = None


class AgentOverride(_Open):
    first_message: StrictStr | None = None
    language: StrictStr | None = None
    prompt: PromptOverride | None = None


class ConfigOverride(_Open):
    asr: dict[str, Any] | None = None
    turn: TurnOverride | None = None
    tts: TtsOverride | None = None
    conversation: ConversationOverride | None = None
    agent: AgentOverride | None = None


DynamicValue = StrictStr | StrictInt | StrictFloat | StrictBool | None

# Fields of the vendor's client data that only describe the caller: accepted, not used.
INFORMATIONAL_CLIENT_FIELDS = frozenset({"user_id", "source_info"})


class ClientData(_Open):
    dynamic_variables: dict[str, DynamicValue] | None = None
    conversation_config_override: ConfigOverride | None = None

    @field_validator("dynamic_variables")
    @classmethod
    def _not_reserved(cls, value: dict[str, DynamicValue] | None) -> Any:
        taken = sorted(RESERVED_KEYS & set(value or {}))
        if taken:
            raise ValueError(f"dynamic variable names reserved here: {', '.join(taken)}")
        return value

    def unsupported(self) -> list[str]:
        """Fields given a value that this service does not act on."""
        extra = self.model_extra or {}
        return sorted(
            k
            for k, v in extra.items()
            if k not in INFORMATIONAL_CLIENT_FIELDS and v not in (None, {}, [])
        )


class Recipient(_Closed):
    id: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    phone_number: StrictStr | None = None
    whatsapp_user_id: StrictStr | None = None
    conversation_initiation_client_data: ClientData | None = None


class TelephonyCallConfig(_Closed):
    ringing_timeout_secs: StrictInt | None = Field(default=None, ge=1, le=600)
    twilio_call_recording_enabled: StrictBool | None = None
    twilio_machine_detection: dict[str, Any] | None = None


class Submit(_Closed):
    call_name: StrictStr = Field(min_length=1, max_length=200)
    agent_id: StrictStr = Field(min_length=1, max_length=200)
    agent_phone_number_id: StrictStr | None = Field(default=None, max_length=200)
    recipients: list[Recipient] = Field(min_length=1)
    scheduled_time_unix: StrictInt | None = Field(default=None, ge=0, le=MAX_UNIX_TIME)
    timezone: StrictStr | None = Field(default=None, max_length=100)
    target_concurrency_limit: StrictInt | None = Field(default=None, ge=1, le=50)
    telephony_call_config: TelephonyCallConfig | None = None
    # Not supported here: accepted only when absent or null.
    whatsapp_params: Any = None
    branch_id: StrictStr | None = None
    environment: StrictStr | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                windows.load_zone(value)
            except ValueError:
                raise ValueError(f"unknown IANA timezone {value[:64]!r}") from None
        return value


def unsupported_fields(body: Submit) -> list[tuple[list[str | int], str]]:
    """What a submit asks for that this service cannot do (WhatsApp, branches, Twilio features)."""
    problems: list[tuple[list[str | int], str]] = []
    for name in ("whatsapp_params", "branch_id", "environment"):
        if getattr(body, name) is not None:
            problems.append((["body", name], f"{name} is not supported by this service"))
    telephony = body.telephony_call_config
    if telephony is not None:
        if telephony.twilio_call_recording_enabled:
            problems.append(
                (
                    ["body", "telephony_call_config", "twilio_call_recording_enabled"],
                    "call recording is not supported by this service",
                )
            )
        if telephony.twilio_machine_detection is not None:
            problems.append(
                (
                    ["body", "telephony_call_config", "twilio_machine_detection"],
                    "answering machine detection is not supported by this service",
                )
            )
    for i, recipient in enumerate(body.recipients):
        where: list[str | int] = ["body", "recipients", i]
        if recipient.whatsapp_user_id is not None:
            problems.append(([*where, "whatsapp_user_id"], "WhatsApp recipients are not supported"))
        elif recipient.phone_number is None:
            problems.append(([*where, "phone_number"], "phone_number is required"))
        data = recipient.conversation_initiation_client_data
        for name in data.unsupported() if data is not None else []:
            problems.append(
                (
                    [*where, "conversation_initiation_client_data", name],
                    f"{name} is not supported by this service",
                )
            )
    return problems


def recipient_contacts(body: Submit, raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Each recipient as a contact: its dynamic variables as fields, its id and override (as
    sent) under their own keys."""
    contacts: list[dict[str, Any]] = []
    for recipient, raw_recipient in zip(body.recipients, raw["recipients"], strict=True):
        contact: dict[str, Any] = {}
        data = recipient.conversation_initiation_client_data
        if data is not None and data.dynamic_variables:
            contact.update(data.dynamic_variables)
        contact["phone"] = recipient.phone_number
        if recipient.id is not None:
            contact[RECIPIENT_ID_KEY] = recipient.id
        if data is not None and data.conversation_config_override is not None:
            sent = raw_recipient["conversation_initiation_client_data"][OVERRIDE_KEY]
            contact[OVERRIDE_KEY] = sent
        contacts.append(contact)
    return contacts


# Service refusals that are about one field of the submit: answered as validation errors.
FIELD_OF_ERROR = {
    "agent_not_found": "agent_id",
    "phone_number_not_found": "agent_phone_number_id",
    "invalid_timezone": "timezone",
}


@routes.post(CONVAI_PREFIX + "submit")
async def submit(request: web.Request) -> web.Response:
    raw = await read_json(request)
    if not isinstance(raw, dict):
        raise unprocessable([(["body"], "the body must be a JSON object")])
    try:
        body = Submit.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise from_validation_error(exc, "body") from None
    problems = unsupported_fields(body)
    if problems:
        raise unprocessable(problems)
    try:
        parsed = intake.parse_json_contacts(recipient_contacts(body, raw))
    except intake.IntakeError as exc:
        raise intake_unprocessable(exc) from None
    svc = request.app[appkeys.SERVICE]
    org = organization(request)
    try:
        created = await svc.create(org, create_request(svc, org, body), parsed)
    except service.ServiceError as exc:
        field = FIELD_OF_ERROR.get(exc.code)
        if field is None:
            raise
        raise unprocessable([(["body", field], exc.message)]) from None
    summary = await svc.batch_summary(org, created.job.id)
    return web.json_response(batch_json(request.app[appkeys.CONFIG], summary))


def create_request(svc: service.JobService, org: str, body: Submit) -> service.CreateJob:
    """The submit as an ordinary create; without a caller number, the agent's own."""
    number_id = body.agent_phone_number_id or svc.caller_number_for_agent(org, body.agent_id)
    if number_id is None:
        raise unprocessable(
            [
                (
                    ["body", "agent_phone_number_id"],
                    "agent_phone_number_id is required: no caller number of yours has this "
                    "agent as its outbound agent",
                )
            ]
        )
    telephony = body.telephony_call_config
    ringing = telephony.ringing_timeout_secs if telephony is not None else None
    return service.CreateJob(
        name=body.call_name,
        description=None,
        from_phone_number_id=number_id,
        concurrent_call_limit=body.target_concurrency_limit or DEFAULT_CONCURRENCY,
        max_attempts=DEFAULT_MAX_ATTEMPTS,
        scheduled_start_time=None,
        timezone=body.timezone or "UTC",
        agent_id=body.agent_id,
        scheduled_start_unix=body.scheduled_time_unix,
        ringing_timeout_seconds=float(ringing) if ringing is not None else None,
    )


def intake_unprocessable(exc: intake.IntakeError) -> ApiError:
    """Recipients refused by contact intake, each named by its index."""
    invalid = exc.details.get("invalidContacts")
    if isinstance(invalid, list) and invalid:
        return unprocessable(
            [
                (["body", "recipients", item["index"], "phone_number"], item["reason"])
                for item in invalid
            ]
        )
    return unprocessable([(["body", "recipients"], exc.message)])


# ----------------------------------------------------------------- answers


def agent_name(config: configmod.Config, agent_id: str) -> str:
    agent = config.agent(agent_id)
    if agent is None:
        return agent_id
    return agent.name or agent.livekit_agent_name or agent.id


def batch_json(config: configmod.Config, summary: BatchSummary) -> dict[str, Any]:
    """A batch in the SDK's `BatchCallResponse` shape."""
    job, counts = summary.job, summary.counts
    number = config.phone_number(job.phone_number_id)
    progress = service.progress(job, counts)
    ringing = job.ringing_timeout_seconds or config.telephony.livekit.ringing_timeout_seconds
    return {
        "id": job.id,
        "name": job.name,
        "agent_id": job.agent_id,
        "agent_name": agent_name(config, job.agent_id),
        "branch_id": None,
        "branch_name": None,
        "environment": None,
        "created_at_unix": int(job.created_at),
        "scheduled_time_unix": int(
            job.scheduled_start_time or job.actual_start_time or job.created_at
        ),
        "timezone": job.timezone,
        # (its contacts' changes too: the job's own moved only with its status)
        "last_updated_at_unix": int(max(job.updated_at, summary.last_change)),
        "status": batch_status(job),
        "phone_number_id": job.phone_number_id,
        "phone_provider": number.provider if number is not None else None,
        "whatsapp_params": None,
        "telephony_call_config": {
            "ringing_timeout_secs": round(ringing),
            "twilio_call_recording_enabled": None,
            "twilio_machine_detection": None,
        },
        "target_concurrency_limit": job.concurrent_call_limit,
        "total_calls_dispatched": summary.dispatched,
        "total_calls_scheduled": job.total_contacts,
        "total_calls_finished": progress["contactsProcessed"],
        "retry_count": summary.retries,
    }


# No per-recipient overrides: every field of the seed's shape is present, and null.
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


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it, object by object."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def recipient_override(contact: ContactRow) -> dict[str, Any]:
    """The recipient's override over the all-null template (a stored value that does not fit
    the shape, e.g. a custom field of that name from a CSV, is not an override)."""
    stored = contact.contact_data.get(OVERRIDE_KEY)
    if isinstance(stored, dict):
        try:
            ConfigOverride.model_validate(stored, strict=True)
        except ValidationError:
            pass
        else:
            return merged(_OVERRIDE_TEMPLATE, stored)
    return copy.deepcopy(_OVERRIDE_TEMPLATE)


def dynamic_variables(contact: ContactRow) -> dict[str, Any]:
    """The contact's own fields: its dynamic variables (submit) or custom fields (CSV, JSON)."""
    return {k: v for k, v in contact.contact_data.items() if k not in RESERVED_KEYS}


def recipient_status(contact: ContactRow) -> str:
    """The recipient's status; a call the agent reported as a voicemail shows as `voicemail`
    (the vendor's own status for it) once the contact is no longer being dialed."""
    if contact.disposition == "voicemail" and contact.status not in (
        ContactStatus.DIALING,
        ContactStatus.CANCELLED,
    ):
        return "voicemail"
    return RECIPIENT_STATUS[ContactStatus(contact.status)]


def recipient_id(contact: ContactRow) -> str:
    given = contact.contact_data.get(RECIPIENT_ID_KEY)
    if isinstance(given, str) and given:
        return given
    return f"contact_{contact.id}"


def recipient_json(job: JobRow, contact: ContactRow) -> dict[str, Any]:
    return {
        "id": recipient_id(contact),
        "status": recipient_status(contact),
        "created_at_unix": int(job.created_at),
        "updated_at_unix": int(contact.updated_at),
        "phone_number": contact.phone,
        "whatsapp_user_id": None,
        "conversation_id": contact.room_name,
        "conversation_initiation_client_data": {
            "conversation_config_override": recipient_override(contact),
            "custom_llm_extra_body": {},
            "user_id": None,
            "source_info": {"source": "unknown", "version": None},
            "dynamic_variables": dynamic_variables(contact),
        },
    }


# ----------------------------------------------------------------- routes


@routes.get(CONVAI_PREFIX + "workspace")
async def list_batches(request: web.Request) -> web.Response:
    raw_limit = request.query.get("limit", "")
    limit = LIST_DEFAULT_LIMIT if raw_limit == "" else bounded_int(raw_limit, 1, LIST_MAX_LIMIT)
    if limit is None:
        raise unprocessable(
            [(["query", "limit"], f"limit must be an integer between 1 and {LIST_MAX_LIMIT}")]
        )
    last_doc = request.query.get("last_doc") or None
    agent_id = request.query.get("agent_id") or None
    try:
        page, has_more = await request.app[appkeys.SERVICE].batches(
            organization(request), agent_id, last_doc, limit
        )
    except service.ServiceError as exc:
        raise unprocessable([(["query", "last_doc"], exc.message)]) from None
    config = request.app[appkeys.CONFIG]
    return web.json_response(
        {
            "batch_calls": [batch_json(config, s) for s in page],
            "next_doc": page[-1].job.id if has_more else None,
            "has_more": has_more,
        }
    )


# Recipients read and rendered per page: every page is a short hold of the GIL (a C-level
# json.dumps of 10,000 recipients at once would hold it for a tenth of a second).
RECIPIENTS_PAGE = 200
# One rendering thread for all requests: parallel requests take turns rather than each holding
# the GIL in its own thread, which would keep the event loop waiting behind all of them.
_RENDERER = ThreadPoolExecutor(1, thread_name_prefix="render")


def recipients_text(job: JobRow, contacts: Sequence[ContactRow]) -> str:
    """A page of recipients as JSON array items (no brackets)."""
    return json.dumps([recipient_json(job, c) for c in contacts])[1:-1]


@routes.get(CONVAI_PREFIX + "{batch_id}")
@routes.get(VOICEAI_PREFIX + "{batch_id}")
async def get_batch(request: web.Request) -> web.StreamResponse:
    """The batch with every recipient (`batch_json` with `recipients`), streamed page by page and
    rendered off the event loop, so a batch of 10,000 recipients holds up no other request."""
    svc, org = request.app[appkeys.SERVICE], organization(request)
    summary = await svc.batch_summary(org, request.match_info["batch_id"])
    head = json.dumps(batch_json(request.app[appkeys.CONFIG], summary))[:-1]
    headers = {"Content-Type": "application/json; charset=utf-8"}
    return await stream_answer(request, org, headers, _batch_chunks(svc, summary.job, head))


async def _batch_chunks(svc: JobService, job: JobRow, head: str) -> AsyncIterator[bytes]:
    """The batch's JSON in pieces: its fields, then its recipients a page at a time."""
    yield (head + ', "recipients": [').encode()
    loop = asyncio.get_running_loop()
    offset = 0
    while True:
        contacts = await svc.batch_contacts(job.id, RECIPIENTS_PAGE, offset)
        if contacts:
            text = await loop.run_in_executor(_RENDERER, recipients_text, job, contacts)
            yield ((", " if offset else "") + text).encode()
        if len(contacts) < RECIPIENTS_PAGE:
            break
        offset += RECIPIENTS_PAGE
    yield b"]}"


@routes.post(CONVAI_PREFIX + "{batch_id}/cancel")
async def cancel_batch(request: web.Request) -> web.Response:
    svc, org = request.app[appkeys.SERVICE], organization(request)
    job, _ = await svc.cancel(org, request.match_info["batch_id"])
    summary = await svc.batch_summary(org, job.id)
    return web.json_response(batch_json(request.app[appkeys.CONFIG], summary))


@routes.post(CONVAI_PREFIX + "{batch_id}/retry")
async def retry_batch(request: web.Request) -> web.Response:
    svc, org = request.app[appkeys.SERVICE], organization(request)
    retried = await svc.retry(
        org, request.match_info["batch_id"], [s.value for s in RETRY_STATUSES], 1
    )
    summary = await svc.batch_summary(org, retried.job.id)
    return web.json_response(batch_json(request.app[appkeys.CONFIG], summary))


@routes.delete(CONVAI_PREFIX + "{batch_id}")
async def delete_batch(request: web.Request) -> web.Response:
    await request.app[appkeys.SERVICE].delete(organization(request), request.match_info["batch_id"])
    return web.Response(status=204)


@routes.get(CONVAI_PREFIX + "{batch_id}/export")
async def export_batch(request: web.Request) -> web.StreamResponse:
    return await export_response(request, request.match_info["batch_id"])


# ----------------------------------------------------------------- contract (api.openapi)

_BATCH_ERRORS = {404: ["job_not_found"], 422: ["validation_error"]}
openapi.register(
    "POST",
    CONVAI_PREFIX + "submit",
    "Submit a batch of calls (ElevenLabs SDK `batch_calls.create`)",
    body=Submit,
    ok=schemas.BatchCallSummary,
    errors={400: ["invalid_json"], 404: ["phone_number_not_found"], 422: ["validation_error"]},
)
openapi.register(
    "GET",
    CONVAI_PREFIX + "workspace",
    "Batches of the organization, newest first (`batch_calls.list`)",
    ok=schemas.BatchCallPage,
    errors={422: ["validation_error"]},
)
for _prefix in (CONVAI_PREFIX, VOICEAI_PREFIX):
    openapi.register(
        "GET",
        _prefix + "{batch_id}",
        "A batch with every recipient (`batch_calls.get`)",
        ok=schemas.BatchCall,
        errors={**_BATCH_ERRORS, 429: ["too_many_streams"]},
    )
openapi.register(
    "POST",
    CONVAI_PREFIX + "{batch_id}/cancel",
    "Cancel a batch (`batch_calls.cancel`)",
    ok=schemas.BatchCallSummary,
    errors={**_BATCH_ERRORS, 400: ["job_not_cancellable"]},
)
openapi.register(
    "POST",
    CONVAI_PREFIX + "{batch_id}/retry",
    "Call failed and unanswered recipients again (`batch_calls.retry`)",
    ok=schemas.BatchCallSummary,
    errors={**_BATCH_ERRORS, 400: ["job_not_retryable", "job_expired"]},
)
openapi.register(
    "DELETE",
    CONVAI_PREFIX + "{batch_id}",
    "Delete a finished batch (`batch_calls.delete`); its call records are kept",
    status=204,
    errors={**_BATCH_ERRORS, 400: ["job_not_deletable"]},
)
openapi.register(
    "GET",
    CONVAI_PREFIX + "{batch_id}/export",
    "Every recipient as CSV",
    ok_content="text/csv",
    errors={**_BATCH_ERRORS, 429: ["too_many_streams"]},
)
