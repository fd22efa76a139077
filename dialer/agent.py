"""Results from the agent: an agent reports what happened on its call (a voicemail, a callback
request, an opt-out...) for the attempt in its room, authorized by that attempt's callback token
or by its organization's API key. See `dialer.results` for what each disposition does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import structlog

from dialer import results
from dialer.clock import Clock
from dialer.scheduler import Engine, room_ids
from dialer.service import ServiceError
from storage.rows import NewResult, ResultRecorded, ResultRefused, ResultRow
from storage.store import Store

log = structlog.get_logger("dialer.agent")


@dataclass(frozen=True, slots=True)
class AgentResult:
    """A validated result (api.agent checks the body; the simulated agent builds one)."""

    disposition: str
    callback_at: float | None = None
    summary: str | None = None
    data: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Caller:
    """Who posts: the bearer of a callback token, or an organization by its API key."""

    token: str | None = None
    organization_id: str | None = None


def call_not_found(room_name: str) -> ServiceError:
    return ServiceError(404, "call_not_found", f"No call in room {room_name!r}")


class AgentResults:
    def __init__(self, store: Store, engine: Engine, clock: Clock) -> None:
        self.store = store
        self.engine = engine
        self.clock = clock
        self._secret: bytes | None = None

    async def authorize(self, room_name: str, caller: Caller) -> tuple[int, int, str | None, str]:
        """(contact id, attempt, organization to hold the write to, source) for this caller:
        404 for a room that does not exist (or is another organization's), 401 for a token
        that is not this attempt's."""
        ids = room_ids(room_name)
        if ids is None:
            raise call_not_found(room_name)
        ref = await self.store.attempt_for_room(room_name, *ids)
        if ref is None:
            raise call_not_found(room_name)
        if caller.token is not None:
            if self._secret is None:
                self._secret = await self.store.callback_secret()
            if results.token_matches(self._secret, room_name, caller.token):
                return ids[0], ids[1], None, "token"
        if caller.organization_id is not None:
            if caller.organization_id != ref.organization_id:
                raise call_not_found(room_name)
            return ids[0], ids[1], caller.organization_id, "api_key"
        raise ServiceError(
            401, "invalid_callback_token", "The token does not authorize results for this call"
        )

    async def post(
        self, room_name: str, caller: Caller, result: AgentResult, *, source: str | None = None
    ) -> ResultRecorded:
        contact_id, attempt_no, org, how = await self.authorize(room_name, caller)
        new = NewResult(
            room_name=room_name,
            contact_id=contact_id,
            attempt_no=attempt_no,
            disposition=result.disposition,
            callback_at=result.callback_at,
            summary=result.summary,
            data_json=None if result.data is None else json.dumps(result.data),
            source=source or how,
        )
        listing = result.disposition == "do_not_call"
        if listing:  # the number goes on the do-not-call list: no contact claimed ahead is dialed
            self.engine.give_back_claimed_ahead()
        try:
            recorded = await self.store.record_result(
                new,
                org,
                self.clock.now(),
                window_seconds=results.RESULT_WINDOW_SECONDS,
                most_per_attempt=results.MAX_RESULTS_PER_ATTEMPT,
            )
        except ResultRefused as exc:
            status = 410 if exc.code == "result_window_closed" else 429
            raise ServiceError(status, exc.code, exc.message) from None
        if recorded is None:
            raise call_not_found(room_name)
        log.info(
            "agent_result",
            room=room_name,
            job_id=recorded.result.job_id,
            contact_id=contact_id,
            attempt=attempt_no,
            disposition=result.disposition,
            source=new.source,
            applied=recorded.applied,
        )
        # Applied: the contact may wait again (its job looks for it). Either way the job's live
        # events show the result.
        if listing:
            self.engine.give_back_claimed_ahead()
        self.engine.wake_job(recorded.result.job_id)
        return recorded

    async def history(self, room_name: str, caller: Caller) -> list[ResultRow]:
        """Every result posted for the call, oldest first."""
        contact_id, attempt_no, _, _ = await self.authorize(room_name, caller)
        return await self.store.results_for_attempt(contact_id, attempt_no)
