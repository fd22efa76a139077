"""The simulated provider: outcomes from number-prefix rules or a seeded random mix.

Used for local runs, demos, tests and benchmarks. Time comes from the injected clock; `speed`
divides every wait, so a job of thousands of contacts can run in seconds.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import IO, Any, Protocol

import structlog

from dialer.clock import Clock
from dialer.config import SimulatedConfig, SimulatedRule
from dialer.providers.base import DEFAULT_SIP_CODE, DialRequest, DialResult
from dialer.states import ContactStatus
from storage.connection import make_private_dirs

log = structlog.get_logger("dialer.providers.simulated")


class ResultPoster(Protocol):
    """Where a scripted agent reports (dialer.agent.AgentResults, set by the app)."""

    async def post(
        self, room_name: str, caller: Any, result: Any, *, source: str | None = None
    ) -> Any: ...


class SimulatedProvider:
    name = "simulated"
    agent: ResultPoster | None = None

    def __init__(self, config: SimulatedConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._random = random.Random(config.seed)
        # Longest prefix first, so a specific rule beats a general one.
        self._rules = sorted(config.rules, key=lambda r: len(r.prefix), reverse=True)
        self._ledger: IO[str] | None = None
        self._default = ContactStatus(config.default_outcome or ContactStatus.COMPLETED)
        self.dials = 0
        self.calls_live = 0  # calls placed and not ended
        self.refused = 0  # dials refused at the project's call limit

    async def start(self) -> None:
        if self._config.dial_log:
            path = Path(self._config.dial_log)
            make_private_dirs(path.parent)
            # Opened once at start-up, before any call runs; readable by its owner only (it
            # lists the numbers dialed).
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            self._ledger = os.fdopen(fd, "a", encoding="utf-8", buffering=1)

    async def close(self) -> None:
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def _outcome(
        self, rule: SimulatedRule | None
    ) -> tuple[ContactStatus, int | None, float | None]:
        if rule is not None:
            status = ContactStatus(rule.outcome)
            sip = rule.sip_code if rule.sip_code is not None else DEFAULT_SIP_CODE[status]
            return status, sip, rule.seconds
        if self._config.mix:
            outcomes = list(self._config.mix)
            weights = [self._config.mix[o] for o in outcomes]
            status = ContactStatus(self._random.choices(outcomes, weights)[0])
        else:
            status = self._default
        return status, DEFAULT_SIP_CODE[status], None

    def _rule(self, number: str) -> SimulatedRule | None:
        return next((r for r in self._rules if number.startswith(r.prefix)), None)

    async def dial(self, request: DialRequest) -> DialResult:
        rule = self._rule(request.to_number)
        if rule is not None and not rule.agent_joins:
            return await self._agent_not_joined(request, rule.seconds or 0.0)
        limit = self._config.project_call_limit
        if limit is not None and self.calls_live >= limit:
            # As LiveKit refuses a dial at a limit of the project: nothing placed, no ledger line.
            self.refused += 1
            reason = f"simulated: a limit of the project was reached ({limit} calls at once)"
            return self._nobody_dialed(request, reason, not_placed=True, at_limit=True)
        self.calls_live += 1
        try:
            return await self._place(request, rule)
        finally:
            self.calls_live -= 1

    async def _place(self, request: DialRequest, rule: SimulatedRule | None) -> DialResult:
        self.dials += 1
        if self._ledger is not None:
            # Written and flushed before the "call" starts: the ledger is the record of every
            # dial that was placed, which the crash test audits for double dials.
            self._ledger.write(
                json.dumps(
                    {
                        "job": request.job_id,
                        "contact": request.contact_id,
                        "attempt": request.attempt_no,
                        "to": request.to_number,
                    }
                )
                + "\n"
            )
        status, sip_code, seconds = self._outcome(rule)
        speed = self._config.speed
        ring = self._config.ring_seconds if status is not ContactStatus.NO_ANSWER else 0.0
        if status is ContactStatus.COMPLETED:
            talk = self._config.call_seconds if seconds is None else seconds
            if ring:
                await self._clock.sleep(ring / speed)
            answered_at = self._clock.now()
            if request.on_answered is not None:
                request.on_answered()
            if talk:
                await self._clock.sleep(talk / speed)
            await self._report(request, rule)
            return DialResult(
                status=status,
                answered_at=answered_at,
                ended_at=self._clock.now(),
                duration=round(talk),
                room_name=request.room_name,
            )
        wait = seconds if seconds is not None else ring
        if wait:
            await self._clock.sleep(wait / speed)
        return DialResult(
            status=status,
            sip_code=sip_code,
            reason=f"simulated {status.value}",
            ended_at=self._clock.now(),
            room_name=request.room_name,
        )

    async def _report(self, request: DialRequest, rule: SimulatedRule | None) -> None:
        """The scripted agent of the number's rule, if it has one, reports its result while the
        call is still live, through the same checks as an agent posting to its callbackUrl."""
        if rule is None or rule.disposition is None or self.agent is None:
            return
        # Imported here: dialer.agent imports the engine, which imports the providers.
        from dialer.agent import AgentResult, Caller

        callback_at = None
        if rule.disposition == "callback_requested":
            callback_at = self._clock.now() + rule.callback_after_seconds
        try:
            await self.agent.post(
                request.room_name,
                Caller(token=request.agent_token),
                AgentResult(rule.disposition, callback_at, rule.summary),
                source="simulated",
            )
        except Exception as exc:  # a refused result is the agent's problem, not the call's
            log.warning("simulated_result_refused", room=request.room_name, error=str(exc))

    async def _agent_not_joined(self, request: DialRequest, seconds: float) -> DialResult:
        """The agent never came: nobody is dialed (no ledger line), as the LiveKit provider."""
        if seconds:
            await self._clock.sleep(seconds / self._config.speed)
        log.warning(
            "agent_not_joined",
            room=request.room_name,
            agent=request.agent_name,
            timeout_seconds=seconds,
        )
        reason = f"Agent '{request.agent_name}' did not join within {seconds:g} s"
        return self._nobody_dialed(request, reason, agent_not_joined=True)

    def _nobody_dialed(self, request: DialRequest, reason: str, **flags: bool) -> DialResult:
        return DialResult(
            status=ContactStatus.FAILED,
            reason=reason,
            ended_at=self._clock.now(),
            room_name=request.room_name,
            **flags,
        )

    async def resume(self, request: DialRequest) -> DialResult:
        # A simulated call does not outlive the process that "placed" it.
        return DialResult(
            status=ContactStatus.FAILED,
            reason="interrupted",
            ended_at=self._clock.now(),
            room_name=request.room_name,
            retryable=True,
        )
