"""Connection limits: a cap that sheds waiting connections first, header timeout, accept errors."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import resource
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.streams
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_protocol import RequestHandler
from structlog.testing import capture_logs

from api import connections, errors
from dialer.clock import FakeClock
from dialer.config import ServerConfig
from tests.conftest import Running, wait_until

PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # never finished
FULL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def opened() -> AsyncIterator[list[Conn]]:
    """Raw client connections, closed after the test."""
    conns: list[Conn] = []
    yield conns
    for _, writer in conns:
        writer.close()
    for _, writer in conns:
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def connect(running: Running, conns: list[Conn], head: bytes = PARTIAL_HEAD) -> Conn:
    server = running.client.server
    assert server.port is not None
    conn = await asyncio.open_connection("127.0.0.1", server.port)
    conn[1].write(head)
    await conn[1].drain()
    conns.append(conn)
    return conn


async def is_closed_by_server(conn: Conn) -> bool:
    """The server closed it: reading gives EOF (or a reset) at once."""
    try:
        async with asyncio.timeout(2):
            return await conn[0].read(1) == b""
    except ConnectionResetError:
        return True


async def settle(running: Running) -> None:
    """Let the server accept what was connected (a round trip on a fresh connection)."""
    resp = await running.client.get("/healthz")
    assert resp.status == 200


def guard(running: Running, now: FakeClock | None = None, **settings: float) -> Any:
    runner = running.client.server.runner
    assert runner is not None
    return connections.guard(
        runner, ServerConfig.model_validate(settings), now=now.now if now else None
    )


async def test_two_thousand_idle_connections_leave_room_for_healthz(
    running: Running, opened: list[Conn]
) -> None:
    """2,000 connections that never finish their headers: /healthz answers within 1 s and the
    server keeps no more than max_connections (1,000) of them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4000:
        if hard != resource.RLIM_INFINITY and hard < 4000:
            pytest.skip("needs 4,000 open files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (4000, hard))
    limits = guard(running)
    try:
        for _ in range(2000):
            await connect(running, opened)
        started = time.perf_counter()
        resp = await running.client.get("/healthz")
        elapsed = time.perf_counter() - started
        assert resp.status == 200
        assert elapsed < 1.0
        assert limits.open_connections <= 1000
        assert len(running.client.server.runner.server.connections) <= 1000 + 5  # type: ignore[union-attr]
    finally:
        await limits.stop()


async def test_waiting_connections_give_way_oldest_first(
    running: Running, opened: list[Conn]
) -> None:
    """At the cap, never-used connections are shed oldest first; a keep-alive client stays."""
    limits = guard(running, max_connections=5)
    try:
        kept = await connect(running, opened, FULL_HEAD)
        assert b"200 OK" in await kept[0].readuntil(b"\r\n\r\n")
        fresh = [await connect(running, opened) for _ in range(3)]
        await settle(running)
        newer = [await connect(running, opened) for _ in range(3)]
        await settle(running)
        assert [await is_closed_by_server(c) for c in fresh] == [True, True, True]
        kept[1].write(FULL_HEAD)
        assert b"200 OK" in await kept[0].readuntil(b"\r\n\r\n")
        assert limits.open_connections <= 5
        assert not any(c[0].at_eof() for c in newer)
    finally:
        await limits.stop()


async def test_header_timeout_closes_slow_heads(running: Running, opened: list[Conn]) -> None:
    """A connection without a full request head after 15 s is closed; a younger one is not."""
    clock = FakeClock()
    limits = guard(running, now=clock)
    try:
        slow = await connect(running, opened)
        await settle(running)
        await clock.advance(10)
        young = await connect(running, opened)
        await settle(running)
        await clock.advance(5.5)
        limits.sweep()
        assert await is_closed_by_server(slow)
        assert not young[0].at_eof()
        young[1].write(b"\r\n")  # finishes its head: it is served
        assert b"200 OK" in await young[0].readuntil(b"\r\n\r\n")
    finally:
        await limits.stop()


def stalled_body(running: Running, path: str = "/dnc") -> bytes:
    """A request head with a 100-byte body, and only part of it."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f'x-api-key: {running.key}\r\nContent-Length: 100\r\n\r\n{{"numbers": ['
    ).encode()


async def body_waits(count: int) -> bool:
    return len(connections._body_waits) == count


async def test_a_body_that_stops_arriving_is_closed_after_the_body_timeout(
    running: Running, opened: list[Conn]
) -> None:
    """A client that sends a head and part of its body, then nothing: closed once the body
    has taken body_timeout_seconds (60), counted in one line; nothing was written."""
    clock = FakeClock()
    limits = guard(running, now=clock)
    try:
        with capture_logs() as logs:
            stalled = await connect(running, opened, stalled_body(running))
            await wait_until(lambda: body_waits(1))
            limits.sweep()  # (the guard sees it waiting from now)
            await clock.advance(59)
            limits.sweep()
            assert not stalled[0].at_eof()
            await clock.advance(1.5)
            limits.sweep()
            assert await is_closed_by_server(stalled)
            await wait_until(lambda: body_waits(0))
        assert [e["count"] for e in logs if e["event"] == "connections_body_timeout"] == [1]
        assert not [e for e in logs if e["event"] == "request_failed"]
        resp = await running.client.get("/dnc", headers=running.headers())
        assert (await resp.json())["total"] == 0
    finally:
        await limits.stop()


async def test_a_client_gone_mid_body_is_counted_not_an_error() -> None:
    """A client that hangs up halfway through its body (the served process does not cancel
    the handler: its read raises ConnectionResetError): one warning line with a count, no
    error with a traceback per request, which a flood of them would write."""
    middleware = errors.error_middleware([])

    async def reads_a_lost_body(request: web.Request) -> web.Response:
        raise ConnectionResetError("Connection lost")

    with capture_logs() as logs:
        for _ in range(3):
            request = make_mocked_request("POST", "/dnc")
            answer = await middleware(request, reads_a_lost_body)
            assert answer.status == 400
    assert [e["count"] for e in logs if e["event"] == "requests_abandoned"] == [1]
    assert not [e for e in logs if e["event"] == "request_failed"]


async def test_a_connection_shed_as_its_body_trickles_in_is_counted_not_an_error(
    running: Running, opened: list[Conn], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection shed (past the body timeout here; at the cap alike) in the same turn of the
    event loop as a byte of its body arrives: its handler, woken by the byte, reads again from
    a connection already closed, and aiohttp raises RuntimeError('Connection closed.'), not
    the ConnectionResetError of a client that hung up. Counted with the requests abandoned,
    one line a second; it was logged as request_failed with a traceback, one per connection
    (105 from an outside probe trickling bodies at the cap)."""
    monkeypatch.setattr(connections, "SWEEP_SECONDS", 3600.0)  # swept here only
    clock = FakeClock()
    limits = guard(running, now=clock)
    head = stalled_body(running).replace(b"Content-Length: 100", b"Content-Length: 1000000")
    sweep_on_next_byte: list[bool] = []
    feed_data = aiohttp.streams.StreamReader.feed_data

    def feed_then_sweep(self: aiohttp.streams.StreamReader, data: bytes, *args: Any) -> Any:
        fed = feed_data(self, data, *args)
        if data and sweep_on_next_byte:
            sweep_on_next_byte.clear()
            limits.sweep()  # (a sweep due in the same turn as the byte)
        return fed

    monkeypatch.setattr(aiohttp.streams.StreamReader, "feed_data", feed_then_sweep)
    try:
        with capture_logs() as logs:
            trickling = await connect(running, opened, head)
            await wait_until(lambda: body_waits(1))
            limits.sweep()  # (seen waiting for its body from now)
            await clock.advance(61)
            sweep_on_next_byte.append(True)
            trickling[1].write(b" ")
            assert await is_closed_by_server(trickling)
            await wait_until(lambda: body_waits(0))
            await settle(running)
        assert not sweep_on_next_byte  # (the sweep ran as the byte arrived)
        assert [e["count"] for e in logs if e["event"] == "connections_body_timeout"] == [1]
        assert not [e for e in logs if e["event"] == "request_failed"], logs
        assert [e["count"] for e in logs if e["event"] == "requests_abandoned"] == [1]
    finally:
        await limits.stop()


async def test_connections_waiting_for_a_body_give_way_at_the_cap(
    running: Running, opened: list[Conn]
) -> None:
    """At the cap, with every connection waiting for its body, the oldest waiting one is shed
    so that a new client is served (a request being served is never shed)."""
    limits = guard(running, max_connections=4)
    try:
        stalled = [await connect(running, opened, stalled_body(running)) for _ in range(4)]
        await wait_until(lambda: body_waits(4))
        fresh = await connect(running, opened, FULL_HEAD)
        assert b"200 OK" in await fresh[0].readuntil(b"\r\n\r\n")
        assert await is_closed_by_server(stalled[0])
        assert limits.open_connections <= 4
    finally:
        await limits.stop()


async def test_accept_errors_are_logged_once_a_second_with_a_count() -> None:
    """A thousand EMFILE accept errors in one second make one log line; the next says 1000."""
    loop = asyncio.get_running_loop()
    clock = FakeClock()
    previous = loop.get_exception_handler()
    connections.throttle_accept_errors(loop, clock.now)
    error = OSError(errno.EMFILE, "Too many open files")
    try:
        with capture_logs() as logs:
            for _ in range(1001):
                loop.call_exception_handler({"message": "accept", "exception": error})
            await clock.advance(1)
            loop.call_exception_handler({"message": "accept", "exception": error})
    finally:
        loop.set_exception_handler(previous)
    lines = [entry for entry in logs if entry["event"] == "accept_failed"]
    assert [entry["count"] for entry in lines] == [1, 1001]
    assert lines[0]["error"] == "Too many open files"


def test_request_handler_has_the_attributes_the_guard_reads() -> None:
    """The installed aiohttp still has the RequestHandler state the guard looks at."""
    for name in ("_request_count", "_request_in_progress", "_messages"):
        assert name in RequestHandler.__slots__


@pytest.mark.parametrize(
    "head",
    [
        b"GET /batch/jobs HTTP/1.1\r\nHost: x\r\nx-api-key: dk_secret\x01\r\n\r\n",
        b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\nHost: x\n\n",
    ],
)
async def test_a_request_http_cannot_parse_answers_in_the_envelope(
    running: Running, opened: list[Conn], head: bytes
) -> None:
    """A control character in a header, a request line over 8 KB, bare LF line ends: 400 in
    the API's JSON envelope with a code, never quoting what was sent."""
    conn = await connect(running, opened, head)
    async with asyncio.timeout(5):
        answer = await conn[0].read()
    status_line, _, rest = answer.partition(b"\r\n")
    assert b" 400 " in status_line, answer[:200]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert (body["success"], body["code"]) == (False, "malformed_request")
    assert b"dk_secret" not in answer and b"aaaa" not in answer


async def test_a_new_connection_shed_at_the_cap_is_closed_cleanly(
    running: Running, opened: list[Conn]
) -> None:
    """At the cap with every connection serving a request (here: live-progress streams), new
    ones are closed, one at a time or many accepted together, and no task is left failing:
    closed before aiohttp's task serving them had started, that task failed `assert manager is
    not None` (a traceback in the log per connection shed, seen by an outside probe; the test
    server runs with handler_cancellation off, as `serve` does, see tests.conftest)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: seen.append(context))
    limits = guard(running, max_connections=2)
    streams = []
    try:
        job_id = (
            await running.create_json(
                [{"phone_number": "+12025550101"}], scheduledStartTime="2026-06-01T09:00:00Z"
            )
        )["batchJobId"]
        for _ in range(2):
            stream = await running.client.get(
                f"/batch/jobs/{job_id}/events", headers=running.headers()
            )
            assert stream.status == 200
            streams.append(stream)
        for _ in range(5):  # one at a time, and many accepted together
            assert await is_closed_by_server(await connect(running, opened))
        many = await asyncio.gather(*(connect(running, opened) for _ in range(50)))
        assert all(await asyncio.gather(*(is_closed_by_server(c) for c in many)))
        gc.collect()
        await asyncio.sleep(0)  # (a turn: what failed has reported)
        gc.collect()
        assert [c.get("message") for c in seen] == []
    finally:
        for stream in streams:
            stream.close()
        await limits.stop()
        loop.set_exception_handler(previous)
