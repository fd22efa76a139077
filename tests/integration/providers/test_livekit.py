"""The LiveKit provider on the fake LiveKit server, through the real `livekit-api` client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket

import pytest
from structlog.testing import capture_logs

from dialer.clock import FakeClock
from dialer.providers.base import DIAL_LOG_STUCK, SIP_STATUS_TABLE, DialRequest, WebhookRejected
from dialer.providers.livekit import AGENT_POLL_SECONDS, LiveKitProvider, phone_identity
from dialer.states import ContactStatus
from tests.fake_livekit import API_KEY, TRUNK, Callee, FakeLiveKit
from tests.integration.providers.conftest import (
    AGENT,
    CALLBACK_TOKEN,
    CALLER,
    StartLiveKit,
    answered,
    dial_request,
    livekit_config,
    on_clock,
    parked,
    until,
)

NUMBER = "+12025550123"


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_cleaned_up(fake: FakeLiveKit, provider: LiveKitProvider, request: DialRequest) -> None:
    assert request.room_name not in fake.rooms
    assert request.room_name not in provider.calls


def participant_left(request: DialRequest, clock: FakeClock, event_id: str, reason: object) -> str:
    """The body of LiveKit's `participant_left` webhook for the call's phone participant."""
    return json.dumps(
        {
            "event": "participant_left",
            "id": event_id,
            "createdAt": str(int(clock.now())),
            "room": {"name": request.room_name},
            "participant": {"identity": phone_identity(request), "disconnectReason": reason},
        }
    )


async def test_dial_dispatches_agent_and_dials_as_configured(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """The agent is dispatched with the call's context and, once it is in the room, the callee is
    dialed with the configured limits."""
    fake.numbers[NUMBER] = Callee.answers(talk_seconds=5)
    provider = await start_livekit(ringing_timeout_seconds=25, max_call_seconds=600)
    request = dial_request(NUMBER, clock, contact_id=7, attempt=2)
    call = asyncio.create_task(provider.dial(request))
    await answered(provider, request)
    dispatch = fake.rooms[request.room_name].dispatches[0]
    await clock.advance(5)
    result = await asyncio.wait_for(call, 10)

    assert result.status is ContactStatus.COMPLETED and result.duration == 5
    assert "job_test" in request.room_name and "_c7_a2_" in request.room_name
    assert dispatch.agent_name == AGENT
    assert json.loads(dispatch.metadata) == {
        "jobId": "job_test",
        "jobName": "December reminders",
        "contactId": "contact_7",
        "attempt": 2,
        "phoneNumber": NUMBER,
        "callerNumber": CALLER,
        "contactData": {"name": "Ada", "balance": "12.50"},
        "timezone": "America/New_York",
        "callbackUrl": request.callback_url,
        "callbackToken": CALLBACK_TOKEN,
    }
    [dial] = fake.dials
    assert dial.wait_until_answered
    assert (dial.sip_trunk_id, dial.sip_call_to, dial.sip_number) == (TRUNK, NUMBER, CALLER)
    assert dial.room_name == request.room_name
    assert dial.participant_identity == phone_identity(request)
    assert dial.ringing_timeout.seconds == 25
    assert dial.max_call_duration.seconds == 600
    assert fake.calls == [
        "AgentDispatchService/CreateDispatch",
        "RoomService/ListParticipants",  # the agent is there: dial
        "SIP/CreateSIPParticipant",
        "RoomService/DeleteRoom",
    ]
    assert len(set(fake.request_ids)) == 4
    assert_cleaned_up(fake, provider, request)


async def test_callee_is_dialed_only_once_the_agent_is_in_the_room(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """Without webhooks, the room is looked at every 0.5 s after the dispatch and the callee is
    dialed at the first look that finds the agent (joined at 2.25 s), never before."""
    fake.numbers[NUMBER] = Callee.answers(talk_seconds=5)
    fake.agent_join_seconds = 2.25
    fake.webhooks_enabled = False
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    start = clock.now()
    call = asyncio.create_task(provider.dial(request))
    for _ in range(5):  # the looks at 0, 0.5, ... 2 s find no agent
        await on_clock(clock, timers=2)  # the provider's next look, the agent's join
        assert fake.dials == []
        await clock.advance(AGENT_POLL_SECONDS)
    await answered(provider, request)
    fake.webhooks_enabled = True  # the hang-up is told
    await clock.advance(5)
    result = await asyncio.wait_for(call, 10)

    assert result.status is ContactStatus.COMPLETED and result.duration == 5
    assert fake.joined_at(request.room_name) == start + 2.25
    assert fake.requested_at("SIP/CreateSIPParticipant", request.room_name) == [start + 2.5]
    assert fake.requested_at("RoomService/ListParticipants", request.room_name) == [
        start + 0.5 * i for i in range(6)
    ]


async def test_agent_join_webhook_ends_the_wait_at_once(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """The signed `participant_joined` webhook of the agent wakes the wait: the callee is dialed
    the moment the agent joins, not at the next look at the room."""
    fake.numbers[NUMBER] = Callee.answers(talk_seconds=5)
    fake.agent_join_seconds = 2.25
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    start = clock.now()
    call = asyncio.create_task(provider.dial(request))
    for _ in range(4):
        await on_clock(clock, timers=2)
        await clock.advance(AGENT_POLL_SECONDS)
    await on_clock(clock, timers=2)
    await clock.advance(0.25)  # the agent joins; the next look would be at 2.5 s
    await until(lambda: bool(fake.dials))
    assert clock.now() == start + 2.25
    assert fake.requested_at("SIP/CreateSIPParticipant", request.room_name) == [start + 2.25]
    assert fake.calls.count("RoomService/ListParticipants") == 5  # none of them found it
    assert any(e.event == "participant_joined" for e in fake.sent)
    await answered(provider, request)
    await clock.advance(5)
    result = await asyncio.wait_for(call, 10)
    assert result.status is ContactStatus.COMPLETED and result.duration == 5


@pytest.mark.parametrize("join_after", [None, 15.0], ids=["never", "late"])
async def test_agent_that_does_not_join_in_time_means_no_dial(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock, join_after: float | None
) -> None:
    """An agent that never joins, or joins after agent_join_timeout_seconds: nobody is dialed,
    the dispatch and the room are removed, `agent_not_joined` is logged (without the callback
    token) and the result gives the attempt back."""
    fake.numbers[NUMBER] = Callee.answers()
    fake.agent_join_seconds = join_after
    provider = await start_livekit(agent_join_timeout_seconds=10)
    request = dial_request(NUMBER, clock)
    start = clock.now()
    with capture_logs() as logs:
        call = asyncio.create_task(provider.dial(request))
        await on_clock(clock, timers=1 if join_after is None else 2)
        await clock.advance(10)
        result = await asyncio.wait_for(call, 10)

    assert result.status is ContactStatus.FAILED
    assert result.agent_not_joined
    assert not (result.not_placed or result.job_fatal or result.retryable)
    assert result.reason == "Agent 'reminder-agent' did not join within 10 s"
    assert result.ended_at == start + 10 and result.room_name == request.room_name
    assert fake.dials == [] and "SIP/CreateSIPParticipant" not in fake.calls
    assert len(fake.deleted_dispatches) == 1
    assert fake.calls[-2:] == ["AgentDispatchService/DeleteDispatch", "RoomService/DeleteRoom"]
    assert request.room_name in fake.deleted
    assert_cleaned_up(fake, provider, request)
    [logged] = [e for e in logs if e["event"] == "agent_not_joined"]
    assert (logged["agent"], logged["timeout_seconds"]) == (AGENT, 10)
    assert CALLBACK_TOKEN not in repr(logs)

    await clock.advance(10)  # a late agent finds neither its dispatch nor the room
    assert fake.rooms == {} and fake.joined_at(request.room_name) is None


async def test_hang_up_is_learned_from_the_webhook(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """A callee hang-up ends the call through the signed webhook, without polling the room."""
    fake.numbers[NUMBER] = Callee.answers()
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    call = asyncio.create_task(provider.dial(request))
    await answered(provider, request)
    await clock.advance(42)
    fake.hang_up(request.room_name)
    result = await asyncio.wait_for(call, 10)
    assert result.status is ContactStatus.COMPLETED
    assert result.duration == 42
    assert fake.calls.count("RoomService/ListParticipants") == 1  # only the look for the agent
    assert_cleaned_up(fake, provider, request)


@pytest.mark.parametrize("code", [*sorted(SIP_STATUS_TABLE), 401, 488, 499, 606])
async def test_every_sip_code_maps_per_table(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock, code: int
) -> None:
    """Each SIP code ends in its table status (others: failed), keeps the code, deletes the room."""
    fake.numbers[NUMBER] = Callee.fails(code)
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    result = await provider.dial(request)
    assert result.status is SIP_STATUS_TABLE.get(code, ContactStatus.FAILED)
    assert result.sip_code == code
    assert result.reason is not None and result.reason.startswith(f"SIP {code} ")
    assert not (result.not_placed or result.job_fatal or result.retryable)
    assert request.room_name in fake.deleted
    assert_cleaned_up(fake, provider, request)


async def test_ring_out_cancel_is_no_answer(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """LiveKit cancelling the ring at ringing_timeout (Twirp `canceled`) is a no_answer."""
    fake.numbers[NUMBER] = Callee.rings_out()
    provider = await start_livekit(ringing_timeout_seconds=20)
    request = dial_request(NUMBER, clock)
    call = asyncio.create_task(provider.dial(request))

    await until(
        lambda: (
            (phone := fake.phone(request.room_name)) is not None
            and phone.attributes["sip.callStatus"] == "ringing"
        )
    )
    await clock.advance(20)
    result = await asyncio.wait_for(call, 10)
    assert result.status is ContactStatus.NO_ANSWER
    assert result.sip_code is None
    assert result.reason == "no answer within 20 s (ring-out)"
    assert_cleaned_up(fake, provider, request)


async def test_batch_ringing_timeout_overrides_the_configured_one(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """A batch's own ringing timeout goes into the dial, and the ring-out reports it."""
    fake.numbers[NUMBER] = Callee.rings_out()
    provider = await start_livekit(ringing_timeout_seconds=30)
    request = dataclasses.replace(dial_request(NUMBER, clock), ringing_timeout_seconds=12)
    call = asyncio.create_task(provider.dial(request))
    await until(
        lambda: (
            (phone := fake.phone(request.room_name)) is not None
            and phone.attributes["sip.callStatus"] == "ringing"
        )
    )
    await clock.advance(12)
    result = await asyncio.wait_for(call, 10)
    [dial] = fake.dials
    assert dial.ringing_timeout.seconds == 12
    assert result.status is ContactStatus.NO_ANSWER
    assert result.reason == "no answer within 12 s (ring-out)"


async def test_dial_without_answer_from_livekit_times_out(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """A dial LiveKit never answers ends `timeout` after the ring window plus margin; it counts."""
    fake.numbers[NUMBER] = Callee.hangs()
    provider = await start_livekit(ringing_timeout_seconds=20)
    request = dial_request(NUMBER, clock)
    call = asyncio.create_task(provider.dial(request))

    await until(lambda: bool(fake.dials))
    await clock.advance(29)
    assert not call.done()
    await clock.advance(1)
    result = await asyncio.wait_for(call, 10)
    assert result.status is ContactStatus.TIMEOUT
    assert not result.not_placed
    assert result.reason == "no answer from LiveKit within 30 s"
    assert request.room_name in fake.deleted


async def test_unreachable_livekit_places_no_call(clock: FakeClock) -> None:
    """A transport error before the request reached LiveKit gives the attempt back."""
    provider = LiveKitProvider(livekit_config(closed_port_url()), clock)
    await provider.start()
    try:
        result = await provider.dial(dial_request(NUMBER, clock))
    finally:
        await provider.close()
    assert result.not_placed
    assert not result.job_fatal
    assert result.reason is not None and "unreachable" in result.reason


@pytest.mark.parametrize(
    "refused", ["AgentDispatchService/CreateDispatch", "SIP/CreateSIPParticipant"]
)
async def test_a_limit_of_the_project_places_no_call(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock, refused: str
) -> None:
    """LiveKit refusing the dispatch or the dial at a limit of the project (429, no SIP code)
    places no call: the attempt is given back, not the contact's failure nor the job's, and its
    room is deleted."""
    fake.at_limit.add(refused)
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    result = await provider.dial(request)
    assert refused in fake.calls
    assert result.not_placed and not result.job_fatal
    assert result.reason is not None and "a limit of the project was reached" in result.reason
    assert fake.dials == []
    assert_cleaned_up(fake, provider, request)


async def test_connection_lost_after_dial_sent_counts_and_is_retryable(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """A connection dropped after the dial reached LiveKit counts as an attempt, retried later,
    once the room was looked at and showed no callee in it."""
    fake.numbers[NUMBER] = Callee.disconnects()
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    result = await provider.dial(request)
    assert len(fake.dials) == 1
    assert result.status is ContactStatus.FAILED
    assert result.retryable and not result.not_placed
    assert fake.calls[-2:] == ["RoomService/ListParticipants", "RoomService/DeleteRoom"]
    assert result.reason is not None and "after the dial was sent" in result.reason
    assert request.room_name in fake.deleted


async def test_rejected_credentials_are_job_fatal(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """Credentials LiveKit rejects fail the job (not the contact) and place no call."""
    provider = await start_livekit(api_secret="not-the-secret-not-the-secret-00")
    result = await provider.dial(dial_request(NUMBER, clock))
    assert result.job_fatal
    assert not result.not_placed
    assert result.reason is not None and "rejected the API credentials" in result.reason
    assert fake.dials == []


async def test_missing_trunk_is_job_fatal(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """A SIP trunk LiveKit does not know fails the job and deletes the room."""
    provider = await start_livekit()
    request = dial_request(NUMBER, clock, trunk="ST_missing")
    result = await provider.dial(request)
    assert result.job_fatal
    assert result.reason is not None and "SIP trunk not found" in result.reason
    assert request.room_name in fake.deleted


async def test_lost_webhook_is_covered_by_polling(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """Without a webhook, polling the room finds the callee gone within one poll interval."""
    fake.numbers[NUMBER] = Callee.answers()
    fake.webhooks_enabled = False
    provider = await start_livekit(poll_interval_seconds=15)
    request = dial_request(NUMBER, clock)
    call = asyncio.create_task(provider.dial(request))
    await answered(provider, request)
    await clock.advance(15)  # first poll: still talking
    await parked(clock)
    assert not call.done()
    fake.hang_up(request.room_name)
    await clock.advance(15)
    result = await asyncio.wait_for(call, 10)
    assert result.status is ContactStatus.COMPLETED
    assert result.duration == 30
    assert fake.calls.count("RoomService/ListParticipants") == 1 + 2  # the agent, then 2 polls
    assert_cleaned_up(fake, provider, request)


async def test_max_call_seconds_is_a_hard_stop(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """A call still up at max_call_seconds is ended by deleting its room."""
    fake.numbers[NUMBER] = Callee.answers()
    provider = await start_livekit(max_call_seconds=120, poll_interval_seconds=50)
    request = dial_request(NUMBER, clock)
    call = asyncio.create_task(provider.dial(request))
    await answered(provider, request)
    for _ in range(2):
        await clock.advance(50)  # a poll: still talking
        await parked(clock)
    await clock.advance(20)
    result = await asyncio.wait_for(call, 10)
    assert result.status is ContactStatus.COMPLETED
    assert result.duration == 120
    assert result.reason == "max_call_seconds (120 s) reached"
    assert request.room_name in fake.deleted


async def test_webhooks_are_verified_and_idempotent(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """A forged webhook is rejected; the same event twice ends the call once; others are ignored."""
    fake.numbers[NUMBER] = Callee.answers()
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    call = asyncio.create_task(provider.dial(request))
    await answered(provider, request)
    await fake.webhooks_delivered()
    fake.webhooks_enabled = False
    await clock.advance(3)
    fake.hang_up(request.room_name)  # the event is built but not sent: we send it by hand
    body = participant_left(request, clock, "EV_x", "CLIENT_INITIATED")
    forged = FakeLiveKit(clock, api_key=API_KEY, api_secret="wrong-secret-wrong-secret-000000")
    with pytest.raises(WebhookRejected):
        provider.receive_webhook(body, forged.sign(body))
    with pytest.raises(WebhookRejected):
        provider.receive_webhook(body + " ", fake.sign(body))  # body hash mismatch
    assert not provider.calls[request.room_name].ended.is_set()

    unknown = body.replace(request.room_name, "some_other_room").replace("EV_x", "EV_y")
    assert provider.receive_webhook(unknown, fake.sign(unknown)) == "ignored"
    assert provider.receive_webhook(body, fake.sign(body)) == "ended"
    assert provider.receive_webhook(body, fake.sign(body)) == "duplicate"
    result = await asyncio.wait_for(call, 10)
    assert result.duration == 3


async def test_resume_reattaches_to_a_live_call(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """After a restart a call still in its room is followed to its end, never dialed again."""
    fake.numbers[NUMBER] = Callee.answers()
    first = await start_livekit()
    request = dial_request(NUMBER, clock)
    call = asyncio.create_task(first.dial(request))
    await answered(first, request)
    call.cancel()  # the process stops; the call goes on in LiveKit
    with pytest.raises(asyncio.CancelledError):
        await call
    await first.close()
    assert request.room_name in fake.rooms

    second = await start_livekit()
    await clock.advance(10)
    resumed = asyncio.create_task(second.resume(request))
    await answered(second, request)
    await clock.advance(20)
    fake.hang_up(request.room_name)
    result = await asyncio.wait_for(resumed, 10)
    assert result.status is ContactStatus.COMPLETED
    assert result.duration == 30  # from the start of the attempt: the answer time is lost
    assert len(fake.dials) == 1
    assert_cleaned_up(fake, second, request)


async def test_resume_of_a_gone_room_is_interrupted(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """After a restart a room that is gone records the attempt as interrupted, retryable."""
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    result = await provider.resume(request)
    assert (result.status, result.reason, result.retryable) == (
        ContactStatus.FAILED,
        "interrupted",
        True,
    )
    assert fake.dials == []
    assert fake.calls == ["RoomService/ListParticipants", "RoomService/DeleteRoom"]


async def test_resume_keeps_asking_while_livekit_is_unreachable(clock: FakeClock) -> None:
    """Resume never guesses: it retries the check until the call cannot be live any more."""
    provider = LiveKitProvider(
        livekit_config(closed_port_url(), max_call_seconds=100, poll_interval_seconds=60), clock
    )
    await provider.start()
    try:
        resumed = asyncio.create_task(provider.resume(dial_request(NUMBER, clock)))
        for _ in range(4):  # 30 s ring + 100 s call + 60 s margin = 190 s
            await parked(clock)
            assert not resumed.done()
            await clock.advance(60)
        result = await asyncio.wait_for(resumed, 10)
    finally:
        await provider.close()
    assert result.reason == "interrupted" and result.retryable


async def test_a_call_answered_whose_dial_answer_was_lost_is_followed_not_dialed_again(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """The connection drops after LiveKit placed the call and the callee answered: the room is
    looked at, the callee found talking, and the call followed to its end as answered. (It was
    recorded failed and its room deleted under the callee, who was dialed again at the retry.)"""
    fake.numbers[NUMBER] = Callee.answers_unseen(talk_seconds=40)
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    with capture_logs() as logs:
        call = asyncio.create_task(provider.dial(request))
        await answered(provider, request)
        assert fake.rooms[request.room_name].participants  # not hung up
        await clock.advance(40)
        result = await asyncio.wait_for(call, 10)
    assert result.status is ContactStatus.COMPLETED and result.answered_at is not None
    assert result.duration == 40
    assert len(fake.dials) == 1
    assert "call_answered_after_failed_dial" in [e["event"] for e in logs]
    assert_cleaned_up(fake, provider, request)


async def test_a_room_that_cannot_be_deleted_keeps_the_call_until_it_is(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """DeleteRoom fails after a call: the call is not over (its slot and number stay taken)
    while the callee may still be in the room; the delete is tried again after 1 s, then 2 s,
    until it works. (The call was forgotten: the callee stayed in a live call while the
    contact was dialed again.)"""
    fake.numbers[NUMBER] = Callee.answers_unseen()  # answered; only hung up by the delete
    fake.failing["RoomService/DeleteRoom"] = 2
    provider = await start_livekit(max_call_seconds=5)
    request = dial_request(NUMBER, clock)
    call = asyncio.create_task(provider.dial(request))
    await answered(provider, request)
    await clock.advance(5)  # max_call_seconds: the engine hangs up by deleting the room
    await parked(clock)
    assert not call.done() and fake.phone(request.room_name) is not None
    await clock.advance(1)
    await parked(clock)
    assert not call.done()
    await clock.advance(2)
    result = await asyncio.wait_for(call, 10)
    assert result.status is ContactStatus.COMPLETED
    assert fake.calls.count("RoomService/DeleteRoom") == 3
    assert_cleaned_up(fake, provider, request)


async def test_a_failed_delete_of_a_room_nobody_was_dialed_into_is_not_retried(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """A dial LiveKit refused clearly (a SIP answer): no callee in the room, one delete."""
    fake.numbers[NUMBER] = Callee.fails(486)
    fake.failing["RoomService/DeleteRoom"] = 5
    provider = await start_livekit()
    result = await asyncio.wait_for(provider.dial(dial_request(NUMBER, clock)), 10)
    assert result.status is ContactStatus.BUSY
    assert fake.calls.count("RoomService/DeleteRoom") == 1


@pytest.mark.parametrize(
    ("method", "status", "not_placed"),
    [
        ("AgentDispatchService/CreateDispatch", ContactStatus.FAILED, True),
        ("SIP/CreateSIPParticipant", ContactStatus.COMPLETED, False),
        ("RoomService/DeleteRoom", ContactStatus.COMPLETED, False),
    ],
)
async def test_an_unreadable_reply_is_a_transport_error_not_a_failed_contact(
    fake: FakeLiveKit,
    start_livekit: StartLiveKit,
    clock: FakeClock,
    method: str,
    status: ContactStatus,
    not_placed: bool,
) -> None:
    """A 200 whose body is not protobuf: to the dispatch, nothing was dialed (given back, as
    LiveKit unreachable); to the dial, the room tells that the callee answered; to DeleteRoom
    (done, the callee gone), the call stays completed. (Each failed the contact for good as a
    "provider error".)"""
    fake.numbers[NUMBER] = Callee.answers(talk_seconds=3)
    fake.garbage.add(method)
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    call = asyncio.create_task(provider.dial(request))
    if method != "AgentDispatchService/CreateDispatch":
        await answered(provider, request)
        await clock.advance(3)
    result = await asyncio.wait_for(call, 10)
    assert (result.status, result.not_placed) == (status, not_placed)
    if not not_placed:
        assert result.duration is not None and result.duration >= 3
    assert request.room_name not in provider.calls


async def test_a_webhook_with_a_disconnect_reason_newer_than_the_library_ends_the_call(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """A `participant_left` whose reason this library does not name ends the call (it answered
    500, and LiveKit's resend was then dropped as a duplicate)."""
    fake.numbers[NUMBER] = Callee.answers()
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    call = asyncio.create_task(provider.dial(request))
    await answered(provider, request)
    await fake.webhooks_delivered()
    body = participant_left(request, clock, "EV_new", 99)
    assert provider.receive_webhook(body, fake.sign(body)) == "ended"
    assert provider.receive_webhook(body, fake.sign(body)) == "duplicate"
    result = await asyncio.wait_for(call, 10)
    assert result.status is ContactStatus.COMPLETED


async def test_resume_stops_asking_once_a_webhook_says_the_call_ended(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """After a restart LiveKit cannot be asked (503) but its webhook tells the call ended: the
    resume ends then, not when the call could no longer be live (minutes later)."""
    fake.failing["RoomService/ListParticipants"] = 1000
    provider = await start_livekit(poll_interval_seconds=60)
    request = dial_request(NUMBER, clock)
    resumed = asyncio.create_task(provider.resume(request))
    await parked(clock)
    body = participant_left(request, clock, "EV_end", 1)
    assert provider.receive_webhook(body, fake.sign(body)) == "ended"
    result = await asyncio.wait_for(resumed, 10)
    assert result.reason == "interrupted" and result.retryable
    assert fake.calls.count("RoomService/ListParticipants") == 1


async def test_a_call_the_engine_allows_no_dial_for_is_not_placed(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """The engine's hook is asked right before the dial, after the agent joined; when it says
    no (its dial log can be neither written nor removed), no call is placed."""
    asked: list[int] = []

    def refuse(request: DialRequest) -> bool:
        asked.append(len(fake.dials))
        return False

    provider = await start_livekit()
    request = dataclasses.replace(dial_request(NUMBER, clock), before_dial=refuse)
    result = await asyncio.wait_for(provider.dial(request), 10)
    assert result.not_placed and result.reason == DIAL_LOG_STUCK
    assert asked == [0] and fake.dials == []
    assert fake.calls[0] == "AgentDispatchService/CreateDispatch"
    assert_cleaned_up(fake, provider, request)
