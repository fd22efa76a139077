"""`GET /healthz`: whether the service does its job, told from facts the engine and the store
already keep (the engine loop runs, the last write succeeded, the files are still the
database, the provider answers), and the task that notices the database replaced under it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from api import keys as appkeys
from dialer.scheduler import Engine
from dialer.service import iso
from storage.store import Store

log = structlog.get_logger("api.health")

# How often the database files are checked (the issue allows 10 s to notice).
FILE_CHECK_SECONDS = 2.0

ENGINE_TASK = web.AppKey("engine_task", asyncio.Task[None])
# Set when the engine loop ended by itself (a bug): `dialer serve` then exits non-zero.
ENGINE_FAILED = web.AppKey("engine_failed", asyncio.Event)


def checks(app: web.Application) -> dict[str, str]:
    """Each check's state: "ok", or why not."""
    engine = app.get(appkeys.ENGINE)
    store = app.get(appkeys.STORE)
    task = app.get(ENGINE_TASK)
    if engine is None or store is None:
        return {"engine": "starting", "storage": "starting", "provider": "starting"}
    return {
        "engine": _engine_check(engine, task),
        "storage": _storage_check(engine, store),
        "provider": _provider_check(engine),
    }


def _engine_check(engine: Engine, task: asyncio.Task[None] | None) -> str:
    if task is not None and task.done():
        error = None if task.cancelled() else task.exception()
        return f"stopped: {type(error).__name__}: {error}" if error else "stopped"
    return "ok" if engine.running else "not running"


def _storage_check(engine: Engine, store: Store) -> str:
    if store.lost is not None:
        return f"database lost: {store.lost}"
    if engine.storage_outage is not None:
        return (
            f"unavailable since {iso(engine.storage_outage.since)}: {engine.storage_outage.error}"
        )
    if store.last_write_error is not None:
        return f"last write failed: {store.last_write_error}"
    missing = engine.held_room_missing
    if missing is not None:
        return f"no call is started: {missing}"
    return "ok"


def _provider_check(engine: Engine) -> str:
    outage = engine.provider_outage
    if outage is not None:
        return f"unreachable since {iso(outage.since)}: {outage.error}"
    limit = engine.call_limit()  # (lifts a limit that was kept long enough)
    cap = engine.provider_cap
    if cap is not None:
        return (
            f"at a limit since {iso(cap.since)}: at most {limit} calls at once "
            f"(last refusal: {cap.error})"
        )
    return "ok"


async def healthz(request: web.Request) -> web.Response:
    found = checks(request.app)
    # An unreachable provider shows, but the service itself is fine: still 200.
    ok = found["engine"] == "ok" and found["storage"] == "ok"
    engine = request.app.get(appkeys.ENGINE)
    body: dict[str, Any] = {
        "ok": ok,
        "checks": found,
        "engineRunning": bool(engine and engine.running),
        "liveCalls": engine.live_calls() if engine else 0,
    }
    return web.json_response(body, status=200 if ok else 503)


async def watch_files(
    store: Store,
    engine: Engine,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Notice the database file or its -wal deleted or replaced under the running service: the
    store then refuses every write (nothing goes into a file that is no longer the database),
    so the engine stops dialing and health turns 503. Paced by wall-clock time (files, not job
    time: not the injectable clock)."""
    while store.lost is None:
        await sleep(FILE_CHECK_SECONDS)
        problem = await store.check_files()
        if problem is not None:
            log.error(
                "database_lost",
                problem=problem,
                action=(
                    "no call is started and nothing is written any more; stop the service, "
                    f"remove {store.path}-wal and {store.path}-shm if they are there, move "
                    f"{store.saved_copy} to {store.path} and start it again: contacts "
                    "left dialing are reconciled, never re-dialed blindly (a backup restored "
                    "instead lacks what happened since it was made: contacts dialed since "
                    "would be dialed again)"
                    if store.saved_copy is not None
                    else "no call is started and nothing is written any more; stop the "
                    "service, put the database back (or restore it from a backup) and start it "
                    "again: contacts left dialing are reconciled, never re-dialed blindly"
                ),
                held_outcomes=engine.held_outcomes,
            )
            engine.notify()
