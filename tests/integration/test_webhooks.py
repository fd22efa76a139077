"""Outbound webhooks through the HTTP API, against a receiver on 127.0.0.1 that verifies every
request with the `standardwebhooks` library."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook
from structlog.testing import capture_logs

from api import keys as appkeys
from api import outbound_webhooks
from dialer import webhooks
from storage import db as dbmod
from storage.connection import StorageUnavailable
from tests.conftest import OTHER_ORG, Running, StartApp, make_config, wait_until
from tests.integration.test_metrics import scrape, value

RESULTS = webhooks.SEND_RESULTS

FUTURE = "2030-01-01T00:00:00Z"


class Receiver:
    """An endpoint on 127.0.0.1: answers `status(n)` to its n-th request (1-based), verifies
    each request's signature and keeps the verified bodies."""

    def __init__(self) -> None:
        self.secret = ""
        self.requests: list[tuple[str, dict[str, Any]]] = []  # (webhook-id, verified body)
        self.answer: Callable[[int], Awaitable[int]] = self._ok
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    @staticmethod
    async def _ok(n: int) -> int:
        return 200

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.text()
        body = Webhook(self.secret).verify(raw, dict(request.headers))
        self.requests.append((request.headers["webhook-id"], body))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            status = await self.answer(len(self.requests))
        finally:
            self.in_flight -= 1
        return web.Response(status=status)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook"))

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies of the requests answered 2xx, each webhook-id once."""
        seen: dict[str, dict[str, Any]] = {}
        for webhook_id, body in self.requests:
            seen.setdefault(webhook_id, body)
        return sorted(seen.values(), key=lambda b: b["sequence"])


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A receiver served on 127.0.0.1."""
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rec.server = server
    yield rec
    rec.release.set()
    await server.close()


@pytest.fixture
async def app(start_app: StartApp, tmp_path: Path) -> Running:
    """The service with private (loopback) endpoint URLs allowed."""
    return await start_app(make_config(tmp_path, webhooks={"allow_private_urls": True}))


async def register(
    running: Running, receiver: Receiver, key: str | None = None, **fields: Any
) -> dict[str, Any]:
    resp = await running.client.post(
        "/webhooks/endpoints", json={"url": receiver.url, **fields}, headers=running.headers(key)
    )
    body: dict[str, Any] = await resp.json()
    assert resp.status == 201, body
    receiver.secret = body["secret"]
    return body


async def deliveries(running: Running, key: str | None = None, **params: Any) -> dict[str, Any]:
    resp = await running.client.get(
        "/webhooks/deliveries", params=params, headers=running.headers(key)
    )
    body: dict[str, Any] = await resp.json()
    assert resp.status == 200, body
    return body


async def delivery_is(running: Running, status: str, attempts: int) -> bool:
    rows = (await deliveries(running))["deliveries"]
    return len(rows) == 1 and (rows[0]["status"], rows[0]["attempts"]) == (status, attempts)


async def cancelled_job(running: Running, contacts: int = 1, key: str | None = None) -> str:
    """A job scheduled for later, then cancelled: job.cancelled and a contact.finished each."""
    phones = [{"phone": f"+1202555{101 + i:04d}"} for i in range(contacts)]
    fields = {"scheduledStartTime": FUTURE}
    if key is not None and key == running.other_key:
        fields["fromPhoneNumberId"] = "num_b"
    job_id: str = (await running.create_json(phones, key=key, **fields))["batchJobId"]
    resp = await running.client.post(f"/batch/jobs/{job_id}/cancel", headers=running.headers(key))
    assert resp.status == 200, await resp.text()
    return job_id


# ----------------------------------------------------------------- endpoints


async def test_endpoint_secret_is_shown_once_and_listed_without_it(
    app: Running, receiver: Receiver
) -> None:
    """Create answers 201 with a whsec_ secret of 32 random bytes; the list never shows it."""
    created = await register(app, receiver, events=["job.completed"], description="CRM")
    assert set(created) == {"id", "url", "events", "description", "secret", "createdAt"}
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    assert created["events"] == ["job.completed"]
    resp = await app.client.get("/webhooks/endpoints", headers=app.headers())
    listed = (await resp.json())["endpoints"]
    assert listed == [{k: v for k, v in created.items() if k != "secret"}]
    everything = await register(app, receiver)
    assert everything["events"] == list(webhooks.EVENT_TYPES)


async def test_endpoint_delete_removes_it_for_its_organization_only(
    app: Running, receiver: Receiver
) -> None:
    """Another organization cannot delete (or see) an endpoint; its own key removes it."""
    created = await register(app, receiver)
    path = f"/webhooks/endpoints/{created['id']}"
    resp = await app.client.delete(path, headers=app.headers(app.other_key))
    assert (resp.status, (await resp.json())["code"]) == (404, "webhook_endpoint_not_found")
    other = await app.client.get("/webhooks/endpoints", headers=app.headers(app.other_key))
    assert (await other.json())["endpoints"] == []
    resp = await app.client.delete(path, headers=app.headers())
    assert resp.status == 200
    listed = await app.client.get("/webhooks/endpoints", headers=app.headers())
    assert (await listed.json())["endpoints"] == []


async def test_endpoints_created_at_once_stop_at_the_limit(app: Running) -> None:
    """30 creates at once with one key: 20 are created, 10 answer 400
    too_many_webhook_endpoints (none 500); a deleted endpoint frees its place."""
    limit = outbound_webhooks.MAX_ENDPOINTS_PER_ORGANIZATION

    async def create() -> tuple[int, Any]:
        resp = await app.client.post(
            "/webhooks/endpoints", json={"url": "http://127.0.0.1:9/h"}, headers=app.headers()
        )
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(create() for _ in range(30)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] * limit + [400] * (30 - limit)
    assert {b["code"] for status, b in answers if status == 400} == {"too_many_webhook_endpoints"}
    resp = await app.client.get("/webhooks/endpoints", headers=app.headers())
    listed = (await resp.json())["endpoints"]
    assert len(listed) == limit
    resp = await app.client.delete(f"/webhooks/endpoints/{listed[0]['id']}", headers=app.headers())
    assert resp.status == 200
    assert (await create())[0] == 201
    assert (await create())[0] == 400
    resp = await app.client.post(
        "/webhooks/endpoints",
        json={"url": "http://127.0.0.1:9/h"},
        headers=app.headers(app.other_key),
    )
    assert resp.status == 201  # the limit is the organization's


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://100.100.100.200/latest/meta-data/",
        "http://[2002:7f00:1::1]/hook",
        "ftp://example.com/hook",
        "example.com/hook",
        "http:///nohost",
        "https://user:pw@example.com/hook",
    ],
)
async def test_private_or_non_http_urls_are_refused(
    start_app: StartApp, tmp_path: Path, url: str
) -> None:
    """Without allow_private_urls: 400 invalid_webhook_url and no endpoint is created."""
    running = await start_app(make_config(tmp_path))
    resp = await running.client.post(
        "/webhooks/endpoints", json={"url": url}, headers=running.headers()
    )
    body = await resp.json()
    assert (resp.status, body["code"]) == (400, "invalid_webhook_url"), body
    listed = await running.client.get("/webhooks/endpoints", headers=running.headers())
    assert (await listed.json())["endpoints"] == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.1/hook",
        "http://2130706433/hook",
        "http://0x7f000001/hook",
        "http://0177.0.0.1/hook",
        "http://127.000.000.001/hook",
        "http://0/hook",
        "http://1.2.3.4.5/hook",
        "http://exa mple.com/hook",
        "http://example.com:0/hook",
        "http://example.com/ho\r\nX-Injected: 1",
        "http://exa\r\nmple.com/hook",
        "http://example.com/a\tb",
    ],
)
async def test_urls_that_cannot_be_sent_to_are_refused(app: Running, url: str) -> None:
    """Even with allow_private_urls: hosts that are addresses in another form or no name, port
    0, spaces and control characters are 400 invalid_webhook_url, and nothing is stored."""
    resp = await app.client.post("/webhooks/endpoints", json={"url": url}, headers=app.headers())
    body = await resp.json()
    assert (resp.status, body["code"]) == (400, "invalid_webhook_url"), body
    listed = await app.client.get("/webhooks/endpoints", headers=app.headers())
    assert (await listed.json())["endpoints"] == []


async def test_an_address_endpoint_is_checked_again_at_send_time(
    start_app: StartApp, tmp_path: Path, receiver: Receiver
) -> None:
    """An endpoint on 127.0.0.1 created while allow_private_urls was true gets nothing after a
    restart with it false: each send fails (retried on the schedule) without a request."""
    before = await start_app(make_config(tmp_path, webhooks={"allow_private_urls": True}))
    await register(before, receiver, events=["job.cancelled"])
    await before.client.close()
    app = await start_app(make_config(tmp_path))
    await cancelled_job(app)
    await wait_until(lambda: delivery_is(app, "pending", 1))
    row = (await deliveries(app))["deliveries"][0]
    assert (row["lastHttpStatus"], row["lastError"]) == (None, "127.0.0.1 is not a public address")
    await parked(app)
    await app.clock.advance(webhooks.RETRY_SCHEDULE_SECONDS[0])
    await wait_until(lambda: delivery_is(app, "pending", 2))
    assert receiver.requests == []


async def test_a_name_resolving_to_loopback_fails_with_that_reason(
    start_app: StartApp, tmp_path: Path, receiver: Receiver
) -> None:
    """An endpoint named `localhost` created while allow_private_urls was true: each send after
    a restart with it false fails without a request, and `lastError` says why (it was
    `ClientConnectorDNSError: Cannot connect to host localhost:N ssl:default [None]`)."""
    before = await start_app(make_config(tmp_path, webhooks={"allow_private_urls": True}))
    url = receiver.url.replace("127.0.0.1", "localhost")
    resp = await before.client.post(
        "/webhooks/endpoints",
        json={"url": url, "events": ["job.cancelled"]},
        headers=before.headers(),
    )
    assert resp.status == 201, await resp.text()
    await before.client.close()
    app = await start_app(make_config(tmp_path))
    await cancelled_job(app)
    await wait_until(lambda: delivery_is(app, "pending", 1))
    row = (await deliveries(app))["deliveries"][0]
    assert row["lastHttpStatus"] is None
    assert row["lastError"].startswith(
        "localhost resolves only to addresses that are not public: "
    ), row["lastError"]
    assert "127.0.0.1" in row["lastError"] or "::1" in row["lastError"]
    assert receiver.requests == []


async def test_public_address_is_accepted_without_allow_private(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A public IP address is a valid endpoint with the default config."""
    running = await start_app(make_config(tmp_path))
    resp = await running.client.post(
        "/webhooks/endpoints", json={"url": "https://93.184.216.34/hook"}, headers=running.headers()
    )
    assert resp.status == 201, await resp.text()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "http://127.0.0.1/h", "events": ["job.exploded"]}, "invalid_event_type"),
        ({"url": "http://127.0.0.1/h", "events": []}, "validation_error"),
        ({"events": ["job.completed"]}, "validation_error"),
        ({"url": "http://127.0.0.1/h", "secret": "mine"}, "validation_error"),
        ([1, 2], "validation_error"),
    ],
)
async def test_bad_endpoint_bodies_are_refused(app: Running, body: Any, code: str) -> None:
    """Unknown event types, empty lists, missing URL, unknown fields: 400 with the code."""
    resp = await app.client.post("/webhooks/endpoints", json=body, headers=app.headers())
    assert (resp.status, (await resp.json())["code"]) == (400, code)


# ----------------------------------------------------------------- events


async def test_every_event_of_a_job_life_arrives_signed_in_sequence(
    app: Running, receiver: Receiver
) -> None:
    """Pause, resume, start, each attempt and contact, completion: all arrive, verified, with
    sequence 1..N, the job and contact shapes of the read routes, and the attempt."""
    await register(app, receiver)
    phones = [{"phone": "+12025550101"}, {"phone": "+12025550102"}]
    job_id = (await app.create_json(phones, scheduledStartTime=FUTURE))["batchJobId"]
    for action in ("pause", "resume"):
        resp = await app.client.post(f"/batch/jobs/{job_id}/{action}", headers=app.headers())
        assert resp.status == 200, await resp.text()
    resp = await app.client.post(f"/batch/jobs/{job_id}/start", headers=app.headers())
    assert resp.status == 200, await resp.text()
    await app.wait_status(job_id, "completed")
    await wait_until(lambda: _count(receiver, 8))
    events = receiver.delivered()
    assert [e["sequence"] for e in events] == list(range(1, 9))
    types = [e["type"] for e in events]
    assert types[:3] == ["job.paused", "job.resumed", "job.started"]
    assert types[-1] == "job.completed"
    assert sorted(types[3:-1]) == ["contact.attempt_finished"] * 2 + ["contact.finished"] * 2
    detail = await app.detail(job_id)
    listed = await app.client.get(
        "/batch/jobs", params={"organizationId": "org_a"}, headers=app.headers()
    )
    assert events[-1]["data"] == (await listed.json())["batchJobs"][0]
    contacts = {c["id"]: c for c in detail["contacts"]}
    for event in events[3:-1]:
        data = dict(event["data"])
        attempt = data.pop("attempt", None)
        assert data == contacts[data["id"]]
        if event["type"] == "contact.attempt_finished":
            assert attempt is not None
            assert (attempt["attemptNumber"], attempt["outcome"]) == (1, "completed")
            assert attempt["roomName"] == data["roomName"]
            assert set(attempt) >= {"startedAt", "answeredAt", "endedAt", "sipCode", "reason"}
    assert all(e["timestamp"].endswith("Z") for e in events)


async def test_a_late_delivery_shows_the_contact_as_it_was_at_the_event(
    start_app: StartApp, tmp_path: Path, receiver: Receiver
) -> None:
    """An attempt's event delivered after the contact moved on (retried, then final) still
    shows the contact as that attempt left it; the later events show the later states."""
    config = make_config(
        tmp_path,
        webhooks={"allow_private_urls": True},
        telephony={"simulated": {"rules": [{"prefix": "+1202555", "outcome": "busy"}]}},
    )
    app = await start_app(config)
    receiver.answer = _statuses(503)
    await register(app, receiver, events=["contact.attempt_finished", "contact.finished"])
    job_id = (await app.create_json([{"phone": "+12025550101"}], maxAttempts=2))["batchJobId"]

    async def job_done() -> bool:
        await app.clock.advance(30)
        return (await app.detail(job_id))["status"] == "completed"

    await wait_until(job_done)
    receiver.answer = _statuses(200)

    async def all_delivered() -> bool:
        await app.clock.advance(300)
        return (await deliveries(app, status="delivered"))["total"] == 3

    await wait_until(all_delivered)
    first, second, finished = receiver.delivered()
    assert (first["type"], first["data"]["status"], first["data"]["attemptCount"]) == (
        "contact.attempt_finished",
        "queued",
        1,
    )
    assert first["data"]["nextRetryAt"] is not None and first["data"]["completedAt"] is None
    assert (first["data"]["attempt"]["attemptNumber"], first["data"]["attempt"]["outcome"]) == (
        1,
        "busy",
    )
    assert (second["data"]["status"], second["data"]["attempt"]["attemptNumber"]) == ("busy", 2)
    assert finished["type"] == "contact.finished"
    assert finished["data"] == (await app.detail(job_id))["contacts"][0]


async def test_cancel_reports_the_job_and_every_contact(app: Running, receiver: Receiver) -> None:
    """A cancelled job: job.cancelled, then contact.finished for each cancelled contact."""
    await register(app, receiver)
    await cancelled_job(app, contacts=3)
    await wait_until(lambda: _count(receiver, 4))
    events = receiver.delivered()
    assert [e["type"] for e in events] == ["job.cancelled"] + ["contact.finished"] * 3
    assert {e["data"]["status"] for e in events} == {"cancelled"}


async def test_a_contact_cancelled_at_create_is_reported_finished(
    app: Running, receiver: Receiver
) -> None:
    """A number on the do-not-call list is stored cancelled when its job is created: it gets
    its contact.finished like any other final contact (it got none: no update of its row)."""
    await register(app, receiver, events=["contact.finished"])
    listed = "+12025550102"
    resp = await app.client.post("/dnc", json={"numbers": [listed]}, headers=app.headers())
    assert resp.status == 200, await resp.text()
    phones = [{"phone": "+12025550101"}, {"phone": listed}]
    job_id = (await app.create_json(phones, scheduledStartTime=FUTURE))["batchJobId"]
    await wait_until(lambda: _count(receiver, 1))
    event = receiver.delivered()[0]
    shown = {c["phoneNumber"]: c for c in (await app.detail(job_id))["contacts"]}
    assert event["type"] == "contact.finished"
    assert event["data"] == shown[listed]
    assert (event["data"]["status"], event["data"]["failureReason"]) == ("cancelled", "do_not_call")
    assert (await deliveries(app))["total"] == 1  # the waiting contact: nothing yet


async def test_an_endpoint_gets_only_the_types_it_asked_for(
    app: Running, receiver: Receiver
) -> None:
    """`events` filters: only job.cancelled is delivered, and the sequence has no gap for it."""
    await register(app, receiver, events=["job.cancelled"])
    await cancelled_job(app, contacts=2)
    await wait_until(lambda: _count(receiver, 1))
    rows = (await deliveries(app))["deliveries"]
    assert [r["eventType"] for r in rows] == ["job.cancelled"]
    assert receiver.delivered()[0]["sequence"] == 1


async def test_organizations_never_see_each_others_events(app: Running, receiver: Receiver) -> None:
    """Org B's endpoint gets nothing of org A's job; B's deliveries list and retry see none."""
    await register(app, receiver)
    other = Receiver()
    other_app = web.Application()
    other_app.router.add_post("/hook", other.handle)
    async with TestServer(other_app, host="127.0.0.1") as server:
        other.server = server
        await register(app, other, key=app.other_key)
        await cancelled_job(app)
        await wait_until(lambda: _count(receiver, 2))
        assert other.requests == []
        assert (await deliveries(app, key=app.other_key))["total"] == 0
        mine = (await deliveries(app))["deliveries"][0]["id"]
        resp = await app.client.post(
            f"/webhooks/deliveries/{mine}/retry", headers=app.headers(app.other_key)
        )
        assert (resp.status, (await resp.json())["code"]) == (404, "webhook_delivery_not_found")
        await cancelled_job(app, key=app.other_key)
        await wait_until(lambda: _count(other, 2))
        assert all(
            b["data"].get("organizationId", OTHER_ORG) == OTHER_ORG for _, b in other.requests
        )
        assert len(receiver.requests) == 2


# ----------------------------------------------------------------- delivery


async def test_failing_receiver_gets_each_event_on_the_retry_schedule(
    app: Running, receiver: Receiver
) -> None:
    """500, 500, 500 then 200: retried after 5 s, 5 min and 30 min of clock time, with the same
    webhook-id every time; then delivered and not sent again."""
    receiver.answer = _statuses(500, 500, 500, 200)
    await register(app, receiver, events=["job.cancelled"])
    await cancelled_job(app)
    await wait_until(lambda: _requests(receiver, 1))
    await wait_until(lambda: delivery_is(app, "pending", 1))
    row = (await deliveries(app))["deliveries"][0]
    assert (row["lastHttpStatus"], row["lastError"]) == (500, "HTTP 500")
    for made, delay in ((1, 5), (2, 300), (3, 1800)):
        await parked(app)
        await app.clock.advance(delay - 1)
        assert len(receiver.requests) == made  # not before its time
        await parked(app)
        await app.clock.advance(1)
        await wait_until(lambda made=made: _requests(receiver, made + 1))
        await wait_until(lambda made=made: _recorded(app, made + 1))
    await wait_until(lambda: delivery_is(app, "delivered", 4))
    assert len({webhook_id for webhook_id, _ in receiver.requests}) == 1
    await parked(app)
    await app.clock.advance(36000)
    assert len(receiver.requests) == 4


async def test_every_retry_failing_ends_in_a_dead_letter_and_replay_delivers_it(
    app: Running, receiver: Receiver
) -> None:
    """Eight failed sends (the schedule's 7 retries) make the delivery failed; replay sends
    it again now with the same webhook-id."""
    receiver.answer = _statuses(*([503] * 8), 200)
    await register(app, receiver, events=["job.cancelled"])
    await cancelled_job(app)
    for made, delay in enumerate((*webhooks.RETRY_SCHEDULE_SECONDS, None), start=1):
        await wait_until(lambda made=made: _recorded(app, made))
        if delay is not None:
            await parked(app)
            await app.clock.advance(delay)
    await wait_until(lambda: delivery_is(app, "failed", 8))
    failed = await deliveries(app, status="failed")
    assert failed["total"] == 1 and failed["deliveries"][0]["nextAttemptAt"] is None
    await parked(app)
    await app.clock.advance(10 * 36000)
    assert len(receiver.requests) == 8
    delivery_id = failed["deliveries"][0]["id"]
    resp = await app.client.post(f"/webhooks/deliveries/{delivery_id}/retry", headers=app.headers())
    assert resp.status == 202, await resp.text()
    await wait_until(lambda: delivery_is(app, "delivered", 9))
    assert len({webhook_id for webhook_id, _ in receiver.requests}) == 1
    # /metrics counts every send by its result.
    samples = await scrape(app)
    sends = {r: value(samples, "dialer_webhook_deliveries_total", result=r) for r in RESULTS}
    assert sends == {"delivered": 1, "retry": 7, "failed": 1}
    again = await app.client.post(
        f"/webhooks/deliveries/{delivery_id}/retry", headers=app.headers()
    )
    assert (again.status, (await again.json())["code"]) == (409, "delivery_not_failed")


async def test_gone_stops_retries_at_once(app: Running, receiver: Receiver) -> None:
    """A 410 answer makes the delivery failed after that one send: no retry follows."""
    receiver.answer = _statuses(410)
    await register(app, receiver, events=["job.cancelled"])
    await cancelled_job(app)
    await wait_until(lambda: delivery_is(app, "failed", 1))
    await parked(app)
    await app.clock.advance(2 * 36000)
    assert len(receiver.requests) == 1
    row = (await deliveries(app, status="failed"))["deliveries"][0]
    assert row["lastHttpStatus"] == 410


async def test_slow_endpoint_holds_four_slots_and_times_out_on_the_clock(
    app: Running, receiver: Receiver
) -> None:
    """A receiver that never answers gets 4 requests at a time; after 10 s of clock time they
    are failed sends (retried later) and the endpoint is paused: nothing for 5 s, then one
    request at a time while they fail."""

    async def hang(n: int) -> int:
        await receiver.release.wait()
        return 200

    receiver.answer = hang
    await register(app, receiver)
    await cancelled_job(app, contacts=5)  # 6 events
    await wait_until(lambda: _requests(receiver, 4))
    await parked(app)  # the sender's round that started the sends is over
    assert sender(app).in_flight == 4
    assert receiver.most_in_flight == 4 and len(receiver.requests) == 4
    await app.clock.advance(10)
    await wait_until(lambda: _sent(app, 4))
    await wait_until(lambda: _idle(app))
    assert len(receiver.requests) == 4
    pending = (await deliveries(app, status="pending"))["deliveries"]
    timed_out = [r for r in pending if r["attempts"] == 1]
    assert len(timed_out) == 4
    assert all(r["lastError"] == "timed out after 10 s" for r in timed_out)
    await app.clock.advance(5)
    await wait_until(lambda: _requests(receiver, 5))
    await parked(app)
    assert sender(app).in_flight == 1 and len(receiver.requests) == 5


@pytest.mark.parametrize("dead", ["refused", "HTTP 503"])
async def test_a_dead_endpoint_is_paused_not_sent_every_pending_delivery(
    app: Running, receiver: Receiver, dead: str
) -> None:
    """An endpoint where nothing listens (every connection refused at once), or that answers
    503 to everything, with 100 deliveries pending: the 4 sends of its slots fail, then it gets
    nothing while it is paused and one send after each pause (5 s, doubling). Before, a failed
    send freed its slot at once and every pending delivery was sent in a burst, each logged
    (20 refused endpoints: 2,070 sends and log lines a second). One info line per pause; only
    the deliveries it sends are taken (its next 32), the rest wait untaken."""
    receiver.answer = _statuses(503)
    with socket.socket() as unused, capture_logs() as logs:
        if dead == "refused":
            unused.bind(("127.0.0.1", 0))  # bound, never listening: each connection refused
            host, port = unused.getsockname()
            resp = await app.client.post(
                "/webhooks/endpoints",
                json={"url": f"http://{host}:{port}/hook"},
                headers=app.headers(),
            )
            assert resp.status == 201, await resp.text()
        else:
            await register(app, receiver)
        await cancelled_job(app, contacts=99)  # job.cancelled, 99 x contact.finished
        await wait_until(lambda: _sent(app, 4))
        await wait_until(lambda: _idle(app))
        assert _sends(app) == 4
        pauses = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
        for step, pause in enumerate(pauses, start=1):
            await app.clock.advance(pause - 0.5)
            await wait_until(lambda: _idle(app))
            assert _sends(app) == 3 + step  # nothing while paused
            await app.clock.advance(0.5)
            await wait_until(lambda step=step: _sent(app, 4 + step))
            await wait_until(lambda: _idle(app))
            assert _sends(app) == 4 + step  # one send after the pause
    if dead == "HTTP 503":
        assert len(receiver.requests) == 4 + len(pauses)
    failed = [e for e in logs if e["event"] == "webhook_delivery_failed"]
    assert len(failed) == 4 + len(pauses)
    assert [e["log_level"] for e in failed].count("info") == 1 + len(pauses)
    listed = await deliveries(app, status="pending", pageSize=100)
    assert listed["total"] == 100
    assert sum(r["attempts"] for r in listed["deliveries"]) == 4 + len(pauses)
    conn = dbmod.connect(app.store.path)
    try:
        taken = conn.execute("SELECT count(*) FROM webhook_taken_deliveries").fetchone()[0]
    finally:
        conn.close()
    assert taken == 32
    # Deleting it is one small write, and the sender forgets it.
    endpoint_id = listed["deliveries"][0]["endpointId"]
    resp = await app.client.delete(f"/webhooks/endpoints/{endpoint_id}", headers=app.headers())
    assert resp.status == 200, await resp.text()
    await app.clock.advance(300)
    await wait_until(lambda: _idle(app))
    assert _sends(app) == 4 + len(pauses)
    assert (await deliveries(app))["total"] == 0


async def test_a_paused_endpoint_that_answers_again_gets_every_slot_back(
    app: Running, receiver: Receiver
) -> None:
    """503 to the 4 sends of its slots, then 200: after the pause one send goes out, and once
    it is delivered the endpoint has its 4 slots again and the rest go out at once."""
    receiver.answer = _statuses(503, 503, 503, 503, 200)
    with capture_logs() as logs:
        await register(app, receiver)
        await cancelled_job(app, contacts=19)  # 20 events
        await wait_until(lambda: _sent(app, 4))
        await wait_until(lambda: _idle(app))
        assert len(receiver.requests) == 4
        # The pause and the failed deliveries' first retry end together (5 s).
        assert webhooks.ENDPOINT_PAUSE_SECONDS[0] == webhooks.RETRY_SCHEDULE_SECONDS[0]
        await app.clock.advance(webhooks.ENDPOINT_PAUSE_SECONDS[0])
        await wait_until(lambda: _all_recorded(app, 20))  # with no more clock time
    assert len(receiver.requests) == 24 and receiver.most_in_flight <= 4
    assert [e["event"] for e in logs].count("webhook_endpoint_resumed") == 1


class StreamingReceiver:
    """An endpoint on 127.0.0.1 that answers 200 with a body of `chunks` chunks of `chunk_size`
    bytes, then holds the body open until `release` is set; counts the chunks it wrote."""

    def __init__(self, chunks: int, chunk_size: int) -> None:
        self.chunks, self.chunk_size = chunks, chunk_size
        self.written = 0
        self.requests = 0
        self.ended = asyncio.Event()  # the handler returned or failed (the client went away)
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests += 1
        resp = web.StreamResponse(status=200)
        resp.content_length = self.chunks * self.chunk_size + 1
        try:
            await resp.prepare(request)
            for _ in range(self.chunks):
                await resp.write(b"x" * self.chunk_size)
                self.written += 1
            await self.release.wait()
            await resp.write(b"x")
            await resp.write_eof()
        finally:
            self.ended.set()
        return resp


async def _serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_a_huge_answer_is_not_read(app: Running) -> None:
    """A 2xx answer with a 64 MiB body that never ends is delivered after its first 64 KiB: the
    rest is never read (the connection is closed), so the body costs the dialer no memory."""
    huge = StreamingReceiver(chunks=64, chunk_size=1024 * 1024)
    server = await _serve(huge.handle)
    try:
        resp = await app.client.post(
            "/webhooks/endpoints",
            json={"url": str(server.make_url("/hook")), "events": ["job.cancelled"]},
            headers=app.headers(),
        )
        assert resp.status == 201, await resp.text()
        await cancelled_job(app)
        await wait_until(lambda: delivery_is(app, "delivered", 1))
        row = (await deliveries(app))["deliveries"][0]
        assert (row["lastHttpStatus"], row["lastError"]) == (200, None)
        await wait_until(lambda: _fails(lambda: int(huge.ended.is_set()), 1))
        assert huge.written < huge.chunks  # the client went away before the body was taken
        assert huge.requests == 1
    finally:
        huge.release.set()
        await server.close()


async def test_a_body_that_comes_slowly_times_out_on_the_clock(app: Running) -> None:
    """A 2xx answer whose body stops after its first bytes is a send timed out after 10 s of
    clock time (retried later), not a delivery held for as long as the body takes."""
    slow = StreamingReceiver(chunks=1, chunk_size=10)
    server = await _serve(slow.handle)
    try:
        resp = await app.client.post(
            "/webhooks/endpoints",
            json={"url": str(server.make_url("/hook")), "events": ["job.cancelled"]},
            headers=app.headers(),
        )
        assert resp.status == 201, await resp.text()
        await cancelled_job(app)
        await wait_until(lambda: _fails(lambda: slow.written, 1))
        await parked(app)
        assert sender(app).in_flight == 1
        await app.clock.advance(10)
        await wait_until(lambda: delivery_is(app, "pending", 1))
        row = (await deliveries(app))["deliveries"][0]
        assert (row["lastHttpStatus"], row["lastError"]) == (None, "timed out after 10 s")
    finally:
        slow.release.set()
        await server.close()


async def test_a_hanging_endpoint_does_not_hold_up_another(
    app: Running, receiver: Receiver
) -> None:
    """With one endpoint that never answers, another endpoint still gets every event at once
    (each event to each endpoint once) and the job completes."""

    async def hang(n: int) -> int:
        await receiver.release.wait()
        return 200

    receiver.answer = hang
    await register(app, receiver)
    fast = Receiver()
    fast_app = web.Application()
    fast_app.router.add_post("/hook", fast.handle)
    async with TestServer(fast_app, host="127.0.0.1") as server:
        fast.server = server
        await register(app, fast)
        phones = [{"phone": f"+1202555{101 + i:04d}"} for i in range(6)]
        job_id = (await app.create_json(phones))["batchJobId"]
        await app.wait_status(job_id, "completed")
        await wait_until(lambda: _count(fast, 14))  # started, 6 x 2, completed
        events = fast.delivered()
        assert [e["sequence"] for e in events] == list(range(1, 15))
        assert [e["type"] for e in events].count("contact.attempt_finished") == 6
        assert len(fast.requests) == 14
        await wait_until(lambda: _all_recorded(app, 14))
        await wait_until(lambda: _in_flight_at_most(app, 4))  # the fast ones' results written
        assert len(receiver.requests) == 4 and sender(app).in_flight == 4
        rows = (await deliveries(app, pageSize=100))["deliveries"]
        assert len(rows) == 28
        assert len({(r["endpointId"], r["webhookId"]) for r in rows}) == 28


async def test_deliveries_list_filters_and_pages(app: Running, receiver: Receiver) -> None:
    """endpointId, status, page and pageSize filter and page the list; bad values are 400."""
    endpoint = await register(app, receiver)
    await cancelled_job(app, contacts=2)
    await wait_until(lambda: _count(receiver, 3))
    await wait_until(lambda: _all_recorded(app, 3))
    page = await deliveries(app, endpointId=endpoint["id"], status="delivered", pageSize=2)
    assert (page["total"], len(page["deliveries"]), page["hasMore"]) == (3, 2, True)
    row = page["deliveries"][0]
    assert set(row) == {
        "id",
        "endpointId",
        "eventType",
        "webhookId",
        "sequence",
        "status",
        "attempts",
        "lastHttpStatus",
        "lastError",
        "lastAttemptAt",
        "nextAttemptAt",
        "deliveredAt",
        "createdAt",
    }
    assert row["webhookId"].startswith("msg_") and row["lastHttpStatus"] == 200
    second = await deliveries(app, pageSize=2, page=2)
    assert len(second["deliveries"]) == 1 and not second["hasMore"]
    assert (await deliveries(app, endpointId="whep_nope"))["total"] == 0
    for params, code in (
        ({"status": "lost"}, "invalid_status"),
        ({"page": "0"}, "invalid_page"),
        ({"pageSize": "101"}, "invalid_page_size"),
    ):
        resp = await app.client.get("/webhooks/deliveries", params=params, headers=app.headers())
        assert (resp.status, (await resp.json())["code"]) == (400, code)
    resp = await app.client.post("/webhooks/deliveries/dlv_999/retry", headers=app.headers())
    assert (resp.status, (await resp.json())["code"]) == (404, "webhook_delivery_not_found")


async def test_sender_survives_storage_failures_and_never_sends_twice(
    app: Running, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While results cannot be written the sender backs off on the clock and keeps them; once
    the store works they are written, and the delivery was sent once."""
    real = app.store.record_webhook_attempts
    failures = 0

    async def failing(attempts: Any) -> int:
        nonlocal failures
        if failures < 3:
            failures += 1
            raise StorageUnavailable("disk I/O error")
        return await real(attempts)

    monkeypatch.setattr(app.store, "record_webhook_attempts", failing)
    await register(app, receiver, events=["job.cancelled"])
    await cancelled_job(app)
    await wait_until(lambda: _fails(lambda: failures, 1))
    for _ in range(3):
        await parked(app)
        await app.clock.advance(webhooks.MAX_STORAGE_BACKOFF_SECONDS)
    await wait_until(lambda: delivery_is(app, "delivered", 1))
    assert len(receiver.requests) == 1


async def test_secrets_and_signatures_never_appear_in_logs(
    app: Running, receiver: Receiver
) -> None:
    """A delivery's logs name the delivery, never the secret nor the signature."""
    receiver.answer = _statuses(500, 200)
    with capture_logs() as logs:
        endpoint = await register(app, receiver, events=["job.cancelled"])
        await cancelled_job(app)
        await wait_until(lambda: _recorded(app, 1))
        await parked(app)
        await app.clock.advance(5)
        await wait_until(lambda: delivery_is(app, "delivered", 2))
    assert any(e["event"] == "webhook_delivery_delivered" for e in logs)
    text = repr(logs)
    secret = endpoint["secret"]
    assert secret not in text and secret.removeprefix("whsec_") not in text
    assert "v1," not in text and "signature" not in text


# ----------------------------------------------------------------- helpers


async def test_events_no_delivery_needs_are_forgotten_after_keep_days(
    start_app: StartApp, tmp_path: Path, receiver: Receiver
) -> None:
    """Events whose deliveries are done are forgotten once `keep_days` have passed, at the
    sender's next round (an idle sender wakes for nothing); the newest change stays."""
    config = make_config(tmp_path, webhooks={"allow_private_urls": True, "keep_days": 1})
    running = await start_app(config)
    await register(running, receiver)
    await cancelled_job(running, contacts=2)  # job.cancelled, 2 x contact.finished: 3 changes
    await wait_until(lambda: _all_recorded(running, 3))
    await parked(running)
    await running.clock.advance(86400 - 60)
    sender(running).wake()  # a round: nothing is old enough
    await parked(running)
    assert sender(running).pruned == 0
    await running.clock.advance(webhooks.PRUNE_EVERY_SECONDS)
    assert sender(running).pruned == 0  # an idle sender wakes for nothing
    sender(running).wake()  # the next round looks again (at most hourly)
    await wait_until(lambda: _fails(lambda: sender(running).pruned, 2))
    listed = (await deliveries(running))["deliveries"]
    assert [(d["eventType"], d["status"]) for d in listed] == [("contact.finished", "delivered")]
    assert len(receiver.delivered()) == 3


def sender(running: Running) -> webhooks.WebhookSender:
    return running.app[appkeys.WEBHOOK_SENDER]


async def parked(running: Running) -> None:
    """Until the sender waits on the clock for its next round (so that advancing the clock
    reaches its timer)."""

    async def waiting() -> bool:
        until = sender(running).parked_until
        return until is not None and until > running.clock.now()

    await wait_until(waiting)


def _statuses(*answers: int) -> Callable[[int], Awaitable[int]]:
    """Answer the n-th request answers[n-1] (the last one from then on)."""

    async def answer(n: int) -> int:
        return answers[min(n, len(answers)) - 1]

    return answer


async def _count(receiver: Receiver, n: int) -> bool:
    return len(receiver.delivered()) >= n


async def _requests(receiver: Receiver, n: int) -> bool:
    return len(receiver.requests) >= n


async def _fails(count: Callable[[], int], n: int) -> bool:
    return count() >= n


def _sends(running: Running) -> int:
    """The sends the sender made, by their results."""
    return sum(sender(running).sends.values())


async def _sent(running: Running, n: int) -> bool:
    return _sends(running) >= n


async def _idle(running: Running) -> bool:
    """The sender waits on the clock with no send in flight (so nothing more is sent until the
    clock moves)."""
    until = sender(running).parked_until
    return until is not None and until > running.clock.now() and sender(running).in_flight == 0


async def _in_flight_at_most(running: Running, n: int) -> bool:
    return sender(running).in_flight <= n


async def _recorded(running: Running, attempts: int) -> bool:
    rows = (await deliveries(running))["deliveries"]
    return bool(rows) and rows[0]["attempts"] >= attempts


async def _all_recorded(running: Running, n: int) -> bool:
    return (await deliveries(running, status="delivered"))["total"] >= n


async def test_an_agent_result_is_a_signed_contact_result_event(
    start_app: StartApp, tmp_path: Path, receiver: Receiver
) -> None:
    """A scripted simulated agent reports a voicemail: contact.result carries it."""
    rule = {"prefix": "+1202555", "outcome": "completed", "disposition": "voicemail"}
    running = await start_app(
        make_config(
            tmp_path,
            webhooks={"allow_private_urls": True},
            telephony={"simulated": {"rules": [rule]}},
        )
    )
    await register(running, receiver, events=["contact.result"])
    job_id = (await running.create_json([{"phone": "+12025550101"}], maxAttempts=1))["batchJobId"]
    await running.wait_status(job_id, "completed")
    await wait_until(lambda: _count(receiver, 1))
    (event,) = receiver.delivered()
    room = (await running.detail(job_id))["contacts"][0]["roomName"]
    assert event["type"] == "contact.result"
    assert {k: event["data"][k] for k in ("jobId", "roomName", "disposition", "attemptNumber")} == {
        "jobId": job_id,
        "roomName": room,
        "disposition": "voicemail",
        "attemptNumber": 1,
    }


async def test_a_result_that_changes_the_outcome_sends_the_contact_as_it_left_the_attempt(
    start_app: StartApp, tmp_path: Path, receiver: Receiver
) -> None:
    """An agent's voicemail posted during each call: the first attempt's event shows the contact
    queued for its retry (no contact.finished), the second's no_answer, with one
    contact.finished; every event equal to the read routes' contact at the end."""
    rule = {"prefix": "+1202555", "outcome": "completed", "disposition": "voicemail"}
    running = await start_app(
        make_config(
            tmp_path,
            webhooks={"allow_private_urls": True},
            telephony={"simulated": {"rules": [rule]}},
        )
    )
    receiver.answer = _statuses(503)  # sent once the job is done (the clock moves meanwhile)
    await register(running, receiver, events=["contact.attempt_finished", "contact.finished"])
    job_id = (await running.create_json([{"phone": "+12025550101"}], maxAttempts=2))["batchJobId"]

    async def job_done() -> bool:
        await running.clock.advance(60)
        return (await running.detail(job_id))["status"] == "completed"

    await wait_until(job_done)
    receiver.answer = _statuses(200)

    async def all_delivered() -> bool:
        await running.clock.advance(300)
        return (await deliveries(running, status="delivered"))["total"] >= 3

    await wait_until(all_delivered)
    events = [(e["type"], e["data"]) for e in receiver.delivered()]
    assert [(t, d["status"], d["attemptCount"]) for t, d in events] == [
        ("contact.attempt_finished", "queued", 1),
        ("contact.attempt_finished", "no_answer", 2),
        ("contact.finished", "no_answer", 2),
    ]
    assert {d["failureReason"] for _, d in events} == {"voicemail"}
    assert events[0][1]["nextRetryAt"] is not None and events[0][1]["completedAt"] is None
    contact = (await running.detail(job_id))["contacts"][0]
    assert events[2][1] == contact
    assert (await deliveries(running))["total"] == 3
