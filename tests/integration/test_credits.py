"""Credits hold under concurrency: reservations at create, pause when spent, release at the end."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from dialer.config import SimulatedRule
from tests.conftest import NUMBER, ORG, OTHER_ORG, Running, StartApp, make_config, wait_until

FUTURE = "2026-06-01T09:00:00Z"  # the fake clock starts at 2026-01-01


def credits_config(tmp_path: Path, credits: float, call_seconds: float = 0) -> Any:
    """$1 per contact estimated (60 s at $1/min); answered calls last `call_seconds`."""
    return make_config(
        tmp_path,
        organizations=[{"id": ORG, "credits_usd": credits}, {"id": OTHER_ORG}],
        pricing={"usd_per_minute": 1.0},
        engine={"default_call_seconds": 60},
        telephony={"simulated": {"call_seconds": call_seconds}},
    )


async def create(running: Running, contacts: int, **fields: Any) -> tuple[int, Any]:
    body = {
        "fromPhoneNumberId": NUMBER,
        "name": "credits",
        "contacts": [{"phone": f"+1202555{i:04d}"} for i in range(contacts)],
        **fields,
    }
    resp = await running.client.post("/batch/create", json=body, headers=running.headers())
    return resp.status, await resp.json()


async def test_twenty_racing_creates_never_reserve_more_than_the_credits(
    start_app: StartApp, tmp_path: Path
) -> None:
    """20 concurrent $1 creates against $5 of credits: exactly 5 are created, 15 answer 402."""
    running = await start_app(credits_config(tmp_path, 5.0))
    answers = await asyncio.gather(
        *(create(running, 1, scheduledStartTime=FUTURE) for _ in range(20))
    )
    statuses = sorted(status for status, _ in answers)
    assert statuses == [201] * 5 + [402] * 15
    assert {body["code"] for status, body in answers if status == 402} == {"insufficient_credits"}
    resp = await running.client.get(
        "/batch/jobs", params={"organizationId": ORG}, headers=running.headers()
    )
    assert (await resp.json())["total"] == 5


async def test_a_finished_job_releases_what_it_did_not_spend(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A $2 job that spends $1 leaves $1 to reserve once it is done, and not before."""
    running = await start_app(credits_config(tmp_path, 2.0, call_seconds=30))
    status, body = await create(running, 2)
    assert status == 201, body
    job_id = body["batchJobId"]
    assert (await create(running, 1))[0] == 402  # all $2 are reserved while it runs
    await wait_until(lambda: dialing(running, job_id, 2))
    await running.clock.advance(30)
    await running.wait_status(job_id, "completed")
    status, body = await create(running, 1, scheduledStartTime=FUTURE)  # $1 spent, $1 free
    assert status == 201, body
    status, body = await create(running, 1, scheduledStartTime=FUTURE)
    assert (status, body["code"]) == (402, "insufficient_credits")


async def test_running_jobs_pause_when_spend_reaches_credits(
    start_app: StartApp, tmp_path: Path
) -> None:
    """A call that costs more than estimated uses up the credits: the job pauses, dials no one."""
    running = await start_app(credits_config(tmp_path, 2.0, call_seconds=120))
    status, body = await create(running, 2, concurrentCallLimit=1)
    assert status == 201, body
    job_id = body["batchJobId"]
    await wait_until(lambda: dialing(running, job_id, 1))
    await running.clock.advance(120)  # $2 charged: the credits are spent
    detail = await running.wait_status(job_id, "paused")
    assert detail["pauseReason"] == "Credits exhausted"
    assert detail["statusBreakdown"]["completed"] == 1
    assert detail["statusBreakdown"]["pending"] == 1
    await running.clock.advance(600)
    await wait_until(lambda: engine_idle(running))
    detail = await running.detail(job_id)
    assert (detail["status"], detail["statusBreakdown"]["dialing"]) == ("paused", 0)
    assert running.engine.live_calls(job_id) == 0
    resp = await running.client.post(f"/batch/jobs/{job_id}/resume", headers=running.headers())
    answer = await resp.json()
    assert (resp.status, answer["code"]) == (402, "insufficient_credits")
    assert (await running.detail(job_id))["status"] == "paused"


async def test_a_job_paused_for_credits_with_nothing_left_completes(
    start_app: StartApp, tmp_path: Path
) -> None:
    """The credits run out while the job's last call is still live: the job pauses, and when
    that call ends with nothing left to dial it completes (resuming, refused without credits,
    could never finish it)."""
    config = credits_config(tmp_path, 2.0, call_seconds=120)
    rule = {"prefix": "+12025550001", "outcome": "completed", "seconds": 300}
    config.telephony.simulated.rules.append(SimulatedRule.model_validate(rule))
    running = await start_app(config)
    status, body = await create(running, 2, concurrentCallLimit=2)
    assert status == 201, body
    job_id = body["batchJobId"]
    await wait_until(lambda: dialing(running, job_id, 2))
    await running.clock.advance(120)  # $2 charged: the credits are spent, one call still live
    detail = await running.wait_status(job_id, "paused")
    assert detail["statusBreakdown"]["dialing"] == 1
    await running.clock.advance(180)  # the last call ends
    detail = await running.wait_status(job_id, "completed")
    assert detail["statusBreakdown"]["completed"] == 2
    assert detail.get("pauseReason") is None


async def test_a_paused_job_with_nothing_left_resumes_without_credits(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Paused by its operator while its last calls were live, which then spent the credits:
    resuming needs no credits (nothing it does can spend them) and the job completes."""
    running = await start_app(credits_config(tmp_path, 2.0, call_seconds=120))
    status, body = await create(running, 2, concurrentCallLimit=2)
    assert status == 201, body
    job_id = body["batchJobId"]
    await wait_until(lambda: dialing(running, job_id, 2))
    resp = await running.client.post(f"/batch/jobs/{job_id}/pause", headers=running.headers())
    assert resp.status == 200, await resp.text()
    await running.clock.advance(120)  # both end: $4 spent of $2, nothing left to dial

    async def both_ended() -> bool:
        return (await running.detail(job_id))["statusBreakdown"]["completed"] == 2

    await wait_until(both_ended)
    assert (await running.detail(job_id))["status"] == "paused"
    resp = await running.client.post(f"/batch/jobs/{job_id}/resume", headers=running.headers())
    assert resp.status == 200, await resp.text()
    await running.wait_status(job_id, "completed")


async def dialing(running: Running, job_id: str, n: int) -> bool:
    """n calls of the job are live and waiting on the fake clock."""
    detail = await running.detail(job_id)
    return (
        detail["statusBreakdown"]["dialing"] == n
        and running.engine.idle.is_set()
        and running.clock.sleeping >= n
    )


async def engine_idle(running: Running) -> bool:
    return running.engine.idle.is_set()
