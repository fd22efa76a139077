"""One contract for every telephony provider, run against each (saq-style).

The simulated provider gets its outcomes from number rules; the LiveKit provider runs on the fake
LiveKit server through the real `livekit-api` client. Both must report the same results.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from dialer.clock import FakeClock
from dialer.config import SimulatedConfig, SimulatedRule
from dialer.providers.base import DialRequest, Provider
from dialer.providers.simulated import SimulatedProvider
from dialer.states import ContactStatus
from tests.fake_livekit import Callee, FakeLiveKit
from tests.integration.providers.conftest import StartLiveKit, answered, dial_request, until

ANSWERS = "+12025550111"
TALK_SECONDS = 30
NO_AGENT = "+12025550119"  # the dispatched agent never joins the room
AGENT_JOIN_TIMEOUT = 10
# number, SIP code the callee's carrier answers, status it must end in
FAILURES = [
    ("+12025550112", 486, ContactStatus.BUSY),
    ("+12025550113", 603, ContactStatus.BLOCKED),
    ("+12025550114", 480, ContactStatus.NO_ANSWER),
    ("+12025550115", 404, ContactStatus.INVALID_NUMBER),
    ("+12025550116", 503, ContactStatus.CARRIER_ERROR),
    ("+12025550117", 408, ContactStatus.TIMEOUT),
    ("+12025550118", 499, ContactStatus.FAILED),
]


@dataclass
class Harness:
    provider: Provider
    clock: FakeClock
    dials: Callable[[], int]  # calls placed so far
    # Returns once `request`'s call is answered and its end is awaited on the clock.
    answered: Callable[[DialRequest], Awaitable[None]]


class ProviderContract:
    """What every provider does; subclasses supply the `harness` fixture."""

    @pytest.fixture
    def harness(self) -> Harness:
        raise NotImplementedError

    async def test_answered_call_completes_with_talk_time(self, harness: Harness) -> None:
        """An answered call ends completed, with answer/end times and its talk time in seconds;
        the request's on_answered hook is called once, at the answer."""
        answers: list[float] = []
        request = dataclasses.replace(
            dial_request(ANSWERS, harness.clock),
            on_answered=lambda: answers.append(harness.clock.now()),
        )
        started = harness.clock.now()
        call = asyncio.create_task(harness.provider.dial(request))
        await harness.answered(request)
        assert answers == [started]
        await harness.clock.advance(TALK_SECONDS)
        result = await asyncio.wait_for(call, 10)
        assert answers == [started]
        assert result.status is ContactStatus.COMPLETED
        assert result.duration == TALK_SECONDS
        assert result.answered_at == started
        assert result.ended_at == started + TALK_SECONDS
        assert result.room_name == request.room_name
        assert result.sip_code is None
        assert not (result.not_placed or result.job_fatal)
        assert harness.dials() == 1

    @pytest.mark.parametrize(("number", "sip_code", "status"), FAILURES)
    async def test_failed_call_maps_sip_code(
        self, harness: Harness, number: str, sip_code: int, status: ContactStatus
    ) -> None:
        """A SIP failure ends in the status of the mapping table, keeping the code and a reason."""
        answers: list[float] = []
        request = dataclasses.replace(
            dial_request(number, harness.clock), on_answered=lambda: answers.append(0.0)
        )
        result = await harness.provider.dial(request)
        assert answers == []  # never answered
        assert result.status is status
        assert result.sip_code == sip_code
        assert result.reason
        assert result.duration is None and result.answered_at is None
        assert not (result.not_placed or result.job_fatal)
        assert harness.dials() == 1

    async def test_agent_that_never_joins_means_no_call(self, harness: Harness) -> None:
        """An agent that does not join the room in time: nobody is dialed, and the result gives
        the attempt back as `agent_not_joined` (not a provider outage, not the job's fault)."""
        request = dial_request(NO_AGENT, harness.clock)
        call = asyncio.create_task(harness.provider.dial(request))
        await until(lambda: harness.clock.timers >= 1)
        await harness.clock.advance(AGENT_JOIN_TIMEOUT)
        result = await asyncio.wait_for(call, 10)
        assert result.status is ContactStatus.FAILED
        assert result.agent_not_joined
        assert result.reason == "Agent 'reminder-agent' did not join within 10 s"
        assert result.room_name == request.room_name
        assert not (result.not_placed or result.job_fatal or result.retryable)
        assert harness.dials() == 0

    async def test_resume_of_a_call_that_is_gone_never_dials(self, harness: Harness) -> None:
        """Resuming an attempt whose call is not live records it as interrupted and never dials."""
        request = dial_request(ANSWERS, harness.clock)
        result = await harness.provider.resume(request)
        assert result.status is ContactStatus.FAILED
        assert result.reason == "interrupted"
        assert result.retryable
        assert result.room_name == request.room_name
        assert harness.dials() == 0


class TestSimulatedProvider(ProviderContract):
    @pytest.fixture
    def harness(self, clock: FakeClock) -> Harness:
        rules = [SimulatedRule(prefix=ANSWERS, outcome="completed", seconds=TALK_SECONDS)]
        rules += [
            SimulatedRule(prefix=number, outcome=status.value, sip_code=code, seconds=0)
            for number, code, status in FAILURES
        ]
        rules.append(SimulatedRule(prefix=NO_AGENT, agent_joins=False, seconds=AGENT_JOIN_TIMEOUT))
        provider = SimulatedProvider(
            SimulatedConfig(ring_seconds=0, call_seconds=0, rules=rules), clock
        )

        async def talking(request: DialRequest) -> None:
            await until(lambda: clock.next_deadline is not None)

        return Harness(provider, clock, lambda: provider.dials, talking)


class TestLiveKitProvider(ProviderContract):
    @pytest.fixture
    async def harness(
        self, clock: FakeClock, fake: FakeLiveKit, start_livekit: StartLiveKit
    ) -> Harness:
        fake.numbers[ANSWERS] = Callee.answers(talk_seconds=TALK_SECONDS)
        for number, code, _ in FAILURES:
            fake.numbers[number] = Callee.fails(code)
        fake.agent_join_for[NO_AGENT] = None
        provider = await start_livekit(agent_join_timeout_seconds=AGENT_JOIN_TIMEOUT)

        async def talking(request: DialRequest) -> None:
            await answered(provider, request)

        return Harness(provider, clock, lambda: len(fake.dials), talking)
