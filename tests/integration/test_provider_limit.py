"""The provider refusing dials at a limit of its project on calls at once (LiveKit's concurrent
SIP calls, say) while calls are live: the engine dials within it instead of stopping every job as
for an unreachable provider, counts no attempt for a refusal, and tries more after a while."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from dialer import scheduler
from dialer.clock import FakeClock
from dialer.config import Config
from dialer.providers.base import DialRequest, DialResult
from dialer.providers.simulated import SimulatedProvider
from tests.conftest import Running, StartApp, make_config, wait_until
from tests.integration.test_metrics import scrape, value
from tests.integration.test_scheduler import phones

CALL_SECONDS = 30


class Watched(SimulatedProvider):
    """The simulated provider with a project limit, counting the calls placed at once and the
    refusals; the limit can be changed while it runs."""

    def __init__(self, config: Config, clock: FakeClock) -> None:
        super().__init__(config.telephony.simulated, clock)
        self.most_live = 0

    def set_limit(self, calls: int | None) -> None:
        self._config = self._config.model_copy(update={"project_call_limit": calls})

    async def _place(self, request: DialRequest, rule: Any) -> DialResult:
        self.most_live = max(self.most_live, self.calls_live)
        return await super()._place(request, rule)


async def start(
    start_app: StartApp, tmp_path: Path, limit: int, most: int = 100
) -> tuple[Running, Watched]:
    config = make_config(
        tmp_path,
        engine={"max_concurrent_calls": most},
        telephony={
            "simulated": {
                "call_seconds": CALL_SECONDS,
                "ring_seconds": 0,
                "project_call_limit": limit,
            }
        },
    )
    clock = FakeClock()
    provider = Watched(config, clock)
    return await start_app(config, provider=provider, clock=clock), provider


async def parked(running: Running) -> bool:
    return running.engine.idle.is_set()


async def advance(running: Running, seconds: float, step: float = 1.0) -> None:
    """Move the clock in steps, the engine parked after each; no provider outage ever."""
    for _ in range(round(seconds / step)):
        await running.clock.advance(step)
        await wait_until(lambda: parked(running))
        assert running.engine.provider_outage is None


async def test_dials_within_the_projects_limit_without_stopping(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, provider = await start(start_app, tmp_path, limit=4)
    created = await running.create_json(phones(24), concurrentCallLimit=10)
    job_id = created["batchJobId"]
    await wait_until(lambda: parked(running))
    await advance(running, 2)
    # The first round's 6 dials over the limit were refused: the engine now dials 4 at once.
    assert provider.refused == 6
    assert running.engine.call_limit() == 4
    health = await (await running.client.get("/healthz")).json()
    assert health["checks"]["provider"].startswith("at a limit since ")
    assert "at most 4 calls at once" in health["checks"]["provider"]
    assert value(await scrape(running), "dialer_call_limit") == 4

    # 24 calls of 30 s, 4 at a time: 6 rounds. The engine tries one more every 10 s or so.
    await advance(running, 6 * CALL_SECONDS + 20)
    detail = await running.detail(job_id)
    assert detail["status"] == "completed", detail["statusBreakdown"]
    assert detail["statusBreakdown"]["completed"] == 24
    assert provider.dials == 24  # every contact called once: no refusal counted as a call
    assert provider.most_live == 4
    # One refusal per try of one more, after the first round's (not a refusal per free slot).
    assert provider.refused <= 6 + (6 * CALL_SECONDS + 20) / scheduler.PROVIDER_CAP_RAISE_SECONDS
    contacts = detail["contacts"]
    assert len(contacts) == 24
    assert {c["attemptCount"] for c in contacts} == {1}  # the refused dials gave theirs back
    # Idle, the limit keeps rising with time: a minute later it is lifted.
    await running.clock.advance(60)
    health = await (await running.client.get("/healthz")).json()
    assert health["checks"]["provider"] == "ok"
    assert running.engine.provider_cap is None


async def test_the_limit_rises_back_once_the_project_takes_more(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, provider = await start(start_app, tmp_path, limit=3, most=16)
    await running.create_json(phones(60), concurrentCallLimit=12)
    await wait_until(lambda: parked(running))
    await advance(running, 2)
    assert running.engine.call_limit() == 3
    provider.set_limit(None)  # the project's limit was raised, or its other calls ended
    # One more after 10 s, then 2, 4, 8 (3 -> 4 -> 6 -> 10 -> 18): the configured 16 is back.
    await advance(running, 5 * scheduler.PROVIDER_CAP_RAISE_SECONDS + 2)
    assert running.engine.provider_cap is None
    assert running.engine.call_limit() == running.engine.config.engine.max_concurrent_calls
    assert provider.calls_live == 12
    health = await (await running.client.get("/healthz")).json()
    assert health["checks"]["provider"] == "ok"


async def test_a_refusal_with_no_call_live_stops_dialing_as_an_outage(
    start_app: StartApp, tmp_path: Path
) -> None:
    """Refused with nothing live (a used-up quota, say): no limit to keep within, so the
    engine stops and probes as for an unreachable provider."""
    running, provider = await start(start_app, tmp_path, limit=1)
    provider.calls_live = 1  # the project's one call is someone else's

    async def outage() -> bool:
        return running.engine.provider_outage is not None and running.engine.idle.is_set()

    with capture_logs() as logs:
        created = await running.create_json(phones(5), concurrentCallLimit=5)
        await wait_until(outage)
    # Logged as what they were, as /metrics counts them: dials not placed, no attempt.
    ended = [e for e in logs if e["event"] == "call_attempt_finished"]
    assert [(e["outcome"], e["next_status"]) for e in ended] == [("not_placed", "queued")] * 5
    assert running.engine.provider_cap is None
    assert provider.dials == 0
    detail = await running.detail(created["batchJobId"])
    assert {c["attemptCount"] for c in detail["contacts"]} == {0}
