"""Error envelopes, and the middleware that turns every failure into one.

`/batch/...` routes answer `{"success": false, "error": "<message>", "code": "<code>"}`. Other
route families (compatibility routes) register their own envelope by path prefix.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from api.connections import Throttled
from dialer.intake import IntakeError
from dialer.service import ServiceError
from storage.connection import StorageUnavailable

log = structlog.get_logger("api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# (status, code, message, details) -> response
Envelope = Callable[[int, str, str, dict[str, Any]], web.Response]


class ApiError(Exception):
    """An error answered to the client as is."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


# An error message lists at most this many problems, and stays under this many characters.
MAX_PROBLEMS = 20
MAX_MESSAGE_CHARS = 4000


# Problems of a pydantic validation read one by one at most: past this many, each costs about
# 1 us and 1 KB to read (700,000 unknown fields across a body's objects: 2.7 s of the event
# loop and 600 MB), and the answer says only how many there are.
MAX_ERRORS_READ = 1_000


def validation_problems(exc: ValidationError) -> list[ErrorDetails] | None:
    """A validation error's problems, or None when there are too many to read (see
    MAX_ERRORS_READ; `exc.error_count()` says how many)."""
    if exc.error_count() > MAX_ERRORS_READ:
        return None
    return exc.errors(include_url=False, include_context=False, include_input=False)


def too_many_problems(exc: ValidationError) -> str:
    return (
        f"the body has {exc.error_count()} problems, too many to list (fields a route does not "
        "take, values of the wrong type: see GET /openapi.json)"
    )


def problem_list(problems: list[str]) -> str:
    """`problems` joined for an error message: the first MAX_PROBLEMS, each cut short, with a
    note of how many more there were; never longer than MAX_MESSAGE_CHARS."""
    shown = [p if len(p) <= 150 else p[:147] + "..." for p in problems[:MAX_PROBLEMS]]
    text = "; ".join(shown)
    if len(problems) > MAX_PROBLEMS:
        text += f"; and {len(problems) - MAX_PROBLEMS} more"
    return bounded(text)


def bounded(message: str) -> str:
    return (
        message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 3] + "..."
    )


def batch_envelope(status: int, code: str, message: str, details: dict[str, Any]) -> web.Response:
    body: dict[str, Any] = {"success": False, "error": message, "code": code}
    body.update(details)
    return web.json_response(body, status=status)


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_middleware(envelopes: list[tuple[str, Envelope]]) -> Any:
    """Catch everything below and answer in the envelope of the route family."""

    def envelope_for(path: str) -> Envelope:
        for prefix, envelope in envelopes:
            if path.startswith(prefix):
                return envelope
        return batch_envelope

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        envelope = envelope_for(request.path)
        try:
            return await handler(request)
        except ApiError as exc:
            return envelope(exc.status, exc.code, bounded(exc.message), exc.details)
        except ServiceError as exc:
            return envelope(exc.status, exc.code, bounded(exc.message), exc.details)
        except IntakeError as exc:
            status = 413 if exc.code in ("file_too_large", "payload_too_large") else 400
            return envelope(status, exc.code, bounded(exc.message), exc.details)
        except StorageUnavailable as exc:
            log.warning("request_storage_unavailable", path=request.path, error=str(exc))
            response = envelope(
                503,
                "storage_unavailable",
                f"Storage is unavailable, nothing was changed; try again shortly ({exc})",
                {},
            )
            response.headers["Retry-After"] = "5"
            return response
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, "http_error")
            message = exc.reason if exc.status != 404 else "Not found"
            response = envelope(exc.status, code, message, {})
            if exc.status == 405:
                allow = exc.headers.get("Allow")
                if allow:
                    response.headers["Allow"] = allow
            return response
        except ConnectionError:
            # The client went away mid-request (or its connection was shed for waiting too
            # long): nobody to answer, nothing of ours failed. Counted, one line a second.
            abandoned.hit()
            return envelope(400, "client_disconnected", "The connection was lost", {})
        except Exception:
            log.exception("request_failed", method=request.method, path=request.path)
            return envelope(500, "internal_error", "Internal server error", {})

    abandoned = Throttled("requests_abandoned", time.monotonic)
    return middleware
