"""The scheduler through the API with a fake clock: retries, schedules, cancel, limits."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dialer import scheduler
from dialer.clock import Clock, FakeClock
from dialer.providers.base import DialRequest, DialResult
from dialer.providers.simulated import SimulatedProvider
from dialer.states import ContactStatus
from tests.conftest import NUMBER, ORG, OTHER_ORG, Running, StartApp, make_config, wait_until


def phones(n: int, start: int = 101) -> list[dict[str, Any]]:
    return [{"phone": f"+1202555{start + i:04d}"} for i in range(n)]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class CountingProvider(SimulatedProvider):
    """The simulated provider, recording how many calls are live at once, per job and overall."""

    def __init__(self, config: Any, clock: Clock) -> None:
        super().__init__(config.telephony.simulated, clock)
        self.clock_ = clock
        self.live: Counter[str] = Counter()
        self.max_live: Counter[str] = Counter()
        self.max_total = 0
        self.job_org: dict[str, str] = {}
        self.max_org: Counter[str] = Counter()
        self.dial_times: list[float] = []

    async def dial(self, request: DialRequest) -> DialResult:
        self.dial_times.append(self.clock_.now())
        self.live[request.job_id] += 1
        self.max_live[request.job_id] = max(
            self.max_live[request.job_id], self.live[request.job_id]
        )
        self.max_total = max(self.max_total, sum(self.live.values()))
        for org in set(self.job_org.values()):
            live = sum(n for j, n in self.live.items() if self.job_org.get(j) == org)
            self.max_org[org] = max(self.max_org[org], live)
        try:
            return await super().dial(request)
        finally:
            self.live[request.job_id] -= 1


async def run_until_done(running: Running, job_ids: list[str], step: float = 1.0) -> None:
    """Advance the fake clock step by step until every job is finished."""

    async def finished() -> bool:
        for job_id in job_ids:
            if (await running.detail(job_id))["status"] not in ("completed", "cancelled"):
                return False
        return True

    for _ in range(10_000):
        if await finished():
            return
        await running.clock.advance(step)
        await wait_until(lambda: _parked(running))
    raise AssertionError("jobs did not finish")


async def _parked(running: Running) -> bool:
    return running.engine.idle.is_set()


async def test_busy_number_is_retried_with_backoff(start_app: StartApp, tmp_path: Path) -> None:
    """A busy number is queued 300 s, then 600 s later, then ends busy after maxAttempts."""
    config = make_config(
        tmp_path, telephony={"simulated": {"rules": [{"prefix": "+1202555", "outcome": "busy"}]}}
    )
    running = await start_app(config)
    created = await running.create_json(phones(1))
    job_id = created["batchJobId"]

    async def contact() -> dict[str, Any]:
        contacts: list[dict[str, Any]] = (await running.detail(job_id))["contacts"]
        return contacts[0]

    async def attempts(n: int) -> bool:
        c = await contact()
        return bool(c["attemptCount"] == n and c["status"] != "dialing")

    await wait_until(lambda: attempts(1))
    first = await contact()
    assert first["status"] == "queued"
    assert parse(first["nextRetryAt"]) - parse(first["lastAttemptAt"]) == 300
    estimate = (await running.detail(job_id))["estimatedCompletionTime"]
    assert parse(estimate) > parse(first["nextRetryAt"])
    await running.clock.advance(299)
    await wait_until(lambda: _parked(running))
    assert (await contact())["attemptCount"] == 1
    await running.clock.advance(1)
    await wait_until(lambda: attempts(2))
    second = await contact()
    assert second["status"] == "queued"
    assert parse(second["nextRetryAt"]) - parse(second["lastAttemptAt"]) == 600
    await running.clock.advance(600)
    await wait_until(lambda: attempts(3))
    body = await running.wait_status(job_id, "completed")
    last = body["contacts"][0]
    assert (last["status"], last["attemptCount"], last["errorCode"]) == ("busy", 3, "486")
    history = await running.store.list_attempts(int(last["id"].removeprefix("contact_")))
    assert [a.attempt_no for a in history] == [1, 2, 3]
    assert all(a.outcome == "busy" and a.sip_code == 486 for a in history)
    assert len({a.room_name for a in history}) == 3


async def test_agent_not_joined_streak_pauses_the_job_and_other_results_reset_it(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Attempts whose agent did not join are given back (retried 10 s later, attemptCount
    unchanged, counted apart in the metrics); a call in between ends the streak; three in a row
    pause the job, saying why."""
    no_agent = ["+12025550101", "+12025550102", "+12025550104", "+12025550105"]
    rules = [{"prefix": p, "agent_joins": False, "seconds": 0} for p in no_agent]
    config = make_config(tmp_path, telephony={"simulated": {"rules": rules}})
    running = await start_app(config)
    created = await running.create_json(phones(5), concurrentCallLimit=1)
    job_id = created["batchJobId"]

    async def settled() -> bool:
        body = await running.detail(job_id)
        statuses = {c["status"] for c in body["contacts"]}
        return not statuses & {"pending", "dialing"} and await _parked(running)

    await wait_until(settled)  # 101, 102 not joined; 103 called; 104, 105 not joined
    body = await running.detail(job_id)
    assert (body["status"], body["pauseReason"]) == ("running", None)
    contacts = {c["phoneNumber"]: c for c in body["contacts"]}
    assert contacts["+12025550103"]["status"] == "completed"
    retry_at = iso(running.clock.now() + scheduler.NOT_PLACED_BACKOFF_SECONDS)
    for phone in no_agent:
        assert contacts[phone]["status"] == "queued"
        assert (contacts[phone]["attemptCount"], contacts[phone]["nextRetryAt"]) == (0, retry_at)
        assert contacts[phone]["failureReason"] is None

    await running.clock.advance(scheduler.NOT_PLACED_BACKOFF_SECONDS)  # 101 again: 3 in a row
    body = await running.wait_status(job_id, "paused")
    assert body["pauseReason"] == "Agent 'agent-a' did not join within 0 s, 3 times in a row"
    assert body["statusBreakdown"]["queued"] == 4
    assert all(c["attemptCount"] == 0 for c in body["contacts"] if c["phoneNumber"] in no_agent)
    assert running.engine.stats.dials[("agent_not_joined", None)] == 5  # in /metrics


async def test_scheduled_job_starts_on_time(running: Running) -> None:
    """A scheduled job waits for its time, then starts without polling."""
    start = running.clock.now() + 3600
    created = await running.create_json(phones(2), scheduledStartTime=iso(start))
    job_id = created["batchJobId"]
    assert created["status"] == "scheduled"
    await running.clock.advance(3599)
    await wait_until(lambda: _parked(running))
    body = await running.detail(job_id)
    assert body["status"] == "scheduled"
    assert body["statusBreakdown"]["pending"] == 2
    await running.clock.advance(1)
    body = await running.wait_status(job_id, "completed")
    assert body["actualStartTime"] == iso(start)


async def test_start_now_and_reschedule(running: Running) -> None:
    """A scheduled job can be rescheduled, then started now; finished jobs refuse both."""
    created = await running.create_json(
        phones(1), scheduledStartTime=iso(running.clock.now() + 3600)
    )
    job_id = created["batchJobId"]
    path = f"/batch/jobs/{job_id}"
    resp = await running.client.patch(
        f"{path}/reschedule",
        json={"scheduledStartTime": "2030-03-01T09:00:00", "timezone": "Europe/Paris"},
        headers=running.headers(),
    )
    body = await resp.json()
    assert resp.status == 200, body
    assert body["scheduledStartTime"] == "2030-03-01T08:00:00Z"
    for bad, code in [
        ({"scheduledStartTime": "2001-01-01T00:00:00Z"}, "past_scheduled_time"),
        ({"scheduledStartTime": "9999-12-31T23:59:59-14:00"}, "invalid_scheduled_time"),
        (
            {"scheduledStartTime": "2030-01-01T00:00:00", "timezone": "Nowhere/X"},
            "invalid_timezone",
        ),
        ({"scheduledStartTime": 5}, "validation_error"),
        ({}, "validation_error"),
    ]:
        resp = await running.client.patch(f"{path}/reschedule", json=bad, headers=running.headers())
        assert resp.status == 400
        assert (await resp.json())["code"] == code
    resp = await running.client.post(f"{path}/start", headers=running.headers())
    assert resp.status == 200
    assert (await resp.json())["status"] == "running"
    await running.wait_status(job_id, "completed")
    resp = await running.client.post(f"{path}/start", headers=running.headers())
    assert (resp.status, (await resp.json())["code"]) == (400, "job_not_startable")
    resp = await running.client.patch(
        f"{path}/reschedule",
        json={"scheduledStartTime": "2031-01-01T00:00:00Z"},
        headers=running.headers(),
    )
    assert (resp.status, (await resp.json())["code"]) == (400, "job_not_reschedulable")


async def test_reschedule_refuses_a_start_at_or_after_the_expiry(running: Running) -> None:
    """Reschedule refuses a start at or after the job's expiresAt as create does (400
    invalid_expires_at) and keeps the start it had; an earlier one is taken."""
    now = running.clock.now()
    created = await running.create_json(
        phones(1), scheduledStartTime=iso(now + 600), expiresAt=iso(now + 900)
    )
    path = f"/batch/jobs/{created['batchJobId']}"
    for when in (now + 900, now + 3600):
        resp = await running.client.patch(
            f"{path}/reschedule", json={"scheduledStartTime": iso(when)}, headers=running.headers()
        )
        assert (resp.status, (await resp.json())["code"]) == (400, "invalid_expires_at")
    detail = await running.detail(created["batchJobId"])
    assert (detail["status"], detail["scheduledStartTime"]) == ("scheduled", iso(now + 600))
    resp = await running.client.patch(
        f"{path}/reschedule", json={"scheduledStartTime": iso(now + 899)}, headers=running.headers()
    )
    assert (resp.status, (await resp.json())["scheduledStartTime"]) == (200, iso(now + 899))


async def test_cancel_lets_live_calls_finish(start_app: StartApp, tmp_path: Path) -> None:
    """Cancel stops new dials, cancels pending contacts, and records live calls when they end."""
    config = make_config(tmp_path, telephony={"simulated": {"call_seconds": 60}})
    running = await start_app(config)
    created = await running.create_json(phones(5), concurrentCallLimit=2)
    job_id = created["batchJobId"]

    async def two_dialing() -> bool:
        return bool((await running.detail(job_id))["statusBreakdown"]["dialing"] == 2)

    await wait_until(two_dialing)
    resp = await running.client.post(f"/batch/jobs/{job_id}/cancel", headers=running.headers())
    body = await resp.json()
    assert resp.status == 200, body
    assert (body["status"], body["contactsCancelled"]) == ("cancelled", 3)
    detail = await running.detail(job_id)
    assert detail["statusBreakdown"]["cancelled"] == 3
    assert detail["statusBreakdown"]["dialing"] == 2
    await running.clock.advance(60)

    async def recorded() -> bool:
        return bool((await running.detail(job_id))["statusBreakdown"]["completed"] == 2)

    await wait_until(recorded)
    detail = await running.detail(job_id)
    assert detail["status"] == "cancelled"
    assert sum(detail["statusBreakdown"].values()) == 5
    resp = await running.client.post(f"/batch/jobs/{job_id}/cancel", headers=running.headers())
    assert (resp.status, (await resp.json())["code"]) == (400, "job_not_cancellable")


async def test_two_cancels_at_once_the_loser_is_told_the_job_is_cancelled(
    running: Running,
) -> None:
    """Both read the job running; one cancels it; the other's refusal names the status the
    job has now, not the one it read."""
    created = await running.create_json(phones(3), scheduledStartTime="2099-01-01T00:00:00Z")
    job_id = created["batchJobId"]
    path = f"/batch/jobs/{job_id}/cancel"
    answers = await asyncio.gather(
        *(running.client.post(path, headers=running.headers()) for _ in range(2))
    )
    bodies = sorted([(r.status, await r.json()) for r in answers], key=lambda a: a[0])
    assert [status for status, _ in bodies] == [200, 400]
    assert "already cancelled" in bodies[1][1]["error"], bodies[1][1]


async def test_job_concurrency_limit_holds_for_whole_calls(
    start_app: StartApp, tmp_path: Path
) -> None:
    """No job ever has more live calls than its concurrentCallLimit, and it uses all of them."""
    config = make_config(tmp_path, telephony={"simulated": {"call_seconds": 10}})
    clock = FakeClock()
    provider = CountingProvider(config, clock)
    running = await start_app(config, provider=provider, clock=clock)
    created = await running.create_json(phones(20), concurrentCallLimit=3)
    await run_until_done(running, [created["batchJobId"]], step=5)
    assert provider.max_live[created["batchJobId"]] == 3
    # 20 calls of 10 s, 3 at a time: 7 waves; a slot is held until the call ends.
    assert running.clock.now() - FakeClock().now() >= 70


async def test_organization_and_global_caps(start_app: StartApp, tmp_path: Path) -> None:
    """Per-organization and global caps hold at once across several jobs."""
    config = make_config(
        tmp_path,
        engine={"max_concurrent_calls": 5},
        organizations=[
            {"id": ORG, "max_concurrent_calls": 3},
            {"id": OTHER_ORG},
        ],
        telephony={"simulated": {"call_seconds": 10}},
    )
    clock = FakeClock()
    provider = CountingProvider(config, clock)
    running = await start_app(config, provider=provider, clock=clock)
    a1 = (await running.create_json(phones(10), concurrentCallLimit=3))["batchJobId"]
    a2 = (await running.create_json(phones(10, 300), concurrentCallLimit=3))["batchJobId"]
    resp = await running.client.post(
        "/batch/create",
        json={
            "fromPhoneNumberId": "num_b",
            "name": "b",
            "contacts": phones(10, 500),
            "concurrentCallLimit": 10,
        },
        headers=running.headers(running.other_key),
    )
    b1 = (await resp.json())["batchJobId"]
    provider.job_org.update({a1: ORG, a2: ORG, b1: OTHER_ORG})
    await run_until_done(running, [a1, a2], step=5)
    assert provider.max_org[ORG] == 3
    assert provider.max_total == 5
    assert max(provider.max_live[a1], provider.max_live[a2]) <= 3
    assert provider.max_live[a1] >= 1 and provider.max_live[a2] >= 1


async def test_calls_per_second_limit(start_app: StartApp, tmp_path: Path) -> None:
    """Dials from one caller number never exceed its calls_per_second."""
    config = make_config(tmp_path)
    numbers = [p.model_dump() for p in config.phone_numbers]
    numbers[0]["calls_per_second"] = 2
    config = make_config(tmp_path, phone_numbers=numbers)
    clock = FakeClock()
    provider = CountingProvider(config, clock)
    running = await start_app(config, provider=provider, clock=clock)
    created = await running.create_json(phones(20), concurrentCallLimit=50)
    await run_until_done(running, [created["batchJobId"]], step=0.25)
    times = sorted(provider.dial_times)
    assert len(times) == 20
    # Token bucket of 2/s with a burst of 2: any window of one second holds at most 4 dials
    # (a full bucket plus one second of refill); after the burst of 2, 18 dials at 2/s need 9 s
    # from the bucket's start, which can precede the first recorded dial by one clock step.
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u < t + 1.0) <= 4
    assert times[-1] - times[0] >= 9 - 0.25


async def test_jobs_share_global_slots_fairly(start_app: StartApp, tmp_path: Path) -> None:
    """With one global slot, two running jobs take turns instead of one starving the other."""
    config = make_config(
        tmp_path,
        engine={"max_concurrent_calls": 1},
        telephony={"simulated": {"call_seconds": 10}},
    )
    clock = FakeClock()
    provider = CountingProvider(config, clock)
    running = await start_app(config, provider=provider, clock=clock)
    first = (await running.create_json(phones(4)))["batchJobId"]
    second = (await running.create_json(phones(4, 300)))["batchJobId"]

    async def one_call_waits_on_the_clock() -> bool:
        return bool(
            sum(provider.live.values()) == 1
            and running.clock.sleeping >= 1
            and running.engine.idle.is_set()
        )

    async def ended(n: int) -> bool:
        counts = [(await running.detail(j))["statusBreakdown"] for j in (first, second)]
        return sum(c["completed"] for c in counts) == n

    for n in range(4):  # (each round: the live call ends, its successor starts)
        await wait_until(one_call_waits_on_the_clock)
        await running.clock.advance(10)
        await wait_until(lambda n=n: ended(n + 1))
    done = [(await running.detail(j))["statusBreakdown"]["completed"] for j in (first, second)]
    assert min(done) >= 1, done
    assert provider.max_total == 1


async def test_number_without_jobs_is_untouched(running: Running) -> None:
    """Jobs of one number do not consume another's rate-limit tokens (sanity of the fixture)."""
    created = await running.create_json(phones(3))
    body = await running.wait_status(created["batchJobId"], "completed")
    assert body["fromPhoneNumberId"] == NUMBER


async def test_cycles_stay_small_while_requests_are_served_and_serve_jobs_in_turn(
    start_app: StartApp, tmp_path: Path
) -> None:
    """With a request in flight a cycle claims at most CYCLE_MAX_SERVING contacts, in batches of
    at least MIN_SHARE per job; the job it could not serve comes first in the next cycle; jobs
    held back only by their share get the slots left over."""
    config = make_config(
        tmp_path,
        engine={"max_concurrent_calls": 1000},
        telephony={"simulated": {"call_seconds": 60}},
    )
    running = await start_app(config)
    cycles: list[dict[str, int]] = []
    real_cycle = running.store.cycle

    async def recording(*args: Any, **kwargs: Any) -> Any:
        if args[2]:
            cycles.append(dict(args[2]))  # the claims wanted, per job
        return await real_cycle(*args, **kwargs)

    running.store.cycle = recording  # type: ignore[method-assign]
    start = running.clock.now() + 60
    jobs = sorted(
        [
            (
                await running.create_json(
                    phones(50, 100 * i), concurrentCallLimit=50, scheduledStartTime=iso(start)
                )
            )["batchJobId"]
            for i in range(20)
        ]
    )
    running.engine.foreground.enter()  # a request is in flight throughout
    try:
        await running.clock.advance(60)  # all twenty start together

        async def all_dialing() -> bool:
            return running.engine.live_calls() == 1000

        await wait_until(all_dialing)
    finally:
        running.engine.foreground.leave()
    assert scheduler.CYCLE_MAX_SERVING == 400
    assert all(sum(c.values()) <= scheduler.CYCLE_MAX_SERVING for c in cycles)
    first, second = cycles[0], cycles[1]
    assert first == {**{job: 32 for job in jobs[:12]}, jobs[12]: 16}
    assert next(iter(second)) == jobs[13]  # round-robin resumes with the first job left out
    assert sum(sum(c.values()) for c in cycles) == 1000


async def start_together(running: Running, total: int, offset: int, *, serving: bool) -> None:
    """Create jobs of `total` contacts in all (at most 50 each, limit = size) that start at
    the same time, start them (with a request in flight throughout when `serving`) and wait
    until every contact is dialing."""
    live = running.engine.live_calls()
    start = running.clock.now() + 60
    for first in range(0, total, 50):
        size = min(50, total - first)
        await running.create_json(
            phones(size, offset + first), concurrentCallLimit=size, scheduledStartTime=iso(start)
        )
    if serving:
        running.engine.foreground.enter()
    try:
        await running.clock.advance(60)

        async def dialing() -> bool:
            return running.engine.live_calls() == live + total

        await wait_until(dialing)
    finally:
        if serving:
            running.engine.foreground.leave()


async def test_cycles_up_to_their_size_are_written_on_the_loops_own_connection(
    start_app: StartApp, tmp_path: Path
) -> None:
    """While no requests are being served, a cycle of up to QUIET_CYCLE outcomes and claims asks
    to be written on the event loop's connection; while they are, only up to SMALL_CYCLE; a
    bigger cycle always goes to the writer."""
    config = make_config(
        tmp_path,
        # (Nothing claimed ahead: a job's first round would be, in the next jobs' first cycle.)
        engine={"max_concurrent_calls": 1000, "claim_ahead_seconds": 0},
        telephony={"simulated": {"call_seconds": 3600}},  # all live till the end
    )
    running = await start_app(config)
    asked: list[tuple[int, bool]] = []
    real_cycle = running.store.cycle

    async def recording(*args: Any, **kwargs: Any) -> Any:
        if args[2]:
            asked.append((sum(args[2].values()), kwargs["here"]))
        return await real_cycle(*args, **kwargs)

    running.store.cycle = recording  # type: ignore[method-assign]
    # Each look at the time is a second later: the requests that create the jobs are never a
    # stream (which would keep cycles small, see Foreground).
    ticks = itertools.count()
    running.engine.foreground = scheduler.Foreground(monotonic=lambda: float(next(ticks)))

    async def dial(total: int, offset: int, *, serving: bool = False) -> tuple[int, bool]:
        """Start jobs of `total` contacts in all at once; the first cycle."""
        asked.clear()
        await start_together(running, total, offset, serving=serving)
        return asked[0]

    assert await dial(scheduler.QUIET_CYCLE, 1000) == (scheduler.QUIET_CYCLE, True)
    assert await dial(scheduler.QUIET_CYCLE + 1, 2000) == (scheduler.QUIET_CYCLE + 1, False)
    assert await dial(scheduler.SMALL_CYCLE, 3000, serving=True) == (scheduler.SMALL_CYCLE, True)
    assert await dial(scheduler.SMALL_CYCLE + 1, 4000, serving=True) == (
        scheduler.SMALL_CYCLE + 1,
        False,
    )


class TimingOutProvider(SimulatedProvider):
    """A provider whose dial gives up at once through `asyncio.timeout`, as a LiveKit dial
    (aiohttp) does when its request times out."""

    async def dial(self, request: DialRequest) -> DialResult:
        try:
            async with asyncio.timeout(0):  # expires on the next turn of the event loop
                await asyncio.Event().wait()
        except TimeoutError:
            pass
        return DialResult(
            status=ContactStatus.FAILED, reason="dial timed out", ended_at=self._clock.now()
        )


async def test_a_dial_that_times_out_ends_its_call_not_the_engine(
    start_app: StartApp, tmp_path: Path
) -> None:
    """`asyncio.timeout` (and aiohttp's request timeouts) cancel the task that was current when
    they started: a call's dial must run in the call's own task, never in the engine's (a call
    started eagerly inside the engine's cycle would take the engine down with its timeout)."""
    config = make_config(tmp_path)
    clock = FakeClock()
    provider = TimingOutProvider(config.telephony.simulated, clock)
    running = await start_app(config, provider=provider, clock=clock)
    created = await running.create_json(phones(3), maxAttempts=1)
    body = await running.wait_status(created["batchJobId"], "completed")
    assert body["statusBreakdown"]["failed"] == 3
    assert running.engine.running and not running.engine.stopping


async def test_slots_a_job_left_unused_go_to_a_job_held_back_by_its_share(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Global cap 60, jobs of limit 50 and 10: the first is offered its share (32), the second
    takes only 10, and the 18 slots left over go to the first in the same cycle: 60 live."""
    config = make_config(
        tmp_path,
        engine={"max_concurrent_calls": 60},
        telephony={"simulated": {"call_seconds": 60}},
    )
    running = await start_app(config)
    start = running.clock.now() + 60
    wide = await running.create_json(
        phones(100), concurrentCallLimit=50, scheduledStartTime=iso(start)
    )
    await running.clock.advance(1)  # created first, so served first
    narrow = await running.create_json(
        phones(100, 300), concurrentCallLimit=10, scheduledStartTime=iso(start)
    )
    await running.clock.advance(59)
    await wait_until(lambda: _parked(running))
    assert running.engine.live_calls(wide["batchJobId"]) == 50
    assert running.engine.live_calls(narrow["batchJobId"]) == 10


async def test_no_call_starts_before_its_claim_is_flushed_and_the_api_answers_meanwhile(
    start_app: StartApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event loop's connection commits into the system's cache and a thread flushes the
    log: while the disk stalls that flush, the engine starts none of the calls it claimed, and
    the API goes on answering (it once froze with the disk). Once flushed, the calls start."""
    import threading

    from storage import store as storemod

    config = make_config(tmp_path, telephony={"simulated": {"call_seconds": 60}})
    running = await start_app(config)
    assert running.store._inline is not None  # a file database: the loop's own connection
    dialed = running.engine.provider
    assert isinstance(dialed, SimulatedProvider)
    start = running.clock.now() + 60
    job_id = (
        await running.create_json(phones(2), concurrentCallLimit=2, scheduledStartTime=iso(start))
    )["batchJobId"]
    stalled, released = threading.Event(), threading.Event()
    real_flush = storemod.flush_file

    flushes = itertools.count()

    def stalling_flush(fd: int) -> None:
        if next(flushes) >= 1:  # the job's start passes; its first claims' flush stalls
            stalled.set()
            assert released.wait(10)
        real_flush(fd)

    monkeypatch.setattr(storemod, "flush_file", stalling_flush)
    await running.clock.advance(60)  # the job starts: its start and first claims are written
    assert await asyncio.to_thread(stalled.wait, 10)
    for _ in range(20):  # the loop turns while the disk stalls
        await asyncio.sleep(0)
    assert dialed.dials == 0 and running.engine.live_calls() == 0
    resp = await running.client.get(f"/batch/jobs/{job_id}", headers=running.headers())
    assert resp.status == 200  # claimed (committed) but not yet on the disk: not dialed,
    breakdown = (await resp.json())["statusBreakdown"]  # and not shown as live calls either
    assert (breakdown["dialing"], breakdown["pending"]) == (0, 2)
    released.set()

    async def both_dialed() -> bool:
        return dialed.dials == 2

    await wait_until(both_dialed)


async def test_a_big_cycle_starts_its_calls_in_chunks_while_requests_are_served(
    start_app: StartApp, tmp_path: Path
) -> None:
    """While a request is in flight, a cycle of 200 claims starts its calls START_CHUNK at a
    time and lets the event loop turn in between (requests that came in meanwhile go first);
    while none is, it starts them all in one step."""
    config = make_config(
        tmp_path,
        engine={"max_concurrent_calls": 1000},
        telephony={"simulated": {"call_seconds": 3600}},  # all live till the end
    )
    running = await start_app(config)
    ticks = itertools.count()  # each look at the time a second later: creates are no stream
    running.engine.foreground = scheduler.Foreground(monotonic=lambda: float(next(ticks)))

    async def live_seen_while_starting(total: int, offset: int, *, serving: bool) -> set[int]:
        """Start jobs of `total` contacts (limit 50 each) at once; the live counts seen by
        another task at each turn of the loop meanwhile."""
        live = running.engine.live_calls()
        seen: set[int] = set()
        done = False

        async def watch() -> None:
            while not done:
                seen.add(running.engine.live_calls() - live)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        try:
            await start_together(running, total, offset, serving=serving)
        finally:
            done = True
            await watcher
        return seen

    chunk = scheduler.START_CHUNK
    served = await live_seen_while_starting(scheduler.CYCLE_MAX_SERVING, 1000, serving=True)
    assert {chunk, 2 * chunk, 3 * chunk} <= served
    quiet = await live_seen_while_starting(scheduler.CYCLE_MAX_SERVING, 2000, serving=False)
    assert not quiet & {chunk, 2 * chunk, 3 * chunk}


async def test_an_outcome_that_cannot_be_decided_at_the_call_end_is_decided_by_the_cycle(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deciding a call's outcome when it ends failing (a bug) neither loses the call nor leaves
    its contact dialing: the cycle decides it again."""
    original = scheduler.Engine._outcome
    failures = []

    def once(self: scheduler.Engine, *args: Any) -> Any:
        if not failures:
            failures.append(1)
            raise RuntimeError("bug")
        return original(self, *args)

    monkeypatch.setattr(scheduler.Engine, "_outcome", once)
    created = await running.create_json(phones(2))
    detail = await running.wait_status(created["batchJobId"], "completed")
    assert detail["statusBreakdown"]["completed"] == 2 and failures == [1]


class OddFiguresProvider(SimulatedProvider):
    """A provider reporting figures the database cannot store: a 20-digit SIP code and a
    duration of 10^30 seconds."""

    async def dial(self, request: DialRequest) -> DialResult:
        return DialResult(
            status=ContactStatus.BUSY,
            sip_code=10**20,
            duration=10**30,
            reason="odd",
            ended_at=self._clock.now(),
        )


async def test_figures_a_provider_reports_that_cannot_be_stored_are_dropped(
    start_app: StartApp, tmp_path: Path
) -> None:
    """The outcome is recorded without them, and the engine goes on. (SQLite refused the SIP
    code: the engine stopped, and its held outcome stopped every start after.)"""
    config = make_config(tmp_path)
    clock = FakeClock()
    running = await start_app(
        config, provider=OddFiguresProvider(config.telephony.simulated, clock), clock=clock
    )
    created = await running.create_json(phones(2), maxAttempts=1)
    body = await running.wait_status(created["batchJobId"], "completed")
    assert body["statusBreakdown"]["busy"] == 2
    assert running.engine.running and not running.engine.stopping
    for contact in body["contacts"]:
        assert (contact["errorCode"], contact["callDuration"]) == (None, None)


@pytest.mark.parametrize("removed", ["phone_numbers", "agents", "organizations"])
async def test_a_job_whose_number_agent_or_organization_left_the_config_pauses_saying_why(
    start_app: StartApp, tmp_path: Path, removed: str
) -> None:
    """A restart with a config that no longer names a running job's caller number, agent or
    organization: the job pauses with the reason, and nothing is dialed. (It dialed on with an
    empty caller number and trunk, or the agent's bare id, and nothing said why.)"""
    config = make_config(tmp_path)
    clock = FakeClock()
    first = await start_app(config, clock=clock)
    start = iso(clock.now() + 3600)
    created = await first.create_json(phones(3), scheduledStartTime=start)
    await first.client.close()
    kept = {
        "phone_numbers": [p for p in config.phone_numbers if p.id != NUMBER],
        "agents": [a for a in config.agents if a.id != "agent_a"],
        "organizations": [o for o in config.organizations if o.id != ORG],
    }
    smaller = config.model_copy(update={removed: kept[removed]})
    provider = CountingProvider(smaller, clock)
    again = await start_app(smaller, provider=provider, clock=clock)
    await clock.advance(3600)
    body = await again.wait_status(created["batchJobId"], "paused")
    named = {"phone_numbers": NUMBER, "agents": "agent_a", "organizations": ORG}[removed]
    assert f"'{named}' is no longer in the configuration" in body["pauseReason"]
    assert provider.dials == 0 and body["statusBreakdown"]["pending"] == 3
