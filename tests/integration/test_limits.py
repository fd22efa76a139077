"""Rate limits per API key (token bucket, headers on every answer) and quotas per organization."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from api.ratelimit import RateLimiter
from tests.conftest import NUMBER, ORG, OTHER_ORG, Running, StartApp, make_config


def limited(tmp_path: Path, **server: Any) -> Any:
    return make_config(tmp_path, server={"requests_per_second": 2.0, "burst": 5, **server})


async def get_jobs(running: Running, key: str | None = None) -> Any:
    return await running.client.get(
        "/batch/jobs", params={"organizationId": ORG}, headers=running.headers(key)
    )


async def test_burst_then_429_with_retry_after(start_app: StartApp, tmp_path: Path) -> None:
    """Five requests pass, the sixth is 429 rate_limited; a second later two more pass."""
    running = await start_app(limited(tmp_path))
    remaining = []
    for _ in range(5):
        resp = await get_jobs(running)
        assert resp.status == 200
        assert resp.headers["RateLimit-Limit"] == "5"
        remaining.append(resp.headers["RateLimit-Remaining"])
    assert remaining == ["4", "3", "2", "1", "0"]
    resp = await get_jobs(running)
    body = await resp.json()
    assert (resp.status, body["code"]) == (429, "rate_limited")
    assert resp.headers["Retry-After"] == "1"
    assert resp.headers["RateLimit-Remaining"] == "0"
    assert resp.headers["RateLimit-Reset"] == "3"  # 5 tokens at 2 per second
    await running.clock.advance(1.0)
    assert [(await get_jobs(running)).status for _ in range(3)] == [200, 200, 429]


async def test_limits_are_per_key_and_on_error_answers(start_app: StartApp, tmp_path: Path) -> None:
    """Another key has its own bucket; a 404 also carries the headers."""
    running = await start_app(limited(tmp_path))
    for _ in range(6):
        await get_jobs(running)
    resp = await running.client.get("/batch/jobs/nope", headers=running.headers(running.other_key))
    assert resp.status == 404
    assert resp.headers["RateLimit-Remaining"] == "4"
    assert "Retry-After" not in resp.headers
    resp = await running.client.get("/v1/voiceai/batch-calling/nope", headers=running.headers())
    assert resp.status == 429
    assert (await resp.json())["detail"]["status"] == "rate_limited"


def test_limiter_refills_to_the_burst_and_forgets_idle_keys() -> None:
    """Tokens refill at the rate up to the burst; idle full buckets are dropped."""
    limiter = RateLimiter(requests_per_second=10, burst=3)
    assert [limiter.check("k", 0.0).allowed for _ in range(4)] == [True, True, True, False]
    decision = limiter.check("k", 100.0)
    assert (decision.allowed, decision.remaining) == (True, 2)
    for i in range(10_000):
        limiter.check(f"other{i}", 200.0)
    assert "k" not in limiter._buckets


def test_limiter_after_the_clock_steps_back_neither_gains_nor_stalls() -> None:
    """A wall clock stepped back (NTP, a resumed VM) gives no request, and the key refills from
    the new time on: no 429s until the clock is back where it was."""
    limiter = RateLimiter(requests_per_second=10, burst=3)
    assert [limiter.check("k", 3600.0).allowed for _ in range(4)] == [True, True, True, False]
    assert not limiter.check("k", 0.0).allowed
    assert limiter.check("k", 0.1).allowed
    assert not limiter.check("k", 0.1).allowed


def quota_config(tmp_path: Path, **org: Any) -> Any:
    return make_config(tmp_path, organizations=[{"id": ORG, **org}, {"id": OTHER_ORG}])


async def create(running: Running, contacts: int, key: str | None = None) -> tuple[int, Any]:
    body = {
        "fromPhoneNumberId": NUMBER if key is None else "num_b",
        "name": "q",
        "scheduledStartTime": "2026-06-01T09:00:00Z",
        "contacts": [{"phone": f"+1202555{i:04d}"} for i in range(contacts)],
    }
    resp = await running.client.post("/batch/create", json=body, headers=running.headers(key))
    return resp.status, await resp.json()


async def test_max_active_jobs_quota(start_app: StartApp, tmp_path: Path) -> None:
    """A third unfinished job over max_active_jobs=2 is 429 quota_exceeded; a cancel frees one."""
    running = await start_app(quota_config(tmp_path, max_active_jobs=2))
    first = (await create(running, 1))[1]["batchJobId"]
    assert (await create(running, 1))[0] == 201
    status, body = await create(running, 1)
    assert (status, body["code"], body["quota"]) == (429, "quota_exceeded", "max_active_jobs")
    assert "max_active_jobs" in body["error"]
    assert (await create(running, 1, running.other_key))[0] == 201  # another organization
    resp = await running.client.post(f"/batch/jobs/{first}/cancel", headers=running.headers())
    assert resp.status == 200
    assert (await create(running, 1))[0] == 201


async def test_max_stored_contacts_quota(start_app: StartApp, tmp_path: Path) -> None:
    """Contacts over max_stored_contacts are 429 quota_exceeded naming the quota."""
    running = await start_app(quota_config(tmp_path, max_stored_contacts=5))
    assert (await create(running, 3))[0] == 201
    status, body = await create(running, 3)
    assert (status, body["code"]) == (429, "quota_exceeded")
    assert "max_stored_contacts" in body["error"]
    assert (await create(running, 2))[0] == 201
