"""The /batch routes: create, list, detail, cancel, start, reschedule."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp.hdrs import CONTENT_TRANSFER_ENCODING
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
)

from api import connections, errors, jsonbody, openapi, schemas
from api import keys as appkeys
from api.auth import organization
from api.errors import ApiError
from dialer import intake, jsontext, service, windows
from dialer.states import ContactStatus, JobStatus
from storage.rows import ContactRow, JobRow

routes = web.RouteTableDef()

MAX_JSON_BYTES = 8 * 1024 * 1024
# Bodies up to this size are parsed on the event loop (a thread hop costs more than that).
INLINE_JSON_BYTES = 64 * 1024
# The body of a route that takes a few small fields (an agent's result, a webhook endpoint, a
# job control): its largest valid body is a few KB (a result's data is at most 16 KB encoded).
SMALL_JSON_BYTES = 64 * 1024
# Bodies bigger than INLINE_JSON_BYTES (JSON, a job's CSV) parsed at once; others wait their
# turn. Parsed, an 8 MB JSON body or a 10 MB CSV takes 150-200 MB for a moment: eight sent at
# once took 500 MB to 1 GB (found from outside).
BIG_PARSES = 2
# Highest page number accepted (beyond it SQLite offsets would overflow long before).
MAX_PAGE = 1_000_000_000


# ----------------------------------------------------------------- request models


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CreateFields(_Strict):
    fromPhoneNumberId: StrictStr = Field(min_length=1, max_length=200)
    name: StrictStr = Field(min_length=1, max_length=200)
    description: StrictStr | None = Field(default=None, max_length=1000)
    concurrentCallLimit: StrictInt = Field(default=5, ge=1, le=50)
    maxAttempts: StrictInt = Field(default=3, ge=1, le=10)
    scheduledStartTime: StrictStr | None = Field(default=None, max_length=100)
    timezone: StrictStr = Field(default="UTC", max_length=100)
    # Contact intake: read formatted national numbers as dialed from this country (else strict
    # E.164), and the phone column's (or JSON key's) name when it is not a usual one.
    defaultCountry: StrictStr | None = Field(default=None, max_length=10)
    phoneColumn: StrictStr | None = Field(default=None, min_length=1, max_length=200)
    # A list of {days, start, end}; in a multipart form, that list as a JSON string.
    callingWindows: Any = None
    windowTimezone: StrictStr = Field(default=windows.RECIPIENT, min_length=1, max_length=100)
    expiresAt: StrictStr | None = Field(default=None, max_length=100)
    # An agent's voicemail result is retried under the retry policy (false: it ends no_answer).
    retryOnVoicemail: StrictBool = True


class CreateJson(CreateFields):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "fromPhoneNumberId": "phone_demo",
                    "name": "Renewals",
                    "contacts": [{"phone": "+12025550101", "name": "Ada", "plan": "gold"}],
                }
            ]
        }
    )
    contacts: list[Any]


class RescheduleBody(_Strict):
    scheduledStartTime: StrictStr = Field(min_length=1, max_length=100)
    timezone: StrictStr | None = Field(default=None, max_length=100)


def validation_error(exc: ValidationError) -> ApiError:
    errs = errors.validation_problems(exc)
    if errs is None:
        return ApiError(400, "validation_error", errors.too_many_problems(exc))
    problems = []
    for err in errs:
        where = ".".join(str(p) for p in err["loc"])[:100] or "body"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown field '{where}'")
        elif err["type"] == "missing":
            problems.append(f"'{where}' is required")
        else:
            problems.append(f"'{where}': {err['msg']}")
    return ApiError(400, "validation_error", errors.problem_list(problems))


def big_parse(request: web.Request, size: int) -> contextlib.AbstractAsyncContextManager[Any]:
    """A slot to parse a body of `size` bytes in: one of BIG_PARSES for a big one (a small one
    needs none: it never waits behind a big one)."""
    if size <= INLINE_JSON_BYTES:
        return contextlib.nullcontext()
    slots: asyncio.Semaphore = request.app[appkeys.PARSE_SLOTS]
    return slots


async def read_json(request: web.Request, limit: int = MAX_JSON_BYTES) -> Any:
    """The JSON body, read up to `limit` bytes (a route whose bodies are small says so: what
    it refuses past that is never read, nor held, nor parsed)."""
    too_large = ApiError(
        413, "payload_too_large", f"Request body is larger than {_size_text(limit)}"
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    # read(n) answers what has arrived so far (at most n): read until the end of the body.
    with connections.reading_body(request):
        while chunk := await request.content.read(256 * 1024):
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        if size <= INLINE_JSON_BYTES:
            return jsonbody.loads(raw)
        # A big body is parsed and checked off the event loop, BIG_PARSES at a time.
        async with big_parse(request, size):
            return await asyncio.to_thread(jsonbody.loads, raw)
    except jsonbody.BadJson as exc:
        raise ApiError(400, "invalid_json", f"Request body is not acceptable JSON: {exc}") from None


def _size_text(size: int) -> str:
    return f"{size // (1024 * 1024)} MB" if size % (1024 * 1024) == 0 else f"{size // 1024} KB"


def query_int(
    request: web.Request, name: str, default: int, low: int, high: int | None, code: str
) -> int:
    """A bounded integer query parameter; absent or empty means `default`."""
    raw = request.query.get(name, "")
    top = MAX_PAGE if high is None else high
    value = default if raw == "" else bounded_int(raw, low, top)
    if value is None:
        raise ApiError(400, code, f"{name} must be an integer between {low} and {top}")
    return value


def bounded_int(raw: str, low: int, high: int) -> int | None:
    """`raw` as an int within [low, high]: ASCII digits only (no sign, spaces, `_` or other
    scripts' digits), else None. Past 10 digits it is out of range anyway: never converted."""
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        return None
    value = int(raw)
    return value if low <= value <= high else None


# ----------------------------------------------------------------- responses


def job_summary(job: JobRow, counts: dict[str, int]) -> dict[str, Any]:
    """A job in the list and detail routes' shape. The list route gets its pages rendered by the
    store's SQL (queries.sql, list_jobs_api), which a test holds to this function."""
    return {
        "id": job.id,
        "name": job.name,
        "description": job.description,
        "status": job.status,
        "organizationId": job.organization_id,
        "agentId": job.agent_id,
        "fromPhoneNumberId": job.phone_number_id,
        **service.progress(job, counts),
        "scheduledStartTime": service.iso(job.scheduled_start_time),
        "actualStartTime": service.iso(job.actual_start_time),
        "completedAt": service.iso(job.completed_at),
        "createdAt": service.iso(job.created_at),
        "concurrentCallLimit": job.concurrent_call_limit,
        "retryPolicy": retry_policy(job),
        "statusReason": job.status_reason,
        "pauseReason": job.status_reason if job.status == JobStatus.PAUSED else None,
        "retryRounds": job.retry_rounds,
        "callingWindows": None if job.calling_windows is None else json.loads(job.calling_windows),
        "windowTimezone": job.window_timezone,
        "expiresAt": service.iso(job.expires_at),
        "retryOnVoicemail": job.retry_on_voicemail,
    }


def retry_policy(job: JobRow) -> dict[str, Any]:
    return {
        "maxAttempts": job.max_attempts,
        "retryableStatuses": list(job.retry_statuses),
        "retryDelaySeconds": job.retry_delay_seconds,
        "backoffMultiplier": job.retry_backoff,
    }


def contact_json(c: ContactRow, now: float = 0.0) -> dict[str, Any]:
    """A contact in the detail route's shape. The detail route gets its pages rendered by the
    store's SQL (queries.sql, contacts_page_api), which a test holds to this function.
    `nextCallAt`: when it may next be dialed, if later than `now`."""
    return {
        "id": f"contact_{c.id}",
        "phoneNumber": c.phone,
        "contactData": c.contact_data,
        "status": c.status,
        "errorCode": c.error_code,
        "attemptCount": c.attempt_count,
        "maxAttempts": c.max_attempts,
        "lastAttemptAt": service.iso(c.last_attempt_at),
        "nextRetryAt": service.iso(c.next_retry_at),
        "completedAt": service.iso(c.completed_at),
        "roomName": c.room_name,
        "failureReason": c.failure_reason,
        "callDuration": c.call_duration,
        "timezone": c.timezone,
        "nextCallAt": service.iso(c.wait_until(now)),
        "disposition": c.disposition,
        "summary": c.summary,
        "resultData": c.result_data,
    }


# ----------------------------------------------------------------- handlers


MAX_IDEMPOTENCY_KEY_CHARS = 255


def idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key header: 1 to 255 printable ASCII characters (spaces too), or absent."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    key = raw.strip()
    if not (0 < len(key) <= MAX_IDEMPOTENCY_KEY_CHARS and key.isascii() and key.isprintable()):
        raise ApiError(
            400,
            "validation_error",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
        )
    return key


def fingerprint(*parts: bytes | dict[str, Any]) -> str:
    """sha256 of the parts (a JSON object canonically encoded), each length-prefixed."""
    digest = hashlib.sha256()
    for part in parts:
        data = json.dumps(part, sort_keys=True).encode() if isinstance(part, dict) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


async def _fingerprint(key: str | None, *parts: bytes | dict[str, Any]) -> str:
    """The request's fingerprint when it carries an Idempotency-Key (computed off the loop:
    the content may be megabytes), else nothing to compute."""
    if key is None:
        return ""
    return await asyncio.to_thread(fingerprint, *parts)


@routes.post("/batch/create")
async def create_job(request: web.Request) -> web.Response:
    svc = request.app[appkeys.SERVICE]
    org = organization(request)
    key = idempotency_key(request)
    if request.content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        if request.content_type == "multipart/form-data":
            fields, csv_bytes = await _read_multipart(request)
        else:  # a form without a file part: fields only
            fields, csv_bytes = await _read_urlencoded(request), None
        try:
            form = CreateFields.model_validate(_coerce_form(fields))
        except ValidationError as exc:
            raise validation_error(exc) from None
        if csv_bytes is None:
            raise ApiError(400, "invalid_csv", "CSV file missing: send it in the 'file' field")
        content = await _fingerprint(key, json.dumps(fields, sort_keys=True).encode(), csv_bytes)
        async with big_parse(request, len(csv_bytes)):
            parsed = await asyncio.to_thread(
                intake.parse_csv,
                csv_bytes,
                default_country=form.defaultCountry,
                phone_column=form.phoneColumn,
            )
        mode = "csv"
    elif request.content_type == "application/json":
        body = await read_json(request)
        if not isinstance(body, dict):
            raise ApiError(400, "validation_error", "Request body must be a JSON object")
        try:
            form = CreateJson.model_validate(body, strict=True)
        except ValidationError as exc:
            raise validation_error(exc) from None
        content = await _fingerprint(key, body)
        parsed = await asyncio.to_thread(
            intake.parse_json_contacts,
            body["contacts"],
            default_country=form.defaultCountry,
            phone_column=form.phoneColumn,
        )
        mode = "json"
    else:
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send multipart/form-data with a 'file' field, or application/json with 'contacts'",
        )

    def render(created: service.Created) -> dict[str, Any]:
        return created_json(created, parsed, mode)

    try:
        created = await svc.create(
            org,
            service.CreateJob(
                name=form.name,
                description=form.description,
                from_phone_number_id=form.fromPhoneNumberId,
                concurrent_call_limit=form.concurrentCallLimit,
                max_attempts=form.maxAttempts,
                scheduled_start_time=form.scheduledStartTime,
                timezone=form.timezone or "UTC",
                calling_windows=_calling_windows(form.callingWindows),
                window_timezone=form.windowTimezone or windows.RECIPIENT,
                expires_at=form.expiresAt,
                retry_on_voicemail=form.retryOnVoicemail,
            ),
            parsed,
            None if key is None else service.Idempotency(key, content, render),
        )
    except service.Replayed as replay:
        return web.Response(text=replay.response, status=201, content_type="application/json")
    return web.json_response(render(created), status=201)


def created_json(
    created: service.Created, parsed: intake.ParsedContacts, mode: str
) -> dict[str, Any]:
    """The answer to a create."""
    job = created.job
    body_out: dict[str, Any] = {
        "success": True,
        "batchJobId": job.id,
        "totalContacts": created.total_contacts,
        "estimatedDuration": created.estimated_duration,
        "estimatedCost": created.estimated_cost,
        "status": job.status,
        "scheduledStartTime": service.iso(job.scheduled_start_time),
        "message": (
            f"Batch job created with {created.total_contacts} contacts"
            + (
                f", scheduled for {service.iso(job.scheduled_start_time)}"
                if job.scheduled_start_time
                else "; dialing starts now"
            )
        ),
    }
    body_out.update(
        {
            "callingWindows": json.loads(job.calling_windows or "null"),
            "windowTimezone": job.window_timezone,
            "expiresAt": service.iso(job.expires_at),
            "suppressedCount": created.suppressed,
            "noCommonWindowCount": len(created.no_common_window),
            "noCommonWindow": list(created.no_common_window[: intake.MAX_REPORTED_INVALID]),
        }
    )
    if mode == "csv":
        body_out.update(intake.invalid_report(parsed))
    else:  # any invalid JSON contact refuses the request: none was skipped
        body_out.update(
            {"invalidCount": parsed.invalid_count, "duplicatesRemoved": parsed.duplicates}
        )
    return body_out


_FORM_INTS = ("concurrentCallLimit", "maxAttempts")


def _calling_windows(value: Any) -> windows.Windows | None:
    """The request's callingWindows (a list, or in a form that list as JSON text); None when
    omitted. Malformed: 400 invalid_calling_window naming the problem."""
    if value is None:
        return None
    if isinstance(value, str):
        try:  # (the body's own checks: depth, huge integers, NaN)
            value = jsonbody.loads(value.encode("utf-8", "surrogatepass"))
        except jsonbody.BadJson as exc:
            raise ApiError(
                400, "invalid_calling_window", f"callingWindows is not valid JSON: {exc}"
            ) from None
    try:
        return windows.parse_windows(value)
    except windows.WindowError as exc:
        raise ApiError(400, "invalid_calling_window", str(exc)) from None


def _coerce_form(fields: dict[str, str]) -> dict[str, Any]:
    """Form fields arrive as text: turn the integer ones into ints, empty optionals into None."""
    data: dict[str, Any] = {}
    for name, value in fields.items():
        if value.strip() == "" and name in (
            *_FORM_INTS,
            "description",
            "scheduledStartTime",
            "timezone",
            "defaultCountry",
            "phoneColumn",
            "callingWindows",
            "windowTimezone",
            "expiresAt",
            "retryOnVoicemail",
        ):
            continue
        if name == "retryOnVoicemail":
            flag = value.strip().lower()
            if flag not in ("true", "false"):
                raise ApiError(400, "validation_error", "'retryOnVoicemail' must be true or false")
            data[name] = flag == "true"
        elif name in _FORM_INTS:
            number = bounded_int(value.strip(), 0, 10**9)
            if number is None:
                raise ApiError(400, "validation_error", f"'{name}' must be an integer")
            data[name] = number
        else:
            data[name] = value
    return data


# Multipart limits: parts in one body, and bytes of one form field (the CSV has its own cap).
MAX_PARTS = 32
MAX_FORM_FIELD_BYTES = 10_000


async def _read_multipart(request: web.Request) -> tuple[dict[str, str], bytes | None]:
    """Stream the multipart body: form fields as text, the CSV capped at 10 MB, the whole body
    at `max_body_mb`."""
    max_body = request.app[appkeys.CONFIG].server.max_body_mb
    limit = int(max_body * 1024 * 1024)
    if request.content_length is not None and request.content_length > limit:
        raise _body_too_large(max_body)
    try:
        with connections.reading_body(request):
            return await _read_parts(request, limit, max_body)
    except (ValueError, HttpProcessingError):  # no boundary, broken framing or part headers
        raise ApiError(400, "invalid_csv", "Malformed multipart/form-data body") from None


async def _read_urlencoded(request: web.Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body, held to the multipart limits."""
    try:
        with connections.reading_body(request):
            form = await request.post()
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "validation_error", "Form body is not UTF-8 text") from None
    if len(form) > MAX_PARTS:
        raise ApiError(400, "too_many_parts", f"A form may have at most {MAX_PARTS} fields")
    fields = {k: str(v) for k, v in form.items()}
    for name, value in fields.items():
        if len(value.encode("utf-8", "surrogatepass")) > MAX_FORM_FIELD_BYTES:
            raise ApiError(
                413,
                "payload_too_large",
                f"Form field '{name[:50]}' is larger than {MAX_FORM_FIELD_BYTES} bytes",
            )
    return fields


def _body_too_large(max_body_mb: float) -> ApiError:
    return ApiError(413, "payload_too_large", f"Request body is larger than {max_body_mb:g} MB")


async def _read_parts(
    request: web.Request, limit: int, max_body_mb: float
) -> tuple[dict[str, str], bytes | None]:
    reader = await request.multipart()
    fields: dict[str, str] = {}
    csv_bytes: bytes | None = None
    total = 0
    parts = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        parts += 1
        if parts > MAX_PARTS:
            raise ApiError(
                400, "too_many_parts", f"A multipart body may have at most {MAX_PARTS} parts"
            )
        if not isinstance(part, BodyPartReader):
            raise ApiError(400, "invalid_csv", "Nested multipart bodies are not supported")
        name = part.name or ""
        if name == "file" and csv_bytes is not None:
            raise ApiError(400, "too_many_files", "Send exactly one 'file' part")
        cap = intake.MAX_CSV_BYTES if name == "file" else MAX_FORM_FIELD_BYTES
        chunks: list[bytes] = []
        size = 0
        while chunk := await part.read_chunk(64 * 1024):
            size += len(chunk)
            total += len(chunk)
            if total > limit:
                raise _body_too_large(max_body_mb)
            if size > cap:
                if name == "file":
                    raise ApiError(413, "file_too_large", "CSV file is larger than 10 MB")
                raise ApiError(
                    413,
                    "payload_too_large",
                    f"Form field '{name[:50]}' is larger than {MAX_FORM_FIELD_BYTES} bytes",
                )
            chunks.append(chunk)
        value = b"".join(chunks)
        if part.headers.get("Content-Encoding", "identity").lower() != "identity":
            # (a compressed part could unpack to megabytes from a few bytes: none is needed; a
            # compressed file was read as its compressed bytes, and refused for what they held)
            raise ApiError(
                400, "validation_error", f"Form field '{name[:50]}' must not be compressed"
            )
        decoded = await _transfer_decoded(part, name, value)
        if name == "file":
            csv_bytes = decoded
            continue
        try:
            fields[name] = decoded.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(
                400, "validation_error", f"Form field '{name[:50]}' is not UTF-8"
            ) from None
    return fields, csv_bytes


async def _transfer_decoded(part: BodyPartReader, name: str, value: bytes) -> bytes:
    """A part's bytes decoded from its Content-Transfer-Encoding: base64 and quoted-printable
    decoded, 7bit, 8bit, binary (or none) as sent; any other is 400 validation_error. The
    `file` part included: it was read as sent whatever its encoding (an unknown one accepted,
    base64 text read as the CSV). What is decoded is never longer than what was sent (which
    the part's cap bounds); a big part is decoded off the event loop. (Content-Encoding, which
    would decompress, is refused before this.)"""
    try:
        if len(value) <= INLINE_JSON_BYTES or CONTENT_TRANSFER_ENCODING not in part.headers:
            return bytes(part.decode(value))
        return bytes(await asyncio.to_thread(part.decode, value))
    except (RuntimeError, ValueError) as exc:  # an unknown encoding, base64 padding...
        raise ApiError(
            400, "validation_error", f"Form field '{name[:50]}' cannot be decoded: {exc}"
        ) from None


@routes.get("/batch/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    org = organization(request)
    requested_org = request.query.get("organizationId")
    if not requested_org:
        raise ApiError(400, "missing_organization_id", "organizationId is required")
    if requested_org != org:
        raise ApiError(403, "forbidden", "This API key does not belong to that organization")
    status = request.query.get("status") or None
    if status is not None and status not in JobStatus.__members__.values():
        raise ApiError(
            400,
            "invalid_status",
            f"status must be one of: {', '.join(s.value for s in JobStatus)}",
        )
    page = query_int(request, "page", 1, 1, None, "invalid_page")
    page_size = query_int(request, "pageSize", 20, 1, 100, "invalid_page_size")
    jobs_json, total = await request.app[appkeys.SERVICE].list(org, status, page, page_size)
    body = {"success": True, "total": total, "page": page, "pageSize": page_size}
    return spliced_json(body, "batchJobs", jobs_json)


def spliced_json(body: dict[str, Any], key: str, raw_json: str) -> web.Response:
    """`body` with `key` set to `raw_json`, JSON the store rendered already (see job_summary and
    contact_json): spliced in as it is rather than parsed and encoded again."""
    text = jsontext.dumps(body)[:-1] + f",{jsontext.dumps(key)}:{raw_json}}}"
    return web.Response(text=text, content_type="application/json")


@routes.get("/batch/jobs/{batch_job_id}")
async def job_detail(request: web.Request) -> web.Response:
    org = organization(request)
    job_id = request.match_info["batch_job_id"]
    contact_status = request.query.get("contactStatus") or None
    if contact_status is not None and contact_status not in ContactStatus.__members__.values():
        raise ApiError(
            400,
            "invalid_contact_status",
            f"contactStatus must be one of: {', '.join(s.value for s in ContactStatus)}",
        )
    page = query_int(request, "contactsPage", 1, 1, None, "invalid_page")
    page_size = query_int(request, "contactsPageSize", 50, 1, 500, "invalid_page_size")
    detail = await request.app[appkeys.SERVICE].detail(org, job_id, contact_status, page, page_size)
    body = job_summary(detail.job, detail.counts)
    body.update(
        {
            "statusBreakdown": detail.counts,
            "estimatedCompletionTime": service.iso(detail.estimated_completion),
            "contactsTotal": detail.contacts_total,
            "contactsPage": page,
            "contactsPageSize": page_size,
            "contactsHasMore": page * page_size < detail.contacts_total,
        }
    )
    return spliced_json(body, "contacts", detail.contacts_json)


@routes.post("/batch/jobs/{batch_job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    job, cancelled = await request.app[appkeys.SERVICE].cancel(
        organization(request), request.match_info["batch_job_id"]
    )
    return web.json_response(
        {
            "success": True,
            "batchJobId": job.id,
            "status": job.status,
            "contactsCancelled": cancelled,
            "message": f"Batch job cancelled; {cancelled} contacts will not be called. "
            "Calls in progress finish normally.",
        }
    )


@routes.post("/batch/jobs/{batch_job_id}/start")
async def start_job(request: web.Request) -> web.Response:
    job = await request.app[appkeys.SERVICE].start_now(
        organization(request), request.match_info["batch_job_id"]
    )
    return web.json_response(
        {
            "success": True,
            "batchJobId": job.id,
            "status": job.status,
            "actualStartTime": service.iso(job.actual_start_time),
            "message": "Batch job started",
        }
    )


@routes.patch("/batch/jobs/{batch_job_id}/reschedule")
async def reschedule_job(request: web.Request) -> web.Response:
    body = await read_json(request, SMALL_JSON_BYTES)
    if not isinstance(body, dict):
        raise ApiError(400, "validation_error", "Request body must be a JSON object")
    try:
        parsed = RescheduleBody.model_validate(body, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from None
    job = await request.app[appkeys.SERVICE].reschedule(
        organization(request),
        request.match_info["batch_job_id"],
        parsed.scheduledStartTime,
        parsed.timezone,
    )
    return web.json_response(
        {
            "success": True,
            "batchJobId": job.id,
            "status": job.status,
            "scheduledStartTime": service.iso(job.scheduled_start_time),
            "timezone": job.timezone,
            "message": "Batch job rescheduled",
        }
    )


# ----------------------------------------------------------------- contract (api.openapi)

_JOB_ERRORS: dict[int, list[str]] = {404: ["job_not_found"], 405: ["method_not_allowed"]}

openapi.register(
    "POST",
    "/batch/create",
    "Create a batch job from a CSV upload or a JSON contact list",
    body=CreateJson,
    form=CreateFields,
    ok=schemas.CreateAnswer,
    status=201,
    links={
        name: (
            openapi.operation_id(method, path),
            {param: "$response.body#/batchJobId"},
        )
        for name, method, path, param in (
            ("detail", "GET", "/batch/jobs/{batch_job_id}", "batch_job_id"),
            ("cancel", "POST", "/batch/jobs/{batch_job_id}/cancel", "batch_job_id"),
            ("start", "POST", "/batch/jobs/{batch_job_id}/start", "batch_job_id"),
            ("reschedule", "PATCH", "/batch/jobs/{batch_job_id}/reschedule", "batch_job_id"),
            ("pause", "POST", "/batch/jobs/{batch_job_id}/pause", "batch_job_id"),
            ("resume", "POST", "/batch/jobs/{batch_job_id}/resume", "batch_job_id"),
            ("retry", "POST", "/batch/jobs/{batch_job_id}/retry", "batch_job_id"),
            ("export", "GET", "/batch/jobs/{batch_job_id}/export", "batch_job_id"),
            ("batch_call", "GET", "/v1/voiceai/batch-calling/{batch_id}", "batch_id"),
            ("calls", "GET", "/api/v1/public/call-batches/{batch_id}/calls", "batch_id"),
        )
    },
    headers={
        "Idempotency-Key": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
            "pattern": "^[!-~]([ -~]*[!-~])?$",
        }
    },
    errors={
        400: [
            "validation_error",
            "invalid_json",
            "invalid_csv",
            "missing_phone_column",
            "too_many_columns",
            "too_many_parts",
            "too_many_files",
            "no_valid_contacts",
            "too_many_contacts",
            "invalid_phone_format",
            "contact_data_too_large",
            "invalid_timezone",
            "past_scheduled_time",
            "invalid_scheduled_time",
            "no_outbound_agent",
        ],
        402: ["insufficient_credits"],
        404: ["phone_number_not_found"],
        409: ["idempotency_key_reused"],
        413: ["file_too_large"],
        415: ["unsupported_media_type"],
    },
)
openapi.register(
    "GET",
    "/batch/jobs",
    "List the organization's jobs, newest first",
    query=schemas.ListJobsQuery,
    ok=schemas.JobList,
    errors={
        400: ["missing_organization_id", "invalid_status", "invalid_page", "invalid_page_size"],
        403: ["forbidden"],
    },
)
openapi.register(
    "GET",
    "/batch/jobs/{batch_job_id}",
    "A job with its progress and a page of contacts",
    query=schemas.DetailQuery,
    ok=schemas.JobDetail,
    errors={400: ["invalid_contact_status", "invalid_page", "invalid_page_size"], **_JOB_ERRORS},
)
openapi.register(
    "POST",
    "/batch/jobs/{batch_job_id}/cancel",
    "Cancel a job",
    ok=schemas.CancelAnswer,
    errors={400: ["job_not_cancellable"], **_JOB_ERRORS},
)
openapi.register(
    "POST",
    "/batch/jobs/{batch_job_id}/start",
    "Start a scheduled or pending job now",
    ok=schemas.StartAnswer,
    errors={400: ["job_not_startable"], **_JOB_ERRORS},
)
openapi.register(
    "PATCH",
    "/batch/jobs/{batch_job_id}/reschedule",
    "Move a pending or scheduled job to another time",
    body=RescheduleBody,
    ok=schemas.RescheduleAnswer,
    errors={
        400: [
            "validation_error",
            "invalid_json",
            "job_not_reschedulable",
            "invalid_expires_at",
            "past_scheduled_time",
            "invalid_scheduled_time",
            "invalid_timezone",
        ],
        **_JOB_ERRORS,
    },
)
