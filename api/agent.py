"""Results from the agent: `POST /calls/{roomName}/result` (the dispatch metadata's
`callbackUrl`) and `GET` of the same path for the call's result history.

Authorized by `Authorization: Bearer {callbackToken}` (that attempt only) or by the
organization's API key (`x-api-key`, `xi-api-key` or `Authorization: Bearer`). The auth
middleware leaves these paths to this module (see `api.auth.is_result_path`).
"""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from api import keys as appkeys
from api import openapi, ratelimit
from api.auth import MAX_KEY_CHARS, presented_key
from api.batch import SMALL_JSON_BYTES, read_json, validation_error
from api.errors import ApiError
from dialer import agent, results
from dialer.scheduler import room_ids
from dialer.service import iso, iso_to_unix
from storage.rows import ResultRow

routes = web.RouteTableDef()

PATH = "/calls/{roomName}/result"
_LATEST_CALLBACK_DAYS = results.MAX_CALLBACK_DAYS


# ----------------------------------------------------------------- models


class ResultBody(BaseModel):
    """What an agent reports about its call."""

    model_config = ConfigDict(extra="forbid")
    disposition: results.Disposition
    callbackAt: StrictStr | None = Field(
        default=None,
        description="ISO 8601 date-time (an offset or Z; a time without one is UTC). "
        "Required for callback_requested.",
        max_length=64,
    )
    summary: StrictStr | None = Field(default=None, max_length=results.MAX_SUMMARY_CHARS)
    data: dict[str, Any] | None = Field(
        default=None, description="Any JSON object, up to 16 KB encoded"
    )

    @model_validator(mode="after")
    def _checks(self) -> ResultBody:
        if self.disposition == "callback_requested" and self.callbackAt is None:
            raise ValueError("callbackAt is required for callback_requested")
        if self.data is not None:
            size = len(json.dumps(self.data, separators=(",", ":")).encode())
            if size > results.MAX_DATA_BYTES:
                raise ValueError(f"data is {size} bytes encoded; at most 16 KB (16384)")
        return self


class ResultOut(BaseModel):
    id: str
    roomName: str
    contactId: str
    jobId: str
    attemptNumber: int
    disposition: str
    callbackAt: str | None
    summary: str | None
    data: dict[str, Any] | None
    source: str
    receivedAt: str
    appliedAt: str | None = Field(
        description="When its effect on the contact was made (null while the call is live: "
        "when the call ends)"
    )


class ResultAccepted(BaseModel):
    result: ResultOut
    contactStatus: str
    applied: bool


class ResultHistory(BaseModel):
    roomName: str
    latest: ResultOut | None
    history: list[ResultOut]


def result_json(row: ResultRow) -> dict[str, Any]:
    return {
        "id": f"result_{row.id}",
        "roomName": row.room_name,
        "contactId": f"contact_{row.contact_id}",
        "jobId": row.job_id,
        "attemptNumber": row.attempt_no,
        "disposition": row.disposition,
        "callbackAt": iso(row.callback_at),
        "summary": row.summary,
        "data": row.data,
        "source": row.source,
        "receivedAt": iso(row.received_at),
        "appliedAt": iso(row.applied_at),
    }


def _callback_time(text: str, now: float) -> float:
    try:
        at = iso_to_unix(text, UTC)  # a time without an offset is UTC
    except (ValueError, OverflowError):
        raise ApiError(
            400, "validation_error", f"'callbackAt': {text[:64]!r} is not an ISO 8601 date-time"
        ) from None
    if at < 0:  # (year 0 and the like: shown as no ISO 8601 time can be read back)
        raise ApiError(400, "validation_error", "'callbackAt' is before 1970-01-01T00:00:00Z")
    if at > now + _LATEST_CALLBACK_DAYS * 86_400:
        raise ApiError(
            400,
            "validation_error",
            f"'callbackAt' must be within {_LATEST_CALLBACK_DAYS} days from now",
        )
    return at


# ----------------------------------------------------------------- auth


async def _caller(request: web.Request) -> agent.Caller:
    """The token (a Bearer value) and the organization (an API key), whichever were sent."""
    token: str | None = None
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        token = value.strip()
    key = presented_key(request)
    org: str | None = None
    if key is not None and key.isascii() and len(key) <= MAX_KEY_CHARS:
        row = await request.app[appkeys.KEY_CACHE].authenticate(request.app[appkeys.STORE], key)
        if row is not None:
            org = row.organization_id
            ratelimit.check(request, row.id, request.app[appkeys.CLOCK].now())
    if token is None and org is None:
        if key is None:
            raise ApiError(
                401,
                "unauthorized",
                "Send 'Authorization: Bearer <callbackToken>' or the organization's API key",
            )
        raise ApiError(401, "unauthorized", "Invalid or revoked API key")
    return agent.Caller(
        token=token if token is not None and token.isascii() else None, organization_id=org
    )


# ----------------------------------------------------------------- routes


@routes.post(PATH)
async def post_result(request: web.Request) -> web.Response:
    room = request.match_info["roomName"]
    results_svc = request.app[RESULTS]
    if room_ids(room) is None:
        raise agent.call_not_found(room)
    caller = await _caller(request)
    # Who may post for this call is known before the body is read: a made-up room or token is
    # answered at once, without reading (or waiting for) what it sends.
    await results_svc.authorize(room, caller)
    try:
        body = ResultBody.model_validate(await read_json(request, SMALL_JSON_BYTES))
    except ValidationError as exc:
        raise validation_error(exc) from None
    now = request.app[appkeys.CLOCK].now()
    callback_at = None if body.callbackAt is None else _callback_time(body.callbackAt, now)
    recorded = await results_svc.post(
        room,
        caller,
        agent.AgentResult(body.disposition, callback_at, body.summary, body.data),
    )
    answer = {
        "result": result_json(recorded.result),
        "contactStatus": recorded.contact_status,
        "applied": recorded.applied,
    }
    return web.json_response(answer)


@routes.get(PATH)
async def get_results(request: web.Request) -> web.Response:
    room = request.match_info["roomName"]
    caller = await _caller(request)
    history = [result_json(r) for r in await request.app[RESULTS].history(room, caller)]
    return web.json_response(
        {"roomName": room, "latest": history[-1] if history else None, "history": history}
    )


RESULTS = web.AppKey("agent_results", agent.AgentResults)

_ERRORS: dict[int, list[str]] = {
    401: ["unauthorized", "invalid_callback_token"],
    404: ["call_not_found"],
    405: ["method_not_allowed"],
}
openapi.register(
    "POST",
    PATH,
    "The agent's result for its call (Bearer callbackToken, or an API key)",
    body=ResultBody,
    ok=ResultAccepted,
    errors={
        **_ERRORS,
        400: ["validation_error", "invalid_json"],
        410: ["result_window_closed"],
        413: ["payload_too_large"],
        429: ["too_many_results", "rate_limited"],
    },
)
openapi.register(
    "GET",
    PATH,
    "Every result posted for a call, oldest first",
    ok=ResultHistory,
    errors=_ERRORS,
)
