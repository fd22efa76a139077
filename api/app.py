"""The aiohttp application: `create_app(config)` wires store, provider, engine and routes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from api import (
    agent,
    batch,
    compliance,
    health,
    metrics,
    openapi,
    outbound_webhooks,
    ratelimit,
    schemas,
    webhooks,
)
from api import keys as appkeys
from api.auth import auth_middleware
from api.compat import setup as setup_compat
from api.controls import setup as setup_controls
from api.errors import Envelope, Handler, error_middleware
from dialer import dnc
from dialer.agent import AgentResults
from dialer.clock import Clock, SystemClock
from dialer.config import Config, check_telephony
from dialer.keys import KeyCache
from dialer.providers import Provider, make_provider
from dialer.providers.base import WebhookSink
from dialer.providers.simulated import SimulatedProvider
from dialer.scheduler import Engine
from dialer.service import JobService
from dialer.webhooks import WebhookSender
from storage.store import Store

log = structlog.get_logger("api")


@web.middleware
async def foreground_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Tell the engine a request is in flight, so that it lets the request go first."""
    engine = request.app.get(appkeys.ENGINE)
    if engine is None or request.path.endswith("/events"):  # streams stay open: not counted
        return await handler(request)
    await engine.foreground.let_engine_first()
    engine.foreground.enter()
    try:
        return await handler(request)
    finally:
        engine.foreground.leave()


openapi.register("GET", "/healthz", "Liveness and engine state", ok=schemas.Health, public=True)
openapi.register(
    "GET",
    openapi.ROUTE,
    "This document (OpenAPI 3.1)",
    ok=openapi.OpenApiDocument,
    public=True,
)


def create_app(
    config: Config,
    *,
    clock: Clock | None = None,
    provider: Provider | None = None,
    store: Store | None = None,
) -> web.Application:
    """Build the app. The store, provider and engine start and stop with it (cleanup_ctx)."""
    clock = clock or SystemClock()
    if provider is None:
        check_telephony(config)
    envelopes: list[tuple[str, Envelope]] = []
    public: tuple[str, ...] = ()
    webhook_path = config.telephony.livekit.webhook_path
    takes_webhooks = (
        isinstance(provider, WebhookSink)
        if provider is not None
        else config.telephony.provider == "livekit"
    )
    if takes_webhooks:
        public += (webhook_path,)  # authenticated by its signature, not an API key
    app = web.Application(
        client_max_size=int(config.server.max_body_mb * 1024 * 1024),
        middlewares=[foreground_middleware, error_middleware(envelopes), auth_middleware(public)],
    )
    app[appkeys.CONFIG] = config
    app[appkeys.CLOCK] = clock
    app[appkeys.KEY_CACHE] = KeyCache()
    app[appkeys.PARSE_SLOTS] = asyncio.Semaphore(batch.BIG_PARSES)
    ratelimit.setup(app, config.server.requests_per_second, config.server.burst)
    app.router.add_get("/healthz", health.healthz)
    openapi.setup(app)
    metrics.setup(app)
    app.router.add_routes(batch.routes)
    app.router.add_routes(compliance.routes)
    setup_compat(app, envelopes)
    setup_controls(app)
    app.router.add_routes(outbound_webhooks.routes)
    app.router.add_routes(agent.routes)
    if takes_webhooks:
        app.router.add_post(webhook_path, webhooks.livekit)
        openapi.register(
            "POST",
            webhook_path,
            "LiveKit webhook (signed by LiveKit, no API key)",
            ok=schemas.WebhookAnswer,
            public=True,
            errors={401: ["invalid_signature"], 404: ["not_found"]},
        )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        own_store = store is None
        the_store = store or await Store.open(
            config.storage.path, config.storage.busy_timeout_seconds
        )
        the_provider = provider or make_provider(config, clock)
        await the_provider.start()
        await dnc.respell_stored_numbers(the_store)  # (a chore of an upgrade, once)
        engine = Engine(config, the_store, the_provider, clock)
        app[appkeys.STORE] = the_store
        app[appkeys.ENGINE] = engine
        app[appkeys.SERVICE] = JobService(config, the_store, engine, clock)
        results = app[agent.RESULTS] = AgentResults(the_store, engine, clock)
        if isinstance(the_provider, SimulatedProvider):
            the_provider.agent = results  # its scripted agents report through the same door
        failed = app[health.ENGINE_FAILED] = asyncio.Event()
        task = app[health.ENGINE_TASK] = asyncio.create_task(engine.run(), name="engine")

        def engine_ended(task: asyncio.Task[None]) -> None:
            if task.cancelled() or engine.stopping:
                return
            error = task.exception()
            log.error("engine_crashed", exc_info=error)
            failed.set()

        task.add_done_callback(engine_ended)
        watcher = asyncio.create_task(
            health.watch_files(the_store, engine), name="database-watcher"
        )
        sender = app[appkeys.WEBHOOK_SENDER] = WebhookSender(
            the_store, clock, config.webhooks, changes=engine.progress_event
        )
        sending = asyncio.create_task(sender.run(), name="webhook-sender")
        try:
            yield
        finally:
            watcher.cancel()
            sender.stop()
            with contextlib.suppress(Exception):  # its loop logs and survives its errors
                await sending
            engine.stop()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            with contextlib.suppress(Exception):  # a crash was logged when it happened
                await task
            await the_provider.close()
            if own_store:
                await the_store.close()

    app.cleanup_ctx.append(lifecycle)
    return app
