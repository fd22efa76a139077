"""Outbound webhook routes: an organization's endpoints, and its deliveries with replay.

`POST/GET /webhooks/endpoints`, `DELETE /webhooks/endpoints/{id}`, `GET /webhooks/deliveries`,
`POST /webhooks/deliveries/{id}/retry`. The sending itself is dialer.webhooks.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from api import keys as appkeys
from api import openapi
from api.auth import organization
from api.batch import SMALL_JSON_BYTES, bounded_int, query_int, read_json, validation_error
from api.errors import ApiError
from dialer import webhooks
from dialer.service import iso
from storage.rows import WebhookDeliveryRow, WebhookEndpointRow

routes = web.RouteTableDef()

MAX_ENDPOINTS_PER_ORGANIZATION = 20
DELIVERY_PREFIX = "dlv_"


class EndpointBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    url: StrictStr = Field(min_length=1, max_length=2000)
    events: list[StrictStr] | None = Field(default=None, min_length=1, max_length=20)
    description: StrictStr | None = Field(default=None, max_length=500)


def endpoint_json(endpoint: WebhookEndpointRow) -> dict[str, Any]:
    """An endpoint as the routes show it (never with its secret)."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events or webhooks.EVENT_TYPES),
        "description": endpoint.description,
        "createdAt": iso(endpoint.created_at),
    }


def delivery_json(d: WebhookDeliveryRow) -> dict[str, Any]:
    return {
        "id": f"{DELIVERY_PREFIX}{d.id}",
        "endpointId": d.endpoint_id,
        "eventType": d.type,
        "webhookId": d.webhook_id,
        "sequence": d.sequence,
        "status": d.status,
        "attempts": d.attempts,
        "lastHttpStatus": d.last_status,
        "lastError": d.last_error,
        "lastAttemptAt": iso(d.last_attempt_at),
        "nextAttemptAt": iso(d.next_attempt_at),
        "deliveredAt": iso(d.delivered_at),
        "createdAt": iso(d.created_at),
    }


@routes.post("/webhooks/endpoints")
async def create_endpoint(request: web.Request) -> web.Response:
    org = organization(request)
    raw = await read_json(request, SMALL_JSON_BYTES)
    if not isinstance(raw, dict):
        raise ApiError(400, "validation_error", "Request body must be a JSON object")
    try:
        body = EndpointBody.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from None
    allow_private = request.app[appkeys.CONFIG].webhooks.allow_private_urls
    try:
        url = webhooks.check_url(body.url, allow_private)
    except webhooks.InvalidWebhookUrl as exc:
        raise ApiError(400, "invalid_webhook_url", f"Invalid webhook URL: {exc}") from None
    events: tuple[str, ...] | None = None
    if body.events is not None:
        unknown = [e for e in body.events if e not in webhooks.EVENT_TYPES]
        if unknown:
            raise ApiError(
                400,
                "invalid_event_type",
                f"Unknown event type {unknown[0][:60]!r}; types are: "
                + ", ".join(webhooks.EVENT_TYPES),
            )
        events = tuple(dict.fromkeys(body.events))
    endpoint = WebhookEndpointRow(
        id=webhooks.new_endpoint_id(),
        organization_id=org,
        url=url,
        events=events,
        description=body.description,
        secret=webhooks.new_secret(),
        created_at=request.app[appkeys.CLOCK].now(),
    )
    store = request.app[appkeys.STORE]
    if not await store.insert_webhook_endpoint(endpoint, MAX_ENDPOINTS_PER_ORGANIZATION):
        raise ApiError(
            400,
            "too_many_webhook_endpoints",
            f"An organization has at most {MAX_ENDPOINTS_PER_ORGANIZATION} webhook endpoints",
        )
    request.app[appkeys.WEBHOOK_SENDER].endpoints_changed()
    return web.json_response({**endpoint_json(endpoint), "secret": endpoint.secret}, status=201)


@routes.get("/webhooks/endpoints")
async def list_endpoints(request: web.Request) -> web.Response:
    endpoints = await request.app[appkeys.STORE].list_webhook_endpoints(organization(request))
    return web.json_response({"endpoints": [endpoint_json(e) for e in endpoints]})


@routes.delete("/webhooks/endpoints/{endpoint_id}")
async def delete_endpoint(request: web.Request) -> web.Response:
    endpoint_id = request.match_info["endpoint_id"]
    store = request.app[appkeys.STORE]
    if not await store.delete_webhook_endpoint(organization(request), endpoint_id):
        raise ApiError(404, "webhook_endpoint_not_found", "Webhook endpoint not found")
    request.app[appkeys.WEBHOOK_SENDER].endpoints_changed()
    return web.json_response({"id": endpoint_id, "deleted": True})


@routes.get("/webhooks/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    status = request.query.get("status") or None
    if status is not None and status not in webhooks.DELIVERY_STATUSES:
        raise ApiError(
            400,
            "invalid_status",
            "status must be one of: " + ", ".join(webhooks.DELIVERY_STATUSES),
        )
    endpoint_id = request.query.get("endpointId") or None
    page = query_int(request, "page", 1, 1, None, "invalid_page")
    page_size = query_int(request, "pageSize", 20, 1, 100, "invalid_page_size")
    rows, total = await request.app[appkeys.STORE].list_webhook_deliveries(
        organization(request), endpoint_id, status, page_size, (page - 1) * page_size
    )
    return web.json_response(
        {
            "total": total,
            "page": page,
            "pageSize": page_size,
            "hasMore": page * page_size < total,
            "deliveries": [delivery_json(d) for d in rows],
        }
    )


@routes.post("/webhooks/deliveries/{delivery_id}/retry")
async def retry_delivery(request: web.Request) -> web.Response:
    org = organization(request)
    raw_id = request.match_info["delivery_id"]
    number = raw_id.removeprefix(DELIVERY_PREFIX)
    delivery_id = bounded_int(number, 1, 2**62) if raw_id.startswith(DELIVERY_PREFIX) else None
    store = request.app[appkeys.STORE]
    found = None if delivery_id is None else await store.get_webhook_delivery(org, delivery_id)
    if delivery_id is None or found is None:
        raise ApiError(404, "webhook_delivery_not_found", "Webhook delivery not found")
    now = request.app[appkeys.CLOCK].now()
    if not await store.replay_webhook_delivery(org, delivery_id, now):
        raise ApiError(
            409,
            "delivery_not_failed",
            f"Only a failed delivery can be retried; this one is {found.status}",
        )
    request.app[appkeys.WEBHOOK_SENDER].wake()
    replayed = await store.get_webhook_delivery(org, delivery_id)
    assert replayed is not None
    return web.json_response(delivery_json(replayed), status=202)


# ----------------------------------------------------------------- contract (api.openapi)


class Endpoint(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    url: str
    events: list[str]
    description: str | None
    createdAt: str


class CreatedEndpoint(Endpoint):
    secret: str = Field(description="whsec_ + base64 of 32 random bytes; shown only here")


class EndpointList(BaseModel):
    endpoints: list[Endpoint]


class DeletedEndpoint(BaseModel):
    id: str
    deleted: bool


class Delivery(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    endpointId: str
    eventType: str
    webhookId: str
    status: str
    attempts: int


class DeliveryPage(BaseModel):
    total: int
    page: int
    pageSize: int
    hasMore: bool
    deliveries: list[Delivery]


class DeliveriesQuery(BaseModel):
    endpointId: str | None = None
    status: Literal["pending", "delivered", "failed"] | None = None
    page: int = Field(default=1, ge=1)
    pageSize: int = Field(default=20, ge=1, le=100)


openapi.register(
    "POST",
    "/webhooks/endpoints",
    "Register a webhook endpoint (its secret is shown only in this answer)",
    body=EndpointBody,
    ok=CreatedEndpoint,
    status=201,
    errors={
        400: [
            "validation_error",
            "invalid_json",
            "invalid_webhook_url",
            "invalid_event_type",
            "too_many_webhook_endpoints",
        ]
    },
)
openapi.register("GET", "/webhooks/endpoints", "The organization's endpoints", ok=EndpointList)
openapi.register(
    "DELETE",
    "/webhooks/endpoints/{endpoint_id}",
    "Remove an endpoint",
    ok=DeletedEndpoint,
    errors={404: ["webhook_endpoint_not_found"]},
)
openapi.register(
    "GET",
    "/webhooks/deliveries",
    "Deliveries, newest first",
    query=DeliveriesQuery,
    ok=DeliveryPage,
    errors={400: ["invalid_status", "invalid_page", "invalid_page_size"]},
)
openapi.register(
    "POST",
    "/webhooks/deliveries/{delivery_id}/retry",
    "Send a failed delivery again now",
    ok=Delivery,
    status=202,
    errors={404: ["webhook_delivery_not_found"], 409: ["delivery_not_failed"]},
)
