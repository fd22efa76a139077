"""Shared fixtures: configs, a fake clock, a running app on 127.0.0.1, API keys."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api import keys as appkeys
from api.app import create_app
from dialer import config as configmod
from dialer import keys
from dialer.clock import FakeClock
from dialer.providers import Provider
from dialer.scheduler import Engine
from storage.store import Store

ORG = "org_a"
OTHER_ORG = "org_b"
NUMBER = "num_a"
OPEN_ALL_DAY = [
    {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00", "end": "24:00"}
]
NO_CALLING_RULES: dict[str, Any] = {
    "calling_windows": OPEN_ALL_DAY,
    "max_attempts_per_number_per_day": 0,
}


def make_config(tmp_path: Path | None = None, **overrides: Any) -> configmod.Config:
    """A test config: two organizations, instant simulated calls. Sections merge over defaults."""
    data: dict[str, Any] = {
        # The fake clock stands still: tests that poll need a bucket that does not run dry.
        "server": {"requests_per_second": 1_000_000.0, "burst": 1_000_000},
        "storage": {"path": str(tmp_path / "dialer.db") if tmp_path else ":memory:"},
        "engine": {"max_concurrent_calls": 50, "shutdown_grace_seconds": 0},
        "telephony": {
            "provider": "simulated",
            "simulated": {"call_seconds": 0, "ring_seconds": 0, "default_outcome": "completed"},
        },
        # Windows open all day and no per-number cap: tests of other behaviour dial at once at
        # any fake-clock time; tests of calling rules set their own (see OPEN_ALL_DAY).
        "organizations": [
            {"id": ORG, "name": "A", **NO_CALLING_RULES},
            {"id": OTHER_ORG, "name": "B", **NO_CALLING_RULES},
        ],
        "agents": [
            {"id": "agent_a", "organization": ORG, "livekit_agent_name": "agent-a"},
            {"id": "agent_b", "organization": OTHER_ORG},
        ],
        "phone_numbers": [
            {
                "id": NUMBER,
                "organization": ORG,
                "number": "+12025550100",
                "sip_trunk_id": "ST_a",
                "outbound_agent": "agent_a",
                "calls_per_second": 1000,
            },
            {
                "id": "num_noagent",
                "organization": ORG,
                "number": "+12025550199",
                "calls_per_second": 1000,
            },
            {
                "id": "num_b",
                "organization": OTHER_ORG,
                "number": "+12025550198",
                "outbound_agent": "agent_b",
                "calls_per_second": 1000,
            },
        ],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            merged = dict(data[key])
            for k, v in value.items():
                if isinstance(v, dict) and isinstance(merged.get(k), dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            data[key] = merged
        else:
            data[key] = value
    return configmod.parse(data)


@dataclass
class Running:
    """A started app with its client and parts."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    clock: FakeClock
    key: str
    other_key: str

    @property
    def engine(self) -> Engine:
        return self.app[appkeys.ENGINE]

    @property
    def store(self) -> Store:
        return self.app[appkeys.STORE]

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"x-api-key": key or self.key}

    async def create_json(
        self, contacts: list[dict[str, Any]], key: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        body = {"fromPhoneNumberId": NUMBER, "name": "test job", "contacts": contacts, **fields}
        resp = await self.client.post("/batch/create", json=body, headers=self.headers(key))
        data: dict[str, Any] = await resp.json()
        assert resp.status == 201, data
        return data

    async def detail(self, job_id: str, **params: Any) -> dict[str, Any]:
        resp = await self.client.get(f"/batch/jobs/{job_id}", params=params, headers=self.headers())
        data: dict[str, Any] = await resp.json()
        assert resp.status == 200, data
        return data

    async def wait_status(
        self, job_id: str, *statuses: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Poll the detail until the job is in one of `statuses` (engine work, not clock time)."""
        body: dict[str, Any] = {}

        async def check() -> bool:
            nonlocal body
            body = await self.detail(job_id)
            return body["status"] in statuses

        await wait_until(check, timeout)
        return body


def record_threads(
    monkeypatch: pytest.MonkeyPatch, owner: object, name: str
) -> list[threading.Thread]:
    """Replace `owner.name` with a wrapper that records the thread each call runs on."""
    threads: list[threading.Thread] = []
    real = getattr(owner, name)

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return threads


async def wait_until(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Let the event loop run until predicate() holds. Bounded; this waits on work, not time."""
    async with asyncio.timeout(timeout):
        while not await predicate():  # noqa: ASYNC110 - polls another component
            await asyncio.sleep(0.005)


StartApp = Callable[..., Awaitable[Running]]


class ServedLikeServe(TestServer):
    """aiohttp's test server, but with handler_cancellation off, as `dialer serve` runs: a
    client that disconnects does not cancel the handler serving it (its next write fails)."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs["handler_cancellation"] = False
        return web.AppRunner(self.app, **kwargs)


@pytest.fixture
async def start_app(tmp_path: Path) -> AsyncIterator[StartApp]:
    """Start the real app on 127.0.0.1 with a fake clock. Call with config overrides."""
    started: list[TestClient[web.Request, web.Application]] = []

    async def start(
        config: configmod.Config | None = None,
        *,
        provider: Provider | None = None,
        clock: FakeClock | None = None,
    ) -> Running:
        cfg = config or make_config(tmp_path)
        fake = clock or FakeClock()
        app = create_app(cfg, clock=fake, provider=provider)
        client = TestClient(ServedLikeServe(app, host="127.0.0.1"))
        await client.start_server()
        started.append(client)
        store = app[appkeys.STORE]
        _, key = await keys.create_key(store, fake, ORG)
        _, other = await keys.create_key(store, fake, OTHER_ORG)
        return Running(client=client, app=app, clock=fake, key=key, other_key=other)

    yield start
    for client in started:
        await client.close()


@pytest.fixture
async def running(start_app: StartApp) -> Running:
    return await start_app()
