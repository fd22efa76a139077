"""Provider fixtures: a fake LiveKit server on 127.0.0.1 and LiveKit providers pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dialer.clock import FakeClock
from dialer.config import LiveKitConfig
from dialer.providers.base import DialRequest, WebhookRejected
from dialer.providers.livekit import LiveKitProvider
from dialer.scheduler import room_name
from tests.conftest import wait_until
from tests.fake_livekit import API_KEY, API_SECRET, TRUNK, FakeLiveKit

CALLER = "+12025550100"
AGENT = "reminder-agent"
CALLBACK_TOKEN = "cbt-secret-0123456789"


def livekit_config(url: str, **overrides: Any) -> LiveKitConfig:
    """Provider settings for the fake; polling is rare unless a test asks for it."""
    values: dict[str, Any] = {
        "url": url,
        "api_key": API_KEY,
        "api_secret": API_SECRET,
        "ringing_timeout_seconds": 30.0,
        "max_call_seconds": 900.0,
        "poll_interval_seconds": 600.0,
        **overrides,
    }
    return LiveKitConfig(**values)


def dial_request(
    to: str, clock: FakeClock, *, contact_id: int = 1, attempt: int = 1, trunk: str = TRUNK
) -> DialRequest:
    room = room_name("job_test", contact_id, attempt)
    return DialRequest(
        job_id="job_test",
        contact_id=contact_id,
        attempt_no=attempt,
        room_name=room,
        to_number=to,
        from_number=CALLER,
        sip_trunk_id=trunk,
        agent_name=AGENT,
        contact_data={"name": "Ada", "balance": "12.50"},
        started_at=clock.now(),
        job_name="December reminders",
        timezone="America/New_York",
        callback_url=f"http://127.0.0.1:8080/calls/{room}/result",
        callback_token=CALLBACK_TOKEN,
    )


async def until(condition: Callable[[], bool]) -> None:
    """`wait_until` for a plain condition (bounded; waits on work, not on time)."""

    async def check() -> bool:
        return condition()

    await wait_until(check)


async def answered(provider: LiveKitProvider, request: DialRequest) -> None:
    """Until `request`'s call is answered and the provider follows it."""
    await until(
        lambda: (
            (call := provider.calls.get(request.room_name)) is not None
            and call.answered_at is not None
        )
    )


async def on_clock(clock: FakeClock, timers: int = 1) -> None:
    """Until at least `timers` sleepers wait on the clock (e.g. the provider's wait for the agent
    between two looks at the room, plus the fake agent's join), so advancing it cannot race."""
    await until(lambda: clock.timers >= timers)


async def parked(clock: FakeClock) -> None:
    """Until the tasks under test wait on the clock again (their network I/O has settled)."""
    await until(lambda: (clock.next_deadline or 0) > clock.now())


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def fake(clock: FakeClock) -> AsyncIterator[FakeLiveKit]:
    server = FakeLiveKit(clock)
    await server.start()
    yield server
    await server.close()


StartLiveKit = Callable[..., Awaitable[LiveKitProvider]]


@pytest.fixture
async def start_livekit(fake: FakeLiveKit, clock: FakeClock) -> AsyncIterator[StartLiveKit]:
    """Start a LiveKit provider on the fake (config overrides as keywords); the fake posts its
    webhooks to a small receiver that hands them to the provider last started."""
    providers: list[LiveKitProvider] = []
    servers: list[TestServer] = []

    async def start(**overrides: Any) -> LiveKitProvider:
        provider = LiveKitProvider(livekit_config(fake.url, **overrides), clock)
        await provider.start()
        providers.append(provider)

        async def receive(request: web.Request) -> web.Response:
            try:
                provider.receive_webhook(await request.text(), request.headers["Authorization"])
            except WebhookRejected:
                return web.Response(status=401)
            return web.Response()

        app = web.Application()
        app.router.add_post("/webhooks/livekit", receive)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        fake.webhook_url = str(server.make_url("/webhooks/livekit"))
        return provider

    yield start
    for provider in providers:
        await provider.close()
    for server in servers:
        await server.close()
