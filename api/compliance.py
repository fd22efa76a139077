"""Compliance routes: the organization's do-not-call list and the call records export."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from api import keys as appkeys
from api import openapi
from api.auth import organization
from api.batch import _read_multipart, query_int, read_json, validation_error
from api.controls import csv_headers, stream_answer
from api.errors import ApiError
from dialer import dnc, intake

routes = web.RouteTableDef()


# ----------------------------------------------------------------- models


class DncAddBody(BaseModel):
    """POST /dnc: numbers in E.164 and an optional reason."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    numbers: list[Any] = Field(min_length=1, max_length=dnc.MAX_NUMBERS)
    reason: StrictStr | None = Field(default=None, max_length=500)


class DncAdded(BaseModel):
    added: int
    alreadyListed: int


class DncImported(DncAdded):
    invalidRows: list[dict[str, Any]]
    invalidCount: int
    duplicatesRemoved: int  # rows whose number an earlier row of the file had


class DncEntry(BaseModel):
    number: str
    reason: str | None
    source: str
    addedAt: str
    jobId: str | None = None  # source 'agent': the job of the call it was asked in


class DncPage(BaseModel):
    numbers: list[DncEntry]
    total: int
    page: int
    pageSize: int


# ----------------------------------------------------------------- do-not-call


def _listing(request: web.Request) -> None:
    """Numbers are being listed: no contact claimed ahead is dialed (see
    Engine.give_back_claimed_ahead); before the write, and again after it (_touched)."""
    request.app[appkeys.ENGINE].give_back_claimed_ahead()


def _touched(request: web.Request, jobs: list[str]) -> None:
    """Jobs whose waiting contacts were cancelled look again (they may now be complete)."""
    engine = request.app[appkeys.ENGINE]
    engine.give_back_claimed_ahead()
    for job_id in jobs:
        engine.wake_job(job_id)


@routes.post("/dnc")
async def dnc_add(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "validation_error", "Request body must be a JSON object")
    try:
        parsed = DncAddBody.model_validate(body, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from None
    clock = request.app[appkeys.CLOCK]
    _listing(request)
    added = await dnc.add(
        request.app[appkeys.STORE],
        organization(request),
        parsed.numbers,
        parsed.reason,
        "api",
        clock.now(),
    )
    _touched(request, added.jobs)
    answer = DncAdded(added=added.added, alreadyListed=added.already_listed)
    return web.json_response(answer.model_dump())


# (Not `import`: that path is the import's own, whose Allow header named DELETE, and a DELETE of
# it was read as taking off a number `import`.)
@routes.delete("/dnc/{number:(?!import$)[^{}/]+}")
async def dnc_remove(request: web.Request) -> web.Response:
    number = await dnc.remove(
        request.app[appkeys.STORE], organization(request), request.match_info["number"]
    )
    return web.json_response({"removed": number})


@routes.get("/dnc")
async def dnc_list(request: web.Request) -> web.Response:
    page = query_int(request, "page", 1, 1, None, "invalid_page")
    page_size = query_int(request, "pageSize", 50, 1, 500, "invalid_page_size")
    given = request.query.get("number")
    number = None if given is None else dnc.number_to_find(given)
    rows, total = await request.app[appkeys.STORE].dnc_page(
        organization(request), number, page_size, (page - 1) * page_size
    )
    answer = DncPage(
        numbers=[DncEntry(**row) for row in rows], total=total, page=page, pageSize=page_size
    )
    return web.json_response(answer.model_dump())


@routes.post("/dnc/import")
async def dnc_import(request: web.Request) -> web.Response:
    if request.content_type != "multipart/form-data":
        raise ApiError(
            415, "unsupported_media_type", "Send multipart/form-data with a CSV in the 'file' field"
        )
    fields, data = await _read_multipart(request)
    if data is None:
        raise ApiError(400, "invalid_csv", "CSV file missing: send it in the 'file' field")
    reason = (fields.get("reason") or "").strip()[:500] or None
    column = (fields.get("phoneColumn") or "").strip()[:200] or None
    country = (fields.get("defaultCountry") or "").strip() or None
    _listing(request)
    added, parsed = await dnc.import_csv(
        request.app[appkeys.STORE],
        organization(request),
        data,
        reason,
        request.app[appkeys.CLOCK].now(),
        column,
        country,
        # After each transaction: a contact claimed ahead with a number it listed is not
        # dialed, even when a later one fails.
        lambda jobs: _touched(request, jobs),
    )
    report = intake.invalid_report(parsed)
    answer = DncImported(
        added=added.added,
        alreadyListed=added.already_listed,
        invalidRows=report["invalidRows"],
        invalidCount=report["invalidCount"],
        duplicatesRemoved=parsed.duplicates,
    )
    return web.json_response(answer.model_dump())


# ----------------------------------------------------------------- call records


def _instant(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name, "").strip()
    if not raw:
        return default
    text = raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw
    try:
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (ValueError, OverflowError):
        raise ApiError(
            400, "invalid_time_range", f"{name} {raw[:64]!r} is not an ISO 8601 date-time"
        ) from None


@routes.get("/calls/export")
async def calls_export(request: web.Request) -> web.StreamResponse:
    """Every attempt of the organization started in [from, to) as CSV (times in UTC)."""
    start = _instant(request, "from", 0.0)
    end = _instant(request, "to", 1e15)
    if start >= end:
        raise ApiError(400, "invalid_time_range", "'from' must be before 'to'")
    org = organization(request)
    chunks = request.app[appkeys.SERVICE].call_records(org, start, end)
    return await stream_answer(request, org, csv_headers("calls.csv"), chunks)


# ----------------------------------------------------------------- contract (api.openapi)


class DncQuery(BaseModel):
    page: int = Field(default=1, ge=1)
    pageSize: int = Field(default=50, ge=1, le=500)
    number: str | None = Field(default=None, max_length=32)


class CallRecordsQuery(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    start: str | None = Field(default=None, alias="from", description="ISO 8601 (UTC if naive)")
    end: str | None = Field(default=None, alias="to", description="ISO 8601 (UTC if naive)")


class DncRemoved(BaseModel):
    removed: str


class DncImportForm(BaseModel):
    reason: str | None = Field(default=None, max_length=500)
    phoneColumn: str | None = Field(default=None, max_length=200)
    defaultCountry: str | None = Field(
        default=None, description="ISO 3166 alpha-2: national numbers are read as dialed from it"
    )


openapi.register(
    "POST",
    "/dnc",
    "Add numbers to the organization's do-not-call list",
    body=DncAddBody,
    ok=DncAdded,
    errors={400: ["validation_error", "invalid_json", "invalid_numbers"]},
)
openapi.register(
    "DELETE",
    "/dnc/{number}",
    "Take a number off the do-not-call list",
    ok=DncRemoved,
    errors={400: ["invalid_numbers"], 404: ["not_listed"]},
)
openapi.register(
    "GET",
    "/dnc",
    "A page of the do-not-call list",
    query=DncQuery,
    ok=DncPage,
    errors={400: ["invalid_page", "invalid_page_size", "invalid_numbers"]},
)
openapi.register(
    "POST",
    "/dnc/import",
    "Add the numbers of a CSV file (a phone column) to the do-not-call list",
    form=DncImportForm,
    ok=DncImported,
    errors={
        400: [
            "invalid_csv",
            "missing_phone_column",
            "no_valid_contacts",
            "too_many_contacts",
            "too_many_columns",
            "invalid_default_country",
            "too_many_parts",
            "too_many_files",
        ],
        413: ["file_too_large"],
        415: ["unsupported_media_type"],
    },
)
openapi.register(
    "GET",
    "/calls/export",
    "Every call attempt of the organization in a time range, as CSV (the call records)",
    query=CallRecordsQuery,
    ok_content="text/csv",
    errors={400: ["invalid_time_range"], 429: ["too_many_streams"]},
)
