"""API-key authentication: `x-api-key: KEY`, `xi-api-key: KEY` (the header the ElevenLabs SDK
sends) or `Authorization: Bearer KEY`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from api import keys as appkeys
from api import ratelimit
from api.errors import ApiError, Handler

PUBLIC_PREFIXES = ("/healthz", "/openapi.json", "/metrics")  # /metrics: its own optional token
MAX_KEY_CHARS = 256


def presented_key(request: web.Request) -> str | None:
    for header in ("x-api-key", "xi-api-key"):
        key = request.headers.get(header)
        if key:
            return key.strip()
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def is_result_path(path: str) -> bool:
    """`/calls/{roomName}/result`: an agent's callback token or an API key (api.agent)."""
    return path.startswith("/calls/") and path.endswith("/result") and path.count("/") == 3


def auth_middleware(public_prefixes: tuple[str, ...]) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(PUBLIC_PREFIXES + public_prefixes):
            return await handler(request)
        if is_result_path(request.path):
            return await handler(request)  # a callback token or an API key: api.agent checks
        key = presented_key(request)
        if key is None:
            raise ApiError(
                401,
                "unauthorized",
                "Missing API key: send 'x-api-key: KEY', 'xi-api-key: KEY' or "
                "'Authorization: Bearer KEY'",
            )
        # Keys are short ASCII; anything else (non-UTF-8 header bytes arrive as surrogates)
        # cannot be one, and is not hashed.
        well_formed = key.isascii() and len(key) <= MAX_KEY_CHARS
        row = (
            await request.app[appkeys.KEY_CACHE].authenticate(request.app[appkeys.STORE], key)
            if well_formed
            else None
        )
        if row is None:
            raise ApiError(401, "unauthorized", "Invalid or revoked API key")
        request[appkeys.ORG] = row.organization_id
        ratelimit.check(request, row.id, request.app[appkeys.CLOCK].now())
        return await handler(request)

    return middleware


def organization(request: web.Request) -> str:
    org: str = request[appkeys.ORG]
    return org
