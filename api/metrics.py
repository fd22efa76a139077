"""`GET /metrics`: the Prometheus text exposition of a per-app registry (so that several apps in
one process, as in the tests, never share figures). No API key; with `[metrics] token` set,
only requests with `Authorization: Bearer <token>`."""

from __future__ import annotations

import hmac

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from api import keys as appkeys
from api import openapi
from api.errors import ApiError
from dialer.metrics import DialerCollector, ReadyContacts
from dialer.scheduler import Engine
from storage.store import Store

REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)
READY = web.AppKey("metrics_ready", ReadyContacts)


def setup(app: web.Application) -> None:
    """Create the app's registry with the dialer's collector, and add the route."""
    registry = CollectorRegistry()
    ready = ReadyContacts()

    def parts() -> tuple[Engine, Store] | None:
        engine, store = app.get(appkeys.ENGINE), app.get(appkeys.STORE)
        return None if engine is None or store is None else (engine, store)

    registry.register(
        DialerCollector(
            app[appkeys.CONFIG], parts, ready, sender=lambda: app.get(appkeys.WEBHOOK_SENDER)
        )
    )
    app[REGISTRY] = registry
    app[READY] = ready
    app.router.add_get("/metrics", metrics)


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


async def metrics(request: web.Request) -> web.Response:
    token = request.app[appkeys.CONFIG].metrics.token
    if token is not None and not _authorized(request, token):
        raise ApiError(
            401,
            "unauthorized",
            "Missing or wrong metrics token: send 'Authorization: Bearer <[metrics] token>'",
        )
    store = request.app.get(appkeys.STORE)
    if store is not None:
        await request.app[READY].refresh(store, request.app[appkeys.CLOCK].now())
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encode(request.app[REGISTRY]), headers={"Content-Type": content_type})


openapi.register(
    "GET",
    "/metrics",
    "Prometheus metrics (text exposition); with [metrics] token set, only with that bearer token",
    ok_content="text/plain",
    public=True,
    errors={401: ["unauthorized"]},
)
