"""Connection limits for the HTTP server.

- Header-read timeout: a connection that has not sent a complete request head within
  `[server] header_timeout_seconds` of connecting (or of its previous response) is closed.
- Body-read timeout: a connection whose handler waits for the request's body (see
  `reading_body`) longer than `[server] body_timeout_seconds` is closed.
- A cap on open connections, `[server] max_connections`: past it, connections waiting for
  their client give way: waiting for request headers (those that never sent a request first),
  then waiting for a body, oldest first, so that a real client still gets in; a connection
  whose request is being served is never shed.
- Accept errors (`Too many open files`...) are logged at most once a second, with a count,
  instead of one traceback each.

Wiring, with any aiohttp runner (`web.AppRunner`, the test server's runner):

    await runner.setup()
    limits = connections.guard(runner, config.server)
    ...
    await limits.stop()
    await runner.cleanup()

The guard reads three attributes of aiohttp's RequestHandler (`_request_count`,
`_request_in_progress`, `_messages`): a test holds them to the installed aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import resource
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from dialer.config import ServerConfig

log = structlog.get_logger("api")

# How often the guard looks for connections past their header timeout.
SWEEP_SECONDS = 1.0
# Accept errors caused by running out of a resource (descriptors, buffers, memory).
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(slots=True)
class _Conn:
    waiting_since: float | None  # since when it waits for request headers (None: busy)
    requests: int  # requests it had sent when last looked at
    body_since: float | None = None  # since when its handler waits for the request's body
    body_request: int = 0  # which request that is (its place in _body_waits)


# Connections whose handler is reading the request's body from the client, and a number for
# that request (so that a next request's wait starts afresh): see reading_body.
_body_waits: dict[RequestHandler, int] = {}
_body_reads = itertools.count(1)


@contextlib.contextmanager
def reading_body(request: web.BaseRequest) -> Iterator[None]:
    """Around a handler's reading of the request's body: meanwhile its connection waits for
    the client, like one waiting for a request head (a client that sends a head and then
    trickles its body, or stops, would otherwise hold a connection the guard never sheds).

    A read from a connection already closed raises ConnectionResetError, as for a client that
    hung up: aiohttp raises RuntimeError('Connection closed.') when the handler reads again
    after its connection was closed and before aiohttp noticed (shed by the guard in the same
    turn of the event loop as a piece of its body arrived), which was logged as a failure
    with a traceback, one per connection shed."""
    handler = request.protocol
    watched = isinstance(handler, RequestHandler)
    if watched:
        _body_waits[handler] = next(_body_reads)
    try:
        yield
    except RuntimeError:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("Connection closed while reading the body") from None
        raise
    finally:
        if watched:
            _body_waits.pop(handler, None)


class Throttled:
    """Counts an event and logs it at most once per `interval` seconds, with the count."""

    def __init__(self, event: str, now: Callable[[], float], interval: float = 1.0) -> None:
        self.event = event
        self.now = now
        self.interval = interval
        self.count = 0
        self._last: float | None = None
        self._fields: dict[str, Any] = {}

    def hit(self, **fields: Any) -> None:
        self.count += 1
        self._fields = fields
        self.flush()

    def flush(self) -> None:
        """Log what was counted, if the interval since the last line has passed."""
        now = self.now()
        if self.count and (self._last is None or now - self._last >= self.interval):
            log.warning(self.event, count=self.count, **self._fields)
            self.count = 0
            self._last = now


def _busy(handler: RequestHandler) -> bool:
    return bool(
        getattr(handler, "_request_in_progress", False) or getattr(handler, "_messages", ())
    )


def _requests(handler: RequestHandler) -> int:
    return int(getattr(handler, "_request_count", 0))


class ConnectionGuard:
    def __init__(
        self,
        server: web.Server,
        *,
        max_connections: int,
        header_timeout: float,
        now: Callable[[], float],
        body_timeout: float = 60.0,
    ) -> None:
        self.server = server
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.now = now
        self._conns: dict[RequestHandler, _Conn] = {}
        self._shed = Throttled("connections_shed", now)
        self._timed_out = Throttled("connections_header_timeout", now)
        self._body_timed_out = Throttled("connections_body_timeout", now)
        self._task: asyncio.Task[None] | None = None

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def install(self) -> None:
        """Track the server's connections from now on, and sweep them every second."""
        made, lost = self.server.connection_made, self.server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._conns[handler] = _Conn(self.now(), 0)
            if len(self._conns) > self.max_connections:
                self._make_room(handler)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self._conns.pop(handler, None)
            _body_waits.pop(handler, None)
            lost(handler, exc)

        # Instance attributes shadow the methods the protocol calls on its manager.
        setattr(self.server, "connection_made", connection_made)  # noqa: B010
        setattr(self.server, "connection_lost", connection_lost)  # noqa: B010
        self._task = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            self.sweep()

    def _refresh(self, handler: RequestHandler, conn: _Conn, now: float) -> None:
        """Bring a connection's state up to date: busy, or waiting since when."""
        requests = _requests(handler)
        if _busy(handler):
            conn.waiting_since = None
        elif conn.waiting_since is None or requests != conn.requests:
            conn.waiting_since = now  # it finished a request since: its next head starts now
        conn.requests = requests
        body = _body_waits.get(handler)
        if body is None:
            conn.body_since = None
        elif conn.body_since is None or body != conn.body_request:
            conn.body_since, conn.body_request = now, body

    def sweep(self) -> None:
        """Close the connections that have waited longer than the header timeout."""
        now = self.now()
        for handler, conn in list(self._conns.items()):
            self._refresh(handler, conn, now)
            if conn.waiting_since is not None and now - conn.waiting_since >= self.header_timeout:
                self._timed_out.hit(timeout_seconds=self.header_timeout)
                self._close(handler)
            elif conn.body_since is not None and now - conn.body_since >= self.body_timeout:
                self._body_timed_out.hit(timeout_seconds=self.body_timeout)
                self._close(handler)
        self._timed_out.flush()
        self._body_timed_out.flush()
        self._shed.flush()

    def _make_room(self, newest: RequestHandler) -> None:
        """Over the cap: shed connections waiting for their client: for a request head,
        never-used ones first, then for a body, oldest first (the new one last of all); with
        none waiting, the new one goes. Connections are kept in accept order, so the usual
        case (the oldest one is an idle one) costs one look."""
        excess = len(self._conns) - self.max_connections
        victims: list[RequestHandler] = []
        for never_used in (True, False):
            for handler in self._conns:
                if len(victims) >= excess:
                    break
                if handler is newest or handler in victims or _busy(handler):
                    continue
                if (_requests(handler) == 0) == never_used:
                    victims.append(handler)
        for handler in self._conns:
            if len(victims) >= excess:
                break
            if handler is not newest and handler not in victims and handler in _body_waits:
                victims.append(handler)
        for handler in victims or [newest]:
            self._shed.hit(max_connections=self.max_connections)
            # This runs within accepting it, or others accepted with it, before aiohttp's task
            # serving it has started: a connection lost before that task's first step makes
            # it fail `assert manager is not None` (with handler_cancellation off, as `serve`
            # runs), a traceback in the log per connection shed.
            self._close(handler, once_started=True)

    def _close(self, handler: RequestHandler, once_started: bool = False) -> None:
        """No longer counted at once; closed now, or once_started: after the callbacks
        already due (a zero-delay timer runs after them), among them that task's first step."""
        self._conns.pop(handler, None)
        if once_started:
            asyncio.get_running_loop().call_later(0, handler.force_close)
        else:
            handler.force_close()


def _malformed_request_envelope() -> None:
    """A request HTTP cannot parse (a header too long, a control character, a bad method)
    answers in the API's envelope, `400 {"success": false, "error": ..., "code":
    "malformed_request"}`, instead of aiohttp's plain text that quotes the offending bytes.
    aiohttp has no hook for these (they never reach the app or its middlewares): its
    RequestHandler.handle_error is wrapped, once, for client errors only; its logging is kept
    (dialer.logs counts such records without their text)."""
    original = RequestHandler.handle_error
    if getattr(original, "_envelope", False):
        return

    def handle_error(
        self: RequestHandler,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = original(self, request, status, exc, message)
        if not 400 <= status < 500:
            return response
        kind = type(exc).__name__ if exc is not None else "bad request"
        body = {
            "success": False,
            "error": f"Malformed HTTP request ({kind})",
            "code": "malformed_request",
        }
        answer = web.json_response(body, status=status)
        answer.force_close()
        return answer

    handle_error._envelope = True  # type: ignore[attr-defined]
    setattr(RequestHandler, "handle_error", handle_error)  # noqa: B010


_malformed_request_envelope()


def guard(
    runner: web.BaseRunner, settings: ServerConfig, now: Callable[[], float] | None = None
) -> ConnectionGuard:
    """Install the connection limits on a set-up runner's server (call after `setup()`), and
    throttle the event loop's accept-error logging. `await guard.stop()` ends its sweeps
    (asyncio.run cancels them at exit otherwise)."""
    server = runner.server
    if server is None:
        raise RuntimeError("guard() needs a runner that has been set up")
    loop = asyncio.get_running_loop()
    clock = now or loop.time
    raise_descriptor_limit(settings.max_connections)
    throttle_accept_errors(loop, clock)
    connection_guard = ConnectionGuard(
        server,
        max_connections=settings.max_connections,
        header_timeout=settings.header_timeout_seconds,
        now=clock,
        body_timeout=settings.body_timeout_seconds,
    )
    connection_guard.install()
    return connection_guard


def throttle_accept_errors(loop: asyncio.AbstractEventLoop, now: Callable[[], float]) -> None:
    """Accept errors for want of a resource: one log line a second with a count, instead of a
    traceback each; any other loop error goes to the handler that was there before."""
    previous = loop.get_exception_handler()
    failures = Throttled("accept_failed", now)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
            failures.hit(error=exc.strerror or str(exc))
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def raise_descriptor_limit(max_connections: int) -> None:
    """Raise the soft limit on open files towards the hard one, so that max_connections
    sockets plus the database's files fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
