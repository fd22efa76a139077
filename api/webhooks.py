"""Telephony webhooks: `POST /webhooks/livekit` (the path is `[telephony.livekit] webhook_path`).

Served without an API key: the request is authenticated by its signature instead (a JWT signed
with the LiveKit API secret whose `sha256` claim is the hash of the exact body). A request that
does not verify is answered 401 and changes nothing.
"""

from __future__ import annotations

from aiohttp import web

from api import connections
from api import keys as appkeys
from api.errors import ApiError
from dialer.providers.base import WebhookRejected, WebhookSink


async def livekit(request: web.Request) -> web.Response:
    provider = request.app[appkeys.ENGINE].provider
    if not isinstance(provider, WebhookSink):
        raise web.HTTPNotFound()
    authorization = request.headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token:
        authorization = token  # LiveKit sends the raw JWT; tolerate a Bearer prefix
    try:
        with connections.reading_body(request):
            body = (await request.read()).decode("utf-8")
        result = provider.receive_webhook(body, authorization.strip())
    except (UnicodeDecodeError, WebhookRejected):
        raise ApiError(
            401, "invalid_signature", "Webhook signature or body hash does not verify"
        ) from None
    return web.json_response({"ok": True, "result": result})
