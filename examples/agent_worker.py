"""A minimal LiveKit Agents worker for the dialer: it reads the call's context from the dispatch
metadata and reports what happened on the call to the dialer's `callbackUrl`.

    pip install "livekit-agents[openai]~=1.2" aiohttp
    LIVEKIT_URL=... LIVEKIT_API_KEY=... LIVEKIT_API_SECRET=... OPENAI_API_KEY=... \
        python examples/agent_worker.py dev

The worker registers as `reminder-agent`: put the same name in the dialer's
`[[agents]] livekit_agent_name`. The dialer dispatches it into each call's room *before* it dials,
and dials only once the agent has joined.

`post_result` (below) is all an agent needs to report back; it uses only aiohttp, so any agent,
LiveKit Agents or not, can copy it. The dialer's tests run it against the service.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

DISPOSITIONS = ("completed", "not_interested", "voicemail", "callback_requested", "do_not_call")


@dataclass(frozen=True)
class CallContext:
    """The dispatch metadata the dialer gives the agent (JSON)."""

    job_id: str
    job_name: str
    contact_id: str  # the id the API shows, e.g. "contact_12"
    attempt: int
    phone_number: str
    caller_number: str
    contact_data: dict[str, Any]
    timezone: str | None
    callback_url: str
    callback_token: str

    @classmethod
    def from_metadata(cls, metadata: str | dict[str, Any]) -> CallContext:
        m = json.loads(metadata) if isinstance(metadata, str) else metadata
        return cls(
            job_id=m["jobId"],
            job_name=m.get("jobName", ""),
            contact_id=m["contactId"],
            attempt=int(m["attempt"]),
            phone_number=m["phoneNumber"],
            caller_number=m.get("callerNumber", ""),
            contact_data=m.get("contactData") or {},
            timezone=m.get("timezone"),
            callback_url=m["callbackUrl"],
            callback_token=m["callbackToken"],
        )


class ResultRejected(Exception):
    """The dialer refused the result (4xx): retrying the same request will not help."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body.get('code')}: {body.get('error')}")
        self.status = status
        self.body = body


async def post_result(
    call: CallContext,
    disposition: str,
    *,
    callback_at: datetime | None = None,
    summary: str | None = None,
    data: dict[str, Any] | None = None,
    session: aiohttp.ClientSession | None = None,
    attempts: int = 5,
) -> dict[str, Any]:
    """Report the call's result to the dialer; return its answer.

    Retries a few times, with a growing pause, when the dialer cannot be reached or answers 5xx
    (e.g. 503 while its storage is unavailable); a 4xx raises ResultRejected at once. Posting
    again is safe: the latest result of a call wins, and every one is kept in its history.
    """
    if disposition not in DISPOSITIONS:
        raise ValueError(f"disposition must be one of {', '.join(DISPOSITIONS)}")
    body: dict[str, Any] = {"disposition": disposition}
    if callback_at is not None:
        body["callbackAt"] = callback_at.isoformat()
    if summary is not None:
        body["summary"] = summary
    if data is not None:
        body["data"] = data
    headers = {"Authorization": f"Bearer {call.callback_token}"}
    own = session is None
    http = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        for attempt in range(1, attempts + 1):
            try:
                async with http.post(call.callback_url, json=body, headers=headers) as resp:
                    answer: dict[str, Any] = await resp.json(content_type=None)
                    if resp.status < 400:
                        return answer
                    if resp.status < 500 and resp.status != 429:
                        raise ResultRejected(resp.status, answer)
            except (aiohttp.ClientError, TimeoutError):
                if attempt == attempts:
                    raise
            if attempt < attempts:
                await asyncio.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
        raise ResultRejected(503, {"code": "unavailable", "error": "the dialer kept failing"})
    finally:
        if own:
            await http.close()


# ----------------------------------------------------------------- the worker (LiveKit Agents)


def main() -> None:  # pragma: no cover - needs LiveKit and a model provider
    from livekit.agents import (
        Agent,
        AgentSession,
        JobContext,
        RunContext,
        WorkerOptions,
        cli,
        function_tool,
    )
    from livekit.plugins import openai

    class Reminder(Agent):
        def __init__(self, call: CallContext) -> None:
            name = call.contact_data.get("name", "there")
            super().__init__(
                instructions=(
                    f"You are calling {name} for '{call.job_name}'. Be brief and polite. "
                    "Use the tools to record how the call went before you say goodbye."
                )
            )
            self.call = call

        @function_tool()
        async def record_outcome(self, context: RunContext, outcome: str, summary: str) -> str:
            """Record the call's outcome: completed, not_interested or do_not_call."""
            await post_result(self.call, outcome, summary=summary)
            return "recorded"

        @function_tool()
        async def schedule_callback(self, context: RunContext, when_iso: str, summary: str) -> str:
            """The person asked to be called back at `when_iso` (ISO 8601 with an offset)."""
            at = datetime.fromisoformat(when_iso)
            await post_result(self.call, "callback_requested", callback_at=at, summary=summary)
            return "callback scheduled"

        @function_tool()
        async def reached_voicemail(self, context: RunContext) -> str:
            """An answering machine picked up, not a person."""
            await post_result(self.call, "voicemail")
            return "noted; hang up now"

    async def entrypoint(ctx: JobContext) -> None:
        call = CallContext.from_metadata(ctx.job.metadata)
        await ctx.connect()
        session = AgentSession(llm=openai.realtime.RealtimeModel())
        await session.start(room=ctx.room, agent=Reminder(call))
        # The dialer dials the callee only after this worker has joined: wait for the phone.
        await ctx.wait_for_participant()

    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint, agent_name="reminder-agent"))


if __name__ == "__main__":
    main()
