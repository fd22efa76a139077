"""The LiveKit provider on the fake LiveKit server, through the real `livekit-api` client."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket

import pytest

from dialer.clock import FakeClock
from dialer.providers.base import SIP_STATUS_TABLE, DialRequest, WebhookRejected
from dialer.providers.livekit import LiveKitProvider, phone_identity
from dialer.states import ContactStatus
from tests.fake_livekit import API_KEY, TRUNK, Callee, FakeLiveKit
from tests.integration.providers.conftest import (
    AGENT,
    CALLER,
    StartLiveKit,
    answered,
    dial_request,
    livekit_config,
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


async def test_dial_dispatches_agent_and_dials_as_configured(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """The agent is dispatched with the contact's data; the dial carries the configured limits."""
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
    metadata = json.loads(dispatch.metadata)
    assert metadata["jobId"] == "job_test" and metadata["contactId"] == "contact_7"
    assert metadata["contactData"] == {"name": "Ada", "balance": "12.50"}
    [dial] = fake.dials
    assert dial.wait_until_answered
    assert (dial.sip_trunk_id, dial.sip_call_to, dial.sip_number) == (TRUNK, NUMBER, CALLER)
    assert dial.room_name == request.room_name
    assert dial.participant_identity == phone_identity(request)
    assert dial.ringing_timeout.seconds == 25
    assert dial.max_call_duration.seconds == 600
    assert fake.calls == [
        "AgentDispatchService/CreateDispatch",
        "SIP/CreateSIPParticipant",
        "RoomService/DeleteRoom",
    ]
    assert len(set(fake.request_ids)) == 3
    assert_cleaned_up(fake, provider, request)


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
    assert "RoomService/ListParticipants" not in fake.calls
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


async def test_connection_lost_after_dial_sent_counts_and_is_retryable(
    fake: FakeLiveKit, start_livekit: StartLiveKit, clock: FakeClock
) -> None:
    """A connection dropped after the dial reached LiveKit counts as an attempt, retried later."""
    fake.numbers[NUMBER] = Callee.disconnects()
    provider = await start_livekit()
    request = dial_request(NUMBER, clock)
    result = await provider.dial(request)
    assert len(fake.dials) == 1
    assert result.status is ContactStatus.FAILED
    assert result.retryable and not result.not_placed
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
    assert fake.calls.count("RoomService/ListParticipants") == 2
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
    body = json.dumps(
        {
            "event": "participant_left",
            "id": "EV_x",
            "createdAt": str(int(clock.now())),
            "room": {"name": request.room_name},
            "participant": {
                "identity": phone_identity(request),
                "disconnectReason": "CLIENT_INITIATED",
            },
        }
    )
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
