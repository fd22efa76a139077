"""The LiveKit SIP provider: real phone calls through `livekit-api`.

One attempt, one room: the agent is dispatched into a fresh room and, once it has joined (a signed
`participant_joined` webhook or a look at the room), the callee is dialed into it with
`create_sip_participant(wait_until_answered=True)`; an agent that does not join in time means no
dial at all. The call is followed until it ends - by a signed webhook, by polling the room when no
webhook comes, and at `max_call_seconds` by deleting the room. The room is deleted after every
attempt. A dial that fails is mapped to a contact status by `classify`, with the SIP code table of
`base.SIP_STATUS_TABLE`.

A call is never placed twice by this module: the client runs with `failover=False` (no replayed
dials), and a call found in `dialing` after a restart is only looked at (`resume`), never dialed.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import enum
import json
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp
import structlog
from livekit import api

from dialer.clock import Clock
from dialer.config import LiveKitConfig
from dialer.providers.base import (
    DIAL_LOG_STUCK,
    DialRequest,
    DialResult,
    WebhookRejected,
    sip_code,
    status_for_sip_code,
)
from dialer.states import ContactStatus

log = structlog.get_logger("dialer.providers.livekit")

T = TypeVar("T")

# Our own deadline on the blocking dial is the ring window plus this margin for LiveKit to report
# back. The library's aiohttp timeout is set a little longer still, as a backstop.
DIAL_ANSWER_MARGIN_SECONDS = 10.0
DIAL_BACKSTOP_SECONDS = 5.0
# After a restart, a call cannot outlive its ring window plus max_call_seconds (LiveKit enforces
# max_call_duration); past that, a room we cannot reach is recorded as interrupted.
RESUME_MARGIN_SECONDS = 60.0
# While the dispatched agent is awaited, the room is looked at this often (clock time); a
# `participant_joined` webhook for the agent ends the wait at once.
AGENT_POLL_SECONDS = 0.5
# A room that could not be deleted is tried again after 1 s, then twice as long each time, up to
# this.
ROOM_DELETE_MAX_WAIT_SECONDS = 30.0
# How many webhook event ids are remembered to drop duplicates.
SEEN_EVENTS = 4096

INTERRUPTED = "interrupted"


class UnreadableReply(aiohttp.ClientError):
    """LiveKit answered something the library could not read (not protobuf, a `null` body, a
    field of the wrong type): handled as a transport error (see LiveKitProvider._ask)."""


class PhoneState(enum.Enum):
    """The callee's leg as seen in the room."""

    RINGING = "ringing"
    ACTIVE = "active"
    GONE = "gone"


def phone_identity(request: DialRequest) -> str:
    """The SIP participant's identity: derived from the request, so a restart finds it again."""
    return f"phone-c{request.contact_id}-a{request.attempt_no}"


def agent_metadata(request: DialRequest) -> str:
    """What the agent receives in its dispatch: whom it calls for which job, and where it reports
    the call's result. `contactId` is the id the API shows. Carries the attempt's callback token:
    never log it."""
    return json.dumps(
        {
            "jobId": request.job_id,
            "jobName": request.job_name,
            "contactId": f"contact_{request.contact_id}",  # the id the API shows
            "attempt": request.attempt_no,
            "phoneNumber": request.to_number,
            "callerNumber": request.from_number,
            "contactData": request.contact_data,
            "timezone": request.timezone,
            "callbackUrl": request.callback_url,
            "callbackToken": request.agent_token,
        },
        separators=(",", ":"),
    )


def sip_code_of(error: api.ServerError) -> int | None:
    """The SIP status code LiveKit attached to a failed dial, if any (one that cannot be a SIP
    code, or metadata that is not an object, counts as none)."""
    meta = error.metadata
    return sip_code(meta.get("sip_status_code")) if isinstance(meta, dict) else None


def classify(
    error: BaseException,
    *,
    dial_sent: bool,
    config: LiveKitConfig,
    ringing_timeout: float | None = None,
) -> DialResult:
    """Map a failed agent dispatch (`dial_sent=False`) or dial (`dial_sent=True`) to an outcome.

    - A SIP code from LiveKit: the SIP table, the code kept as `sip_code`.
    - Rejected credentials, a missing trunk, a refused dispatch: `job_fatal` (not the contact's
      fault; the engine gives the attempt back and fails the job after a few in a row).
    - Ring-out (`canceled`): no_answer. Our own deadline or `deadline_exceeded`: timeout.
    - LiveKit unreachable before the dial was sent: `not_placed` (the attempt does not count).
      A LiveKit 5xx or a lost connection after it was sent: the attempt counts (the phone may
      have rung) and is retried, and `provider_error` makes the engine back off as for an
      unreachable provider.
    - A limit of the LiveKit project reached (`resource_exhausted` / 429 without a SIP code), for
      the dispatch or the dial: `not_placed`, as LiveKit refused the request and no INVITE went
      out. Were every such refusal counted, contacts would fail or use up their attempts
      without a call, and a job would fail on a refused dispatch. `at_limit` tells the engine:
      with calls live it dials at most that many at once for a while; with none it stops and
      probes with a backoff, as for an unreachable provider.
    Anything else is `failed` with the reason kept.
    """
    ring = ringing_timeout or config.ringing_timeout_seconds
    if isinstance(error, api.ServerError):
        code = error.code
        what = f"{code}: {error.message}" if error.message else code
        sip = sip_code_of(error)
        if sip is not None:
            phrase = str(error.metadata.get("sip_status") or error.message)[:200]
            return DialResult(
                status=status_for_sip_code(sip),
                sip_code=sip,
                reason=f"SIP {sip} {phrase}".strip(),
            )
        if code in (api.ServerErrorCode.UNAUTHENTICATED, api.ServerErrorCode.PERMISSION_DENIED):
            return _fatal(f"LiveKit rejected the API credentials ({what})")
        if _limit_reached(error) and not (dial_sent and _names_sip_answer(error.message)):
            step = "dial" if dial_sent else "agent dispatch"
            reason = f"LiveKit refused the {step}: a limit of the project was reached ({what})"
            return DialResult(
                status=ContactStatus.FAILED, reason=reason, not_placed=True, at_limit=True
            )
        if not dial_sent:
            if error.status >= 500:
                return _not_placed(f"LiveKit could not dispatch the agent ({what})")
            return _fatal(f"LiveKit refused the agent dispatch ({what})")
        if code == api.ServerErrorCode.NOT_FOUND:
            return _fatal(f"SIP trunk not found in LiveKit ({what})")
        if code == api.ServerErrorCode.CANCELED:
            return DialResult(
                status=ContactStatus.NO_ANSWER, reason=f"no answer within {ring:g} s (ring-out)"
            )
        if code == api.ServerErrorCode.DEADLINE_EXCEEDED:
            return DialResult(status=ContactStatus.TIMEOUT, reason=f"LiveKit timed out ({what})")
        return DialResult(
            status=ContactStatus.FAILED,
            reason=f"LiveKit error ({what})",
            retryable=error.status >= 500 or _limit_reached(error),
            provider_error=error.status >= 500,
        )
    if isinstance(error, aiohttp.ClientConnectorError) or (
        not dial_sent and isinstance(error, aiohttp.ClientError | TimeoutError)
    ):
        return _not_placed(f"LiveKit unreachable ({type(error).__name__}: {error})")
    if isinstance(error, TimeoutError):
        # The dial was sent: the phone may have rung, so the attempt counts.
        return DialResult(
            status=ContactStatus.TIMEOUT,
            reason=f"no answer from LiveKit within {ring + DIAL_ANSWER_MARGIN_SECONDS:g} s",
        )
    if isinstance(error, aiohttp.ClientError):
        return DialResult(
            status=ContactStatus.FAILED,
            reason=f"transport error after the dial was sent ({type(error).__name__}: {error})",
            retryable=True,
            provider_error=True,
        )
    raise error


def _limit_reached(error: api.ServerError) -> bool:
    """LiveKit refused the request for one of the project's limits (concurrent sessions or SIP
    calls, request rate, a used-up quota): Twirp `resource_exhausted` / HTTP 429 with no SIP
    code. (A callee's busy answer comes with that code too, but always with its SIP code.)"""
    return error.code == api.ServerErrorCode.RESOURCE_EXHAUSTED or error.status == 429


def _names_sip_answer(message: str) -> bool:
    """An error text that names a SIP answer (an INVITE went out: the phone may have rung)."""
    text = message.lower()
    return "invite" in text or "sip status" in text


def _clear(failed: DialResult) -> bool:
    """A failed dial LiveKit answered clearly: the callee is not in the room (a SIP answer, a
    ring-out, a missing trunk, refused credentials)."""
    return (
        failed.sip_code is not None or failed.job_fatal or failed.status is ContactStatus.NO_ANSWER
    )


def _fatal(reason: str) -> DialResult:
    return DialResult(status=ContactStatus.FAILED, reason=reason, job_fatal=True)


def _not_placed(reason: str) -> DialResult:
    return DialResult(status=ContactStatus.FAILED, reason=reason, not_placed=True)


@dataclasses.dataclass
class LiveCall:
    """One attempt the provider follows; webhooks and polls report its end here."""

    request: DialRequest
    identity: str
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    ended: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    agent_joined: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    # The callee may be in the room: the dial was sent (or the call is resumed) and LiveKit
    # did not say clearly that it failed. Its room must then be deleted (see _finish).
    phone_sent: bool = False

    def end(self, at: float, reason: str) -> bool:
        """Record the end once; False if it was already known (events are idempotent)."""
        if self.ended.is_set():
            return False
        self.ended_at, self.end_reason = at, reason
        self.ended.set()
        return True


class LiveKitProvider:
    name = "livekit"
    dials_late = True  # the agent is dispatched and awaited first (see DialRequest.before_dial)

    def __init__(self, config: LiveKitConfig, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._lk: api.LiveKitAPI | None = None
        self._receiver = api.WebhookReceiver(api.TokenVerifier(config.api_key, config.api_secret))
        self._calls: dict[str, LiveCall] = {}
        self._seen_events: collections.OrderedDict[str, None] = collections.OrderedDict()

    @property
    def calls(self) -> dict[str, LiveCall]:
        """Attempts in progress, by room name."""
        return self._calls

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._config.request_timeout_seconds),
            # One connection per request: a pooled connection the server has already closed
            # would turn a dial into "sent or not?". No limit: every live call holds one.
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
        )
        self._lk = api.LiveKitAPI(
            self._config.url,
            self._config.api_key,
            self._config.api_secret,
            session=self._session,
            # On LiveKit Cloud a timed-out blocking dial is otherwise replayed against another
            # region: a second call to the same person.
            failover=False,
        )
        log.info("livekit_provider_started", url=self._config.url)

    async def close(self) -> None:
        if self._lk is not None:
            await self._lk.aclose()
            self._lk = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def lk(self) -> api.LiveKitAPI:
        if self._lk is None:
            raise RuntimeError("LiveKitProvider.start() was not called")
        return self._lk

    async def _ask(self, work: Awaitable[T]) -> T:
        """One LiveKit API call. A reply the library fails to read raises UnreadableReply, so
        that it counts as a transport error wherever one is handled (before, it failed the
        contact for good as a "provider error", and a garbage reply to DeleteRoom failed a
        completed call)."""
        try:
            return await work
        except (api.ServerError, aiohttp.ClientError, TimeoutError):
            raise
        except Exception as exc:  # (asyncio.CancelledError is not an Exception)
            raise UnreadableReply(f"{type(exc).__name__}: {exc}"[:300]) from exc

    # ------------------------------------------------------------ one call

    async def dial(self, request: DialRequest) -> DialResult:
        call = self._follow(request)
        return await self._settle(call, self._place(call))

    async def _settle(self, call: LiveCall, work: Awaitable[DialResult]) -> DialResult:
        """Run one attempt's `work`, then delete its room.

        Cancelled (shutdown): the room, and a live call in it, is left for the next start to
        resume.
        """
        try:
            result = await work
        except asyncio.CancelledError:
            self._unfollow(call)
            raise
        except Exception:
            await self._finish(call)
            raise
        await self._finish(call)
        return dataclasses.replace(
            result,
            room_name=call.request.room_name,
            ended_at=result.ended_at or self._clock.now(),
        )

    async def _place(self, call: LiveCall) -> DialResult:
        request = call.request
        log.info("call_dial_started", room=request.room_name, agent=request.agent_name)
        try:
            dispatch = await self._ask(
                self.lk.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(
                        agent_name=request.agent_name,
                        room=request.room_name,
                        metadata=agent_metadata(request),
                    )
                )
            )
        except (api.ServerError, aiohttp.ClientError, TimeoutError) as exc:
            return self._failed(exc, dial_sent=False)
        # Nobody is dialed before the agent is there to speak: a callee who answers into
        # silence hangs up.
        if not await self._agent_joins(call):
            return await self._agent_not_joined(call, dispatch.id)
        sip = self._sip_request(call)
        if request.before_dial is not None and not request.before_dial(request):
            log.error("call_not_placed", room=request.room_name, reason=DIAL_LOG_STUCK)
            return _not_placed(DIAL_LOG_STUCK)
        call.phone_sent = True
        try:
            await self._within(
                self._ask(
                    self.lk.sip.create_sip_participant(
                        sip, timeout=self._dial_deadline(request) + DIAL_BACKSTOP_SECONDS
                    )
                ),
                self._dial_deadline(request),
            )
        except (api.ServerError, aiohttp.ClientError, TimeoutError) as exc:
            result = self._failed(exc, dial_sent=True, ringing_timeout=self._ringing(request))
            if _clear(result):
                call.phone_sent = False
                return result
            if not await self._answered_after_all(call, result):
                return result
        call.answered_at = self._clock.now()
        log.info("call_answered", room=request.room_name)
        if request.on_answered is not None:
            request.on_answered()
        return await self._until_end(call)

    async def _answered_after_all(self, call: LiveCall, failed: DialResult) -> bool:
        """Whether the callee is talking in the room although the dial failed without a SIP
        answer (our deadline or the request's timed out, the connection broke, LiveKit answered
        5xx, 429 or something unreadable): the call may have been placed all the same. Such a
        call is followed as answered; recorded as failed, its room deleted under the callee,
        they were dialed again at the next retry."""
        if await self._phone_state(call) is not PhoneState.ACTIVE:
            return False
        log.warning(
            "call_answered_after_failed_dial", room=call.request.room_name, failure=failed.reason
        )
        return True

    async def _agent_joins(self, call: LiveCall) -> bool:
        """Until an agent is in the call's room: a webhook says so at once, else the room is
        looked at every AGENT_POLL_SECONDS. False after `agent_join_timeout_seconds`."""
        started = self._clock.now()
        deadline = started + self._config.agent_join_timeout_seconds
        while not call.agent_joined.is_set():
            if await self._agent_in_room(call):
                call.agent_joined.set()
                break
            left = deadline - self._clock.now()
            if left <= 0:
                return False
            await self._clock.wait(call.agent_joined, min(AGENT_POLL_SECONDS, left))
        log.info(
            "agent_joined",
            room=call.request.room_name,
            seconds=round(self._clock.now() - started, 3),
        )
        return True

    async def _agent_in_room(self, call: LiveCall) -> bool:
        """Whether an agent is in the room; False too when LiveKit cannot be asked right now."""
        room = call.request.room_name
        try:
            listing = await self._ask(
                self.lk.room.list_participants(api.ListParticipantsRequest(room=room))
            )
        except api.ServerError as exc:
            if exc.code != api.ServerErrorCode.NOT_FOUND:  # not_found: no room yet
                log.warning("agent_poll_failed", room=room, error=str(exc))
            return False
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("agent_poll_failed", room=room, error=f"{type(exc).__name__}: {exc}")
            return False
        return any(
            p.kind == api.ParticipantInfo.AGENT and p.state != api.ParticipantInfo.DISCONNECTED
            for p in listing.participants
        )

    async def _agent_not_joined(self, call: LiveCall, dispatch_id: str) -> DialResult:
        """Nobody was dialed: withdraw the dispatch (the room is deleted by `_settle`), so that
        an agent that comes late finds no call to join."""
        request = call.request
        timeout = self._config.agent_join_timeout_seconds
        log.warning(
            "agent_not_joined",
            room=request.room_name,
            agent=request.agent_name,
            timeout_seconds=timeout,
        )
        if dispatch_id:
            try:
                await self._ask(
                    self.lk.agent_dispatch.delete_dispatch(dispatch_id, request.room_name)
                )
            except api.ServerError as exc:
                if exc.code != api.ServerErrorCode.NOT_FOUND:
                    log.warning(
                        "agent_dispatch_delete_failed", room=request.room_name, error=str(exc)
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "agent_dispatch_delete_failed",
                    room=request.room_name,
                    error=f"{type(exc).__name__}: {exc}",
                )
        return DialResult(
            status=ContactStatus.FAILED,
            reason=f"Agent '{request.agent_name}' did not join within {timeout:g} s",
            ended_at=self._clock.now(),
            agent_not_joined=True,
        )

    def _sip_request(self, call: LiveCall) -> api.CreateSIPParticipantRequest:
        request = call.request
        sip = api.CreateSIPParticipantRequest(
            sip_trunk_id=request.sip_trunk_id,
            sip_call_to=request.to_number,
            sip_number=request.from_number,
            room_name=request.room_name,
            participant_identity=call.identity,
            participant_name=request.to_number,
            wait_until_answered=True,
        )
        sip.ringing_timeout.FromNanoseconds(round(self._ringing(request) * 1e9))
        sip.max_call_duration.FromNanoseconds(round(self._config.max_call_seconds * 1e9))
        return sip

    def _ringing(self, request: DialRequest) -> float:
        """How long this call may ring: the job's own timeout, else the configured one."""
        return request.ringing_timeout_seconds or self._config.ringing_timeout_seconds

    def _dial_deadline(self, request: DialRequest) -> float:
        return self._ringing(request) + DIAL_ANSWER_MARGIN_SECONDS

    def _failed(
        self, exc: BaseException, *, dial_sent: bool, ringing_timeout: float | None = None
    ) -> DialResult:
        result = classify(
            exc, dial_sent=dial_sent, config=self._config, ringing_timeout=ringing_timeout
        )
        log.info(
            "call_dial_failed",
            stage="dial" if dial_sent else "dispatch",
            status=result.status.value,
            sip_code=result.sip_code,
            reason=result.reason,
            not_placed=result.not_placed,
            job_fatal=result.job_fatal,
        )
        return dataclasses.replace(result, ended_at=self._clock.now())

    async def _within(self, work: Awaitable[T], seconds: float) -> T:
        """Await `work`, giving up after `seconds` of clock time (TimeoutError)."""
        task = asyncio.ensure_future(work)
        timer = asyncio.ensure_future(self._clock.sleep(seconds))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            task.cancel()
            await asyncio.gather(task, timer, return_exceptions=True)
        if task.cancelled():
            raise TimeoutError(f"no answer within {seconds:g} s")
        return task.result()

    async def _until_end(self, call: LiveCall) -> DialResult:
        """Follow a call until it ends: webhook, else polling; hard stop at max_call_seconds.

        `call.answered_at` may be unknown (a call resumed while still ringing); polling fills it
        in when the callee is seen talking.
        """
        request = call.request
        ring, longest = self._ringing(request), self._config.max_call_seconds
        hard_stop = False
        while not call.ended.is_set():
            now = self._clock.now()
            deadline = (
                call.answered_at + longest
                if call.answered_at is not None
                else request.started_at + ring + longest
            )
            if now >= deadline:
                log.warning("call_max_duration_reached", room=request.room_name)
                hard_stop = call.end(now, f"max_call_seconds ({longest:g} s) reached")
                break
            wait = min(self._config.poll_interval_seconds, deadline - now)
            if await self._clock.wait(call.ended, wait):
                break
            state = await self._phone_state(call)
            if state is PhoneState.GONE:
                call.end(self._clock.now(), "callee left the room (polled)")
            elif state is PhoneState.ACTIVE and call.answered_at is None:
                call.answered_at = self._clock.now()
        ended_at = self._clock.now() if call.ended_at is None else call.ended_at
        log.info("call_ended", room=request.room_name, reason=call.end_reason)
        if call.answered_at is None:
            # A resumed call that never got answered: the best outcome known.
            return DialResult(
                status=ContactStatus.NO_ANSWER,
                reason=INTERRUPTED,
                ended_at=ended_at,
                retryable=True,
            )
        answered_at = call.answered_at
        ended_at = min(max(ended_at, answered_at), self._clock.now())
        return DialResult(
            status=ContactStatus.COMPLETED,
            reason=call.end_reason if hard_stop else None,
            answered_at=answered_at,
            ended_at=ended_at,
            duration=round(ended_at - answered_at),
        )

    async def _phone_state(self, call: LiveCall) -> PhoneState | None:
        """Look at the room; None when LiveKit cannot be asked right now."""
        room = call.request.room_name
        try:
            listing = await self._ask(
                self.lk.room.list_participants(api.ListParticipantsRequest(room=room))
            )
        except api.ServerError as exc:
            if exc.code == api.ServerErrorCode.NOT_FOUND:
                return PhoneState.GONE
            log.warning("call_poll_failed", room=room, error=str(exc))
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("call_poll_failed", room=room, error=f"{type(exc).__name__}: {exc}")
            return None
        for participant in listing.participants:
            if participant.identity != call.identity:
                continue
            status = participant.attributes.get("sip.callStatus", "")
            if status == "hangup" or participant.state == api.ParticipantInfo.DISCONNECTED:
                return PhoneState.GONE
            if status in ("dialing", "ringing"):
                return PhoneState.RINGING
            return PhoneState.ACTIVE
        return PhoneState.GONE

    async def _finish(self, call: LiveCall) -> None:
        """Delete the room (hangs up whatever is still in it) and stop following the call.

        Until the room is deleted, or the callee is seen gone from it, the call is not over:
        its slot and its number stay taken, and the delete is tried again with a backoff (a
        failed delete left the callee in a live call while the contact was dialed again, in a
        second one). Past the longest the call could last, it is given up on."""
        request = call.request
        room = request.room_name
        give_up = self._could_last_until(request)
        wait = 1.0
        try:
            while True:
                try:
                    await self._ask(self.lk.room.delete_room(api.DeleteRoomRequest(room=room)))
                    return
                except api.ServerError as exc:
                    if exc.code == api.ServerErrorCode.NOT_FOUND:
                        return
                    error = str(exc)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                if not call.phone_sent:  # nobody was dialed: the room holds no callee
                    log.warning("call_room_delete_failed", room=room, error=error)
                    return
                if await self._phone_state(call) is PhoneState.GONE:
                    log.warning("call_room_not_deleted", room=room, error=error)
                    return  # the callee is gone: only the room is left (LiveKit empties it)
                if self._clock.now() >= give_up:
                    log.error("call_room_delete_given_up", room=room, error=error)
                    return
                log.warning("call_room_delete_failed", room=room, error=error, retry_in=wait)
                await self._clock.sleep(wait)
                wait = min(wait * 2, ROOM_DELETE_MAX_WAIT_SECONDS)
        finally:
            self._unfollow(call)

    def _could_last_until(self, request: DialRequest) -> float:
        """When a call of this attempt must be over (LiveKit ends it at max_call_seconds)."""
        return (
            request.started_at
            + self._ringing(request)
            + self._config.max_call_seconds
            + RESUME_MARGIN_SECONDS
        )

    def _follow(self, request: DialRequest) -> LiveCall:
        # Registered before the dial, so that a webhook racing the dial's answer is not lost.
        call = LiveCall(request=request, identity=phone_identity(request))
        self._calls[request.room_name] = call
        return call

    def _unfollow(self, call: LiveCall) -> None:
        if self._calls.get(call.request.room_name) is call:
            del self._calls[call.request.room_name]

    # ------------------------------------------------------------ restart

    async def resume(self, request: DialRequest) -> DialResult:
        """Re-attach to a call left in `dialing` by a restart if its callee is still in the room.

        Never dials. Until LiveKit can be asked, keep asking (the call cannot outlive
        `max_call_seconds`); a room without the callee is recorded as interrupted.
        """
        call = self._follow(request)
        call.phone_sent = True
        return await self._settle(call, self._reattach(call))

    async def _reattach(self, call: LiveCall) -> DialResult:
        state = await self._resume_state(call)
        if state is PhoneState.GONE:
            log.info("call_resume_gone", room=call.request.room_name)
            return DialResult(status=ContactStatus.FAILED, reason=INTERRUPTED, retryable=True)
        log.info("call_resumed", room=call.request.room_name, state=state.value)
        return await self._until_end(call)

    async def _resume_state(self, call: LiveCall) -> PhoneState:
        request = call.request
        give_up = self._could_last_until(request)
        while True:
            if call.ended.is_set():  # a webhook said it ended: nothing more to ask
                return PhoneState.GONE
            state = await self._phone_state(call)
            if state is not None:
                if state is PhoneState.ACTIVE:
                    # When the callee answered is not known after a restart; the start of the
                    # attempt bounds it (talk time is over-counted by at most the ringing).
                    call.answered_at = request.started_at
                return state
            if self._clock.now() >= give_up:
                return PhoneState.GONE
            await self._clock.wait(call.ended, self._config.poll_interval_seconds)

    # ------------------------------------------------------------ webhooks

    def receive_webhook(self, body: str, authorization: str) -> str:
        """Verify a LiveKit webhook (signature and body hash) and apply it.

        Raises WebhookRejected when it does not verify; returns what it did: "agent_joined",
        "ended", "duplicate" or "ignored".
        """
        try:
            event = self._receiver.receive(body, authorization)
        except Exception as exc:  # the receiver raises bare Exceptions and jwt errors
            log.warning("webhook_rejected", error=type(exc).__name__)
            raise WebhookRejected(str(exc) or type(exc).__name__) from None
        return self.apply_event(event)

    def apply_event(self, event: api.WebhookEvent) -> str:
        """Apply a verified event: the agent joining, or the end, of a call we follow.
        Idempotent."""
        if event.id in self._seen_events:
            return "duplicate"
        done = self._apply(event)
        if event.id:  # (only once applied: an event that failed is applied when LiveKit resends it)
            self._seen_events[event.id] = None
            if len(self._seen_events) > SEEN_EVENTS:
                self._seen_events.popitem(last=False)
        return done

    def _apply(self, event: api.WebhookEvent) -> str:
        room = event.room.name
        call = self._calls.get(room)
        if call is None:
            log.debug("webhook_ignored", webhook_event=event.event, room=room)
            return "ignored"
        if (
            event.event == "participant_joined"
            and event.participant.kind == api.ParticipantInfo.AGENT
        ):
            if call.agent_joined.is_set():
                return "duplicate"
            call.agent_joined.set()
            log.info("webhook_agent_joined", room=room, agent=event.participant.identity)
            return "agent_joined"
        if event.event == "participant_left" and event.participant.identity == call.identity:
            code = event.participant.disconnect_reason
            try:
                cause = api.DisconnectReason.Name(code)
            except ValueError:  # a reason newer than this library
                cause = f"disconnect reason {code}"
            reason = f"participant_left ({cause})"
        elif event.event == "room_finished":
            reason = "room_finished"
        else:
            return "ignored"
        now = self._clock.now()
        # `created_at` has whole seconds: a webhook that arrives within that second is timed
        # finer by now; a late one (queued, retried) by when LiveKit says the call ended.
        created = float(event.created_at) if event.created_at else now
        at = now if now - created < 1 else created
        if not call.end(at, reason):
            return "duplicate"
        log.info("webhook_call_ended", room=room, webhook_event=event.event, reason=reason)
        return "ended"


__all__ = ["LiveKitProvider", "classify", "phone_identity"]
