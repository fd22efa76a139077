"""Job controls: pause, resume, retry, CSV export, and live progress as Server-Sent Events."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import socket
import struct
import termios
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import structlog
from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from api import agent, openapi, schemas
from api import keys as appkeys
from api.auth import organization, presented_key
from api.batch import SMALL_JSON_BYTES, read_json, validation_error
from api.errors import ApiError
from dialer import service, states
from dialer.states import JobStatus
from storage.connection import StorageUnavailable
from storage.rows import JobRow

routes = web.RouteTableDef()
log = structlog.get_logger("api.controls")

# Live progress: at most one snapshot per this many seconds per stream (changes in between are
# folded into the next one), and a comment line when nothing changed for a while so that
# proxies keep the connection open. Wall-clock pacing of the stream, not job time.
EVENT_MIN_INTERVAL_SECONDS = 0.25
EVENT_KEEPALIVE_SECONDS = 15.0
# A quiet stream looks this often whether its client left or its key was revoked (with
# handler_cancellation off, as `serve` runs, a client that closes its connection is otherwise
# noticed only at the next write, and holds one of its organization's streams until then: a
# dashboard reconnecting after a blip got 429).
EVENT_CHECK_SECONDS = 1.0
# A streamed answer (live progress, an export) whose client takes none of what waits for it for
# this long (its connection's buffers full: it reads nothing) is dropped, freeing its connection
# and its place among its organization's streams (see holding_stream and write_or_drop). A read
# counts once the client's system says it freed a packet's worth (a KB or so on a network, 64 KB
# on the same machine); looked at STALL_CHECKS times in that long.
STREAM_STALL_SECONDS = 60.0
STALL_CHECKS = 6

# Set when the app shuts down: open event streams end, so shutdown does not wait on them.
STREAMS_CLOSING = web.AppKey("event_streams_closing", asyncio.Event)
# Streams open (live progress, exports), per organization (see `holding_stream`).
OPEN_STREAMS = web.AppKey("open_event_streams", Counter[str])

RETRY_STATUSES = sorted(states.FAILURE_STATUSES)

Body = TypeVar("Body", bound=BaseModel)


class PauseBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: StrictStr | None = Field(default=None, min_length=1, max_length=200)


class RetryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    statuses: list[StrictStr] | None = Field(default=None, min_length=1, max_length=20)
    extraAttempts: StrictInt = Field(default=1, ge=1, le=10)


def setup(app: web.Application) -> None:
    """Add the control routes and end open event streams at shutdown."""
    app[STREAMS_CLOSING] = asyncio.Event()
    app[OPEN_STREAMS] = Counter()
    app.router.add_routes(routes)

    async def close_streams(app: web.Application) -> None:
        app[STREAMS_CLOSING].set()

    app.on_shutdown.append(close_streams)


async def optional_body(request: web.Request, model: type[Body]) -> Body:
    """The JSON object body validated into `model`; no body at all means every default."""
    body: Any = {}
    if request.can_read_body:
        body = await read_json(request, SMALL_JSON_BYTES)
        if not isinstance(body, dict):
            raise ApiError(400, "validation_error", "Request body must be a JSON object")
    try:
        return model.model_validate(body, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from None


def control_json(job: JobRow, message: str) -> dict[str, Any]:
    return {
        "success": True,
        "batchJobId": job.id,
        "status": job.status,
        "pauseReason": pause_reason(job),
        "message": message,
    }


def pause_reason(job: JobRow) -> str | None:
    return job.status_reason if job.status == JobStatus.PAUSED else None


@routes.post("/batch/jobs/{batch_job_id}/pause")
async def pause_job(request: web.Request) -> web.Response:
    body = await optional_body(request, PauseBody)
    job = await request.app[appkeys.SERVICE].pause(
        organization(request), request.match_info["batch_job_id"], body.reason
    )
    return web.json_response(
        control_json(job, "Batch job paused; calls in progress finish normally")
    )


@routes.post("/batch/jobs/{batch_job_id}/resume")
async def resume_job(request: web.Request) -> web.Response:
    job = await request.app[appkeys.SERVICE].resume(
        organization(request), request.match_info["batch_job_id"]
    )
    return web.json_response(control_json(job, "Batch job resumed"))


@routes.post("/batch/jobs/{batch_job_id}/retry")
async def retry_job(request: web.Request) -> web.Response:
    body = await optional_body(request, RetryBody)
    unknown = [s for s in body.statuses or () if s not in states.FAILURE_STATUSES]
    if unknown:
        raise ApiError(
            400,
            "invalid_retry_status",
            f"Cannot retry contacts in status {unknown[0][:40]!r}; statuses must be among: "
            + ", ".join(RETRY_STATUSES),
        )
    retried = await request.app[appkeys.SERVICE].retry(
        organization(request), request.match_info["batch_job_id"], body.statuses, body.extraAttempts
    )
    job = retried.job
    body_out = control_json(job, _retry_message(retried.requeued, retried.suppressed))
    body_out.update(
        {
            "contactsRequeued": retried.requeued,
            "statuses": retried.statuses,
            "retryRounds": job.retry_rounds,
            "suppressedCount": retried.suppressed,
        }
    )
    return web.json_response(body_out)


def _retry_message(requeued: int, suppressed: int) -> str:
    if not (requeued or suppressed):
        return "No contact ended in these statuses; nothing to retry"
    done = (
        f"{requeued} contacts re-queued for another round" if requeued else "No contact re-queued"
    )
    if suppressed:
        done += f"; {suppressed} left as they ended: their numbers are on the do-not-call list"
    return done


@routes.get("/batch/jobs/{batch_job_id}/export")
async def export_job(request: web.Request) -> web.StreamResponse:
    return await export_response(request, request.match_info["batch_job_id"])


async def export_response(request: web.Request, job_id: str) -> web.StreamResponse:
    """The job's contacts as a streamed CSV download."""
    org = organization(request)
    job, chunks = await request.app[appkeys.SERVICE].export_csv(org, job_id)
    return await stream_answer(request, org, csv_headers(f"{job.id}.csv"), chunks)


def csv_headers(filename: str) -> dict[str, str]:
    return {
        "Content-Type": "text/csv; charset=utf-8",
        "Content-Disposition": f'attachment; filename="{filename}"',
    }


async def stream_answer(
    request: web.Request, org: str, headers: dict[str, str], chunks: AsyncIterator[bytes]
) -> web.StreamResponse:
    """An answer written chunk by chunk as fast as its client reads it (an export): counted
    among the organization's streams while it is written (see holding_stream); a client gone
    or stalled (see write_or_drop) ends it where it is."""
    with holding_stream(request, org):
        response = web.StreamResponse(headers=headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        if await headers_only(request, response):
            return response
        with contextlib.suppress(ConnectionError):
            async for chunk in chunks:
                await write_or_drop(request, response, chunk)
            await response.write_eof()
        return response


async def headers_only(request: web.Request, response: web.StreamResponse) -> bool:
    """A HEAD request (aiohttp answers one on every GET route) to a streamed answer: its
    status and headers are sent (those of the GET, prepared), and no body; True when so.
    aiohttp leaves out the length and the chunked framing of a HEAD answer but writes what a
    handler writes: the CSV (or events) after the headers were read by the client as the start
    of the next answer on its keep-alive connection."""
    if request.method != hdrs.METH_HEAD:
        return False
    await response.write_eof()
    return True


async def write_or_drop(request: web.Request, response: web.StreamResponse, data: bytes) -> None:
    """Write the next bytes of a streamed answer. A client that takes none of what is waiting
    for it for STREAM_STALL_SECONDS is dropped (see _drop): ConnectionResetError, as for a
    client that left. One that takes some is waited for: a write may last as long as it keeps
    taking (a slow reader drains a full send queue of megabytes, and the system says there is
    room again only after a third of it). Looked at STALL_CHECKS times in that long, so a
    client is dropped about STREAM_STALL_SECONDS after the last it took, not up to twice that."""
    loop = asyncio.get_running_loop()
    before = _unsent(request)
    # What waits for the client once the write has handed its bytes to the transport (its
    # chunk's framing, a few bytes, aside: a client that takes nothing is below it never).
    waiting = None if before is None else before + len(data)
    took_at = loop.time()
    write = asyncio.ensure_future(response.write(data))
    try:
        while True:
            done, _ = await asyncio.wait({write}, timeout=STREAM_STALL_SECONDS / STALL_CHECKS)
            if done:
                return write.result()
            now = _unsent(request)
            if waiting is not None and now is not None and now < waiting:
                waiting, took_at = now, loop.time()
            elif loop.time() - took_at >= STREAM_STALL_SECONDS:
                break
    finally:
        write.cancel()
    _drop(request)
    raise ConnectionResetError("the client read nothing of the answer")


def _drop(request: web.Request) -> None:
    """End a stalled client's connection at once: reset (SO_LINGER 0), so the system discards
    the megabytes queued for it rather than keep them, and keep sending them, until the client
    reads them or a timeout gives up."""
    log.warning("stream_client_stalled", path=request.path, seconds=STREAM_STALL_SECONDS)
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _unsent(request: web.Request) -> int | None:
    """Bytes written to the client and not taken by it yet: those in the transport's buffer
    and those in the system's send queue (Linux, TIOCOUTQ: not yet acknowledged by the
    client's side). Only the transport's where the queue cannot be read; None without one."""
    transport = request.transport
    if transport is None:
        return None
    buffered = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    ask = getattr(termios, "TIOCOUTQ", None)
    if sock is None or ask is None:
        return buffered
    try:
        queued = fcntl.ioctl(sock.fileno(), ask, b"\0\0\0\0")
    except (OSError, ValueError):
        return buffered
    return buffered + int(struct.unpack("i", queued)[0])


# ----------------------------------------------------------------- live progress


def progress_event(job: JobRow, counts: dict[str, int]) -> dict[str, Any]:
    """One snapshot, all from one read (statusBreakdown.dialing is the number of live calls)."""
    return {
        "batchJobId": job.id,
        "status": job.status,
        "pauseReason": pause_reason(job),
        "statusReason": job.status_reason,
        **service.progress(job, counts),
        "statusBreakdown": service.full_breakdown(counts),
        "completedAt": service.iso(job.completed_at),
    }


def sse(event: str, event_id: int, data: dict[str, Any]) -> bytes:
    return f"event: {event}\nid: {event_id}\ndata: {json.dumps(data)}\n\n".encode()


async def pace(seconds: float) -> None:
    """Hold the next event back until the stream's minimum interval has passed."""
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _first(*events: asyncio.Event, timeout: float) -> bool:
    """Wait until one of the events is set or the timeout passes; True if one was set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return bool(done)


@routes.get("/batch/jobs/{batch_job_id}/events")
async def job_events(request: web.Request) -> web.StreamResponse:
    """A `progress` event now and whenever the job's counts or status change (throttled), a
    `result` event for each result an agent posts for one of its calls, an `end` event when the
    job is completed, failed or cancelled; then the stream closes (also when its key is
    revoked, at its next event). An organization may hold `[server]
    max_event_streams_per_organization` streams at once, the service `max_event_streams`:
    past either, 429 too_many_streams, so that no one holds every connection."""
    org, job_id = organization(request), request.match_info["batch_job_id"]
    # Taken before each read, so a change made while we read or write is never missed.
    changed = request.app[appkeys.ENGINE].progress_event()
    job, counts = await request.app[appkeys.SERVICE].snapshot(org, job_id)
    last_result = await request.app[agent.RESULTS].store.last_result_id(job_id)
    with holding_stream(request, org):
        return await _stream(request, org, job_id, job, counts, changed, last_result)


@contextlib.contextmanager
def holding_stream(request: web.Request, org: str) -> Iterator[None]:
    """A response that can hold its connection for as long as its client wishes (live progress,
    which runs as long as its job; an export, written as fast as it is read): counted against
    `[server] max_event_streams_per_organization` and `max_event_streams`, 429
    too_many_streams past either."""
    server = request.app[appkeys.CONFIG].server
    open_streams = request.app[OPEN_STREAMS]
    if open_streams[org] >= server.max_event_streams_per_organization:
        raise _too_many_streams(
            f"This organization has {open_streams[org]} streams (live progress, exports) open, "
            "the most it may; close one first"
        )
    if open_streams.total() >= server.max_event_streams:
        raise _too_many_streams(
            "The service has as many streams (live progress, exports) open as it may"
        )
    open_streams[org] += 1
    try:
        yield
    finally:
        open_streams[org] -= 1
        if open_streams[org] <= 0:
            del open_streams[org]


def _too_many_streams(message: str) -> ApiError:
    return ApiError(429, "too_many_streams", f"{message} (try again later)")


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _key_revoked(request: web.Request) -> bool:
    """The stream's key no longer works (revoked): its stream ends as its next request would
    be refused (looked at every EVENT_CHECK_SECONDS, and before each event). Kept keys cost no
    read (see KeyCache)."""
    key = presented_key(request) or ""
    try:
        row = await request.app[appkeys.KEY_CACHE].authenticate(request.app[appkeys.STORE], key)
    except StorageUnavailable:  # not known to be revoked: asked again at the next look
        return False
    return row is None


async def _stream(
    request: web.Request,
    org: str,
    job_id: str,
    job: JobRow,
    counts: dict[str, int],
    changed: asyncio.Event,
    last_result: int,
) -> web.StreamResponse:
    svc = request.app[appkeys.SERVICE]
    results = request.app[agent.RESULTS]
    engine = request.app[appkeys.ENGINE]
    closing = request.app[STREAMS_CLOSING]
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    if await headers_only(request, response):
        return response
    sent: dict[str, Any] | None = None
    sent_at = -EVENT_MIN_INTERVAL_SECONDS
    written_at = loop.time()
    event_id = 0
    with contextlib.suppress(ConnectionError):
        while True:
            while rows := await results.store.results_since(job_id, last_result, 100):
                for row in rows:
                    event_id += 1
                    frame = sse("result", event_id, agent.result_json(row))
                    await write_or_drop(request, response, frame)
                last_result = rows[-1].id
            data = progress_event(job, counts)
            final = job.status in states.TERMINAL_JOB_STATUSES
            if final or data != sent:
                event_id += 1
                frame = sse("end" if final else "progress", event_id, data)
                await write_or_drop(request, response, frame)
                sent, sent_at = data, loop.time()
                written_at = sent_at
            if final:
                break
            woke = await _first(changed, closing, timeout=EVENT_CHECK_SECONDS)
            if closing.is_set() or _client_gone(request) or await _key_revoked(request):
                break
            if not woke:
                if loop.time() - written_at >= EVENT_KEEPALIVE_SECONDS:
                    await write_or_drop(request, response, b": keep-alive\n\n")
                    written_at = loop.time()
                continue
            await pace(sent_at + EVENT_MIN_INTERVAL_SECONDS - loop.time())
            changed = engine.progress_event()
            job, counts = await svc.snapshot(org, job_id)
        await response.write_eof()
    return response


# ----------------------------------------------------------------- contract (api.openapi)

_JOB_ERRORS: dict[int, list[str]] = {404: ["job_not_found"], 405: ["method_not_allowed"]}

openapi.register(
    "POST",
    "/batch/jobs/{batch_job_id}/pause",
    "Pause a job (body optional)",
    body=PauseBody,
    optional_body=True,
    ok=schemas.ControlAnswer,
    errors={400: ["validation_error", "invalid_json", "job_not_pausable"], **_JOB_ERRORS},
)
openapi.register(
    "POST",
    "/batch/jobs/{batch_job_id}/resume",
    "Resume a paused job",
    ok=schemas.ControlAnswer,
    errors={400: ["job_not_resumable"], 402: ["insufficient_credits"], **_JOB_ERRORS},
)
openapi.register(
    "POST",
    "/batch/jobs/{batch_job_id}/retry",
    "Re-queue contacts that ended in failure statuses (body optional)",
    body=RetryBody,
    optional_body=True,
    ok=schemas.RetryAnswer,
    errors={
        400: [
            "validation_error",
            "invalid_json",
            "job_not_retryable",
            "job_expired",
            "invalid_retry_status",
        ],
        **_JOB_ERRORS,
    },
)
openapi.register(
    "GET",
    "/batch/jobs/{batch_job_id}/export",
    "The job's contacts and outcomes as CSV",
    ok_content="text/csv",
    errors={**_JOB_ERRORS, 429: ["too_many_streams"]},
)
openapi.register(
    "GET",
    "/batch/jobs/{batch_job_id}/events",
    "Live progress as Server-Sent Events (each event's data: a ProgressEvent)",
    ok=schemas.ProgressFrame,
    ok_content="text/event-stream",
    errors={**_JOB_ERRORS, 429: ["too_many_streams"]},
)
