"""The engine on LiveKit: jobs through the HTTP API, calls on the fake LiveKit, webhooks back."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from livekit import api
from structlog.testing import capture_logs

from dialer import config as configmod
from dialer import service
from dialer.clock import FakeClock
from dialer.providers.base import DialRequest
from dialer.providers.livekit import AGENT_POLL_SECONDS, LiveKitProvider
from dialer.scheduler import NOT_PLACED_BACKOFF_SECONDS
from tests.conftest import NUMBER, ORG, Running, StartApp, make_config, wait_until
from tests.fake_livekit import API_KEY, API_SECRET, TRUNK, Callee, FakeLiveKit
from tests.integration.providers.conftest import answered, parked, until

WEBHOOK_PATH = "/webhooks/livekit"


def livekit_app_config(
    tmp_path: Path, url: str, *, trunk: str = TRUNK, **livekit: Any
) -> configmod.Config:
    return make_config(
        tmp_path,
        telephony={
            "provider": "livekit",
            "livekit": {
                "url": url,
                "api_key": API_KEY,
                "api_secret": API_SECRET,
                "poll_interval_seconds": 600.0,
                **livekit,
            },
        },
        phone_numbers=[
            {
                "id": NUMBER,
                "organization": ORG,
                "number": "+12025550100",
                "sip_trunk_id": trunk,
                "outbound_agent": "agent_a",
                "calls_per_second": 1000,
            }
        ],
    )


async def start_on_fake(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, config: configmod.Config
) -> Running:
    running = await start_app(config, clock=clock)
    fake.webhook_url = str(running.client.make_url(WEBHOOK_PATH))
    return running


def provider_of(running: Running) -> LiveKitProvider:
    provider = running.engine.provider
    assert isinstance(provider, LiveKitProvider)
    return provider


async def test_job_reaches_every_outcome_through_livekit(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, tmp_path: Path
) -> None:
    """Callees that answer, are busy, decline, ring out and fail end per the table, dialed once."""
    script = {
        "+12025550131": Callee.answers(talk_seconds=20),
        "+12025550132": Callee.fails(486),
        "+12025550133": Callee.fails(603),
        "+12025550134": Callee.rings_out(),
        "+12025550135": Callee.fails(503),
        "+12025550136": Callee.fails(488),
    }
    fake.numbers.update(script)
    running = await start_on_fake(start_app, fake, clock, livekit_app_config(tmp_path, fake.url))
    created = await running.create_json(
        [{"phone": n, "name": f"callee {i}"} for i, n in enumerate(script)],
        maxAttempts=1,
        concurrentCallLimit=10,
    )
    await until(lambda: len(fake.dials) == len(script))
    await until(lambda: fake.room_of("+12025550134") is not None)  # ringing
    await answered(provider_of(running), _request_for(running, "+12025550131"))
    await clock.advance(30)  # the answered call talks 20 s; the ring-out is cancelled at 30 s
    body = await running.wait_status(created["batchJobId"], "completed")

    contacts = {c["phoneNumber"]: c for c in body["contacts"]}
    outcomes = {n: (c["status"], c["errorCode"], c["callDuration"]) for n, c in contacts.items()}
    assert outcomes == {
        "+12025550131": ("completed", None, 20),
        "+12025550132": ("busy", "486", None),
        "+12025550133": ("blocked", "603", None),
        "+12025550134": ("no_answer", None, None),
        "+12025550135": ("carrier_error", "503", None),
        "+12025550136": ("failed", "488", None),
    }
    assert contacts["+12025550132"]["failureReason"] == "SIP 486 Busy Here"
    assert contacts["+12025550134"]["failureReason"] == "no answer within 30 s (ring-out)"
    assert body["successfulCalls"] == 1 and body["failedCalls"] == 5
    assert Counter(d.sip_call_to for d in fake.dials) == Counter(list(script))
    metadata = [json.loads(d.metadata) for d in fake.dispatches]
    assert {m["contactData"]["name"] for m in metadata} == {f"callee {i}" for i in range(6)}
    assert {m["jobId"] for m in metadata} == {created["batchJobId"]}
    assert all(d.agent_name == "agent-a" for d in fake.dispatches)
    assert fake.rooms == {}
    assert sorted(fake.deleted) == sorted(c["roomName"] for c in contacts.values())


def _request_for(running: Running, phone: str) -> DialRequest:
    calls = provider_of(running).calls.values()
    return next(c.request for c in calls if c.request.to_number == phone)


async def test_webhook_route_is_public_signed_and_idempotent(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, tmp_path: Path
) -> None:
    """The webhook needs no API key, answers 401 to a bad signature, and applies an event once."""
    fake.numbers["+12025550141"] = Callee.answers()
    running = await start_on_fake(start_app, fake, clock, livekit_app_config(tmp_path, fake.url))
    created = await running.create_json([{"phone": "+12025550141"}])
    await until(lambda: bool(provider_of(running).calls))
    request = _request_for(running, "+12025550141")
    await answered(provider_of(running), request)
    await fake.webhooks_delivered()
    fake.webhooks_enabled = False
    await clock.advance(12)
    fake.hang_up(request.room_name)  # we deliver the event by hand below
    fake.webhooks_enabled = True
    left = api.WebhookEvent(
        event="participant_left",
        id="EV_hangup",
        created_at=int(clock.now()),
        room=api.Room(name=request.room_name),
        participant=api.ParticipantInfo(
            identity=provider_of(running).calls[request.room_name].identity,
            disconnect_reason=api.DisconnectReason.CLIENT_INITIATED,
        ),
    )
    client = running.client
    forged = FakeLiveKit(clock, api_secret="not-the-secret-not-the-secret-00")
    body = json_format.MessageToJson(left, indent=0)
    assert await fake.post_webhook(left, authorization=forged.sign(body)) == 401
    assert await fake.post_webhook(left, authorization="") == 401
    resp = await client.post(WEBHOOK_PATH, data="{}", headers={"x-api-key": running.key})
    assert resp.status == 401  # an API key is no signature
    detail = await running.detail(created["batchJobId"])
    assert detail["contacts"][0]["status"] == "dialing"
    assert running.engine.live_calls() == 1

    stray = api.WebhookEvent(event="room_finished", id="EV_stray", room=api.Room(name="nope"))
    assert await fake.post_webhook(stray) == 200
    assert await fake.post_webhook(left) == 200
    body = await running.wait_status(created["batchJobId"], "completed")
    assert body["contacts"][0]["callDuration"] == 12
    assert await fake.post_webhook(left) == 200  # the same event again: nothing changes
    assert await running.detail(created["batchJobId"]) == body


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"api_secret": "not-the-secret-not-the-secret-00"}, "rejected the API credentials"),
        ({"trunk": "ST_missing"}, "SIP trunk not found"),
    ],
)
async def test_provider_rejections_fail_the_job_and_leave_contacts(
    start_app: StartApp,
    fake: FakeLiveKit,
    clock: FakeClock,
    tmp_path: Path,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    """Bad credentials or a missing trunk fail the job after a few tries; contacts stay pending."""
    config = livekit_app_config(tmp_path, fake.url, **overrides)
    running = await start_on_fake(start_app, fake, clock, config)
    phones = [f"+1202555015{i}" for i in range(5)]
    created = await running.create_json([{"phone": p} for p in phones], concurrentCallLimit=1)
    body = await running.wait_status(created["batchJobId"], "failed")
    assert reason in body["statusReason"]
    assert body["statusBreakdown"]["pending"] == 5
    assert all(c["attemptCount"] == 0 for c in body["contacts"])
    assert len(fake.dials) == (3 if "trunk" in overrides else 0)


async def test_unreachable_livekit_does_not_spend_attempts(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, tmp_path: Path
) -> None:
    """When LiveKit cannot be reached the contact is re-queued with its attempts untouched, and
    the dial that was never sent leaves no attempt row."""
    await fake.close()  # nothing listens on its port any more
    running = await start_on_fake(start_app, fake, clock, livekit_app_config(tmp_path, fake.url))
    created = await running.create_json([{"phone": "+12025550161"}])
    job_id = created["batchJobId"]

    async def requeued() -> bool:
        contact = (await running.detail(job_id))["contacts"][0]
        return bool(contact["status"] == "queued")

    await wait_until(requeued)
    contact = (await running.detail(job_id))["contacts"][0]
    assert contact["attemptCount"] == 0
    assert await running.store.list_attempts(int(contact["id"].removeprefix("contact_"))) == []
    outage = running.engine.provider_outage
    assert outage is not None and "LiveKit unreachable" in outage.error


async def _job_until_outage(
    start_app: StartApp,
    fake: FakeLiveKit,
    clock: FakeClock,
    tmp_path: Path,
    phones: list[str],
    reason: str,
    limit: int | None = None,
) -> tuple[Running, str]:
    """A job of `phones` on the fake LiveKit, once the engine stopped dialing for `reason`."""
    running = await start_on_fake(start_app, fake, clock, livekit_app_config(tmp_path, fake.url))
    created = await running.create_json(
        [{"phone": p} for p in phones], concurrentCallLimit=limit or len(phones)
    )
    await until(lambda: running.engine.provider_outage is not None)
    outage = running.engine.provider_outage
    assert outage is not None and reason in outage.error
    return running, str(created["batchJobId"])


async def test_a_limit_of_the_project_spends_no_attempt_and_dialing_resumes(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, tmp_path: Path
) -> None:
    """LiveKit refusing dials at a limit of the project (429 resource_exhausted, no SIP code):
    no contact fails or spends an attempt, the job keeps running, dialing stops with the reason
    on /healthz, and once LiveKit takes calls again the probe gets through, the others are
    dialed as soon as it is answered, and every contact is called once."""
    fake.at_limit.add("SIP/CreateSIPParticipant")
    fake.default = Callee.answers(talk_seconds=5)
    phones = ["+12025550181", "+12025550182", "+12025550183"]
    running, job_id = await _job_until_outage(
        start_app, fake, clock, tmp_path, phones, "a limit of the project was reached"
    )

    async def all_back() -> bool:
        return all(c["status"] == "queued" for c in (await running.detail(job_id))["contacts"])

    await wait_until(all_back)
    body = await running.detail(job_id)
    assert body["status"] == "running"
    assert [c["attemptCount"] for c in body["contacts"]] == [0, 0, 0]
    for contact in body["contacts"]:
        assert await running.store.list_attempts(int(contact["id"].removeprefix("contact_"))) == []
    health = await (await running.client.get("/healthz")).json()
    assert "a limit of the project was reached" in health["checks"]["provider"]
    assert fake.dials == []

    fake.at_limit.clear()  # calls end, or the quota is raised
    await clock.advance(NOT_PLACED_BACKOFF_SECONDS)  # one probe dial, alone
    # Answered: the others are dialed at once, not when the probe's call ends.
    await until(lambda: len(fake.dials) == 3)
    assert running.engine.provider_outage is None
    for phone in phones:  # each hang-up is on the clock before it moves
        await answered(provider_of(running), _request_for(running, phone))
    await clock.advance(5)
    body = await running.wait_status(job_id, "completed")
    assert sorted(d.sip_call_to for d in fake.dials) == phones
    assert [(c["status"], c["attemptCount"]) for c in body["contacts"]] == [("completed", 1)] * 3
    assert running.engine.provider_outage is None


async def test_livekit_failing_dials_stops_dialing_instead_of_spending_every_attempt(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, tmp_path: Path
) -> None:
    """LiveKit failing dial requests itself (a 5xx without a SIP code, e.g. its SIP service
    down): the attempt that met it counts (the phone may have rung) and is retried, but the
    engine stops dialing and probes, so the job's other contacts keep their attempts; once
    LiveKit dials again they are all called."""
    fake.default = Callee.server_error()
    phones = [f"+1202555019{i}" for i in range(4)]
    running, job_id = await _job_until_outage(
        start_app, fake, clock, tmp_path, phones, "LiveKit error (internal", limit=1
    )

    async def first_requeued() -> bool:
        contacts = (await running.detail(job_id))["contacts"]
        return [c["attemptCount"] for c in contacts] == [1, 0, 0, 0]

    await wait_until(first_requeued)
    assert len(fake.dials) == 1
    health = await (await running.client.get("/healthz")).json()
    assert "LiveKit error" in health["checks"]["provider"]

    fake.default = Callee.answers(talk_seconds=5)  # LiveKit dials again
    for _ in range(len(phones) - 1):  # the probe, then one call at a time (limit 1)
        dials = len(fake.dials)
        await clock.advance(NOT_PLACED_BACKOFF_SECONDS)
        await until(lambda dials=dials: len(fake.dials) == dials + 1)
        await answered(provider_of(running), _request_for(running, fake.dials[-1].sip_call_to))
    assert running.engine.provider_outage is None
    await clock.advance(5)
    body = await running.detail(job_id)
    assert sorted(c["attemptCount"] for c in body["contacts"]) == [1, 1, 1, 1]
    assert sorted(d.sip_call_to for d in fake.dials[1:]) == phones[1:]


async def _interrupt_live_call(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, config: configmod.Config
) -> tuple[str, str]:
    """Start a job whose one call is answered, then stop the app mid-call (job id, room)."""
    fake.numbers["+12025550171"] = Callee.answers()
    first = await start_on_fake(start_app, fake, clock, config)
    created = await first.create_json([{"phone": "+12025550171"}])
    await until(lambda: bool(provider_of(first).calls))
    request = _request_for(first, "+12025550171")
    await answered(provider_of(first), request)
    await first.client.close()
    assert request.room_name in fake.rooms  # the call goes on in LiveKit
    return created["batchJobId"], request.room_name


async def test_restart_reattaches_to_a_live_call(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, tmp_path: Path
) -> None:
    """After a restart, a call still in its room is followed to its end and never re-dialed."""
    config = livekit_app_config(tmp_path, fake.url)
    job_id, room = await _interrupt_live_call(start_app, fake, clock, config)
    second = await start_on_fake(start_app, fake, clock, config)
    await until(lambda: room in provider_of(second).calls)
    await parked(clock)
    await clock.advance(25)
    fake.hang_up(room)
    body = await second.wait_status(job_id, "completed")
    contact = body["contacts"][0]
    assert (contact["status"], contact["callDuration"], contact["attemptCount"]) == (
        "completed",
        25,
        1,
    )
    assert len(fake.dials) == 1
    assert room in fake.deleted


async def test_restart_with_the_room_gone_records_interrupted_and_retries_per_policy(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, tmp_path: Path
) -> None:
    """After a restart a gone room records the attempt interrupted; its retry waits its turn."""
    config = livekit_app_config(tmp_path, fake.url)
    job_id, room = await _interrupt_live_call(start_app, fake, clock, config)
    fake.forget_room(room)
    second = await start_on_fake(start_app, fake, clock, config)

    async def queued() -> bool:
        return bool((await second.detail(job_id))["contacts"][0]["status"] == "queued")

    await wait_until(queued)
    contact = (await second.detail(job_id))["contacts"][0]
    assert contact["failureReason"] == "interrupted"
    assert contact["attemptCount"] == 1
    assert contact["nextRetryAt"] is not None
    assert len(fake.dials) == 1  # not re-dialed on the spot
    await clock.advance(300)  # the retry delay of the default policy
    await until(lambda: len(fake.dials) == 2)


async def _agent_awaited(clock: FakeClock, fake: FakeLiveKit, times: int) -> None:
    """Until the provider waits on the clock for the agent of the `times`-th dispatch: it has
    looked at the room once since that dispatch (so its join deadline is counted from before
    the test moves the clock; a deadline alone could be the engine's, under load, while the
    provider is still dispatching), and its next look is due within AGENT_POLL_SECONDS."""

    def looked_since_dispatch() -> bool:
        dispatches = [i for i, c in enumerate(fake.calls) if c.endswith("/CreateDispatch")]
        if len(dispatches) < times:
            return False
        return "RoomService/ListParticipants" in fake.calls[dispatches[times - 1] :]

    await until(
        lambda: (
            looked_since_dispatch()
            and (due := clock.next_deadline) is not None
            and clock.now() < due <= clock.now() + AGENT_POLL_SECONDS
        )
    )


async def test_agent_that_never_joins_gives_attempts_back_and_pauses_the_job(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, tmp_path: Path
) -> None:
    """An agent that never joins: no call, its dispatch and room removed, the attempt given back
    (attemptCount unchanged, no attempt row, retried 10 s later); the third time in a row the job
    pauses saying why. Resumed, it counts afresh, and dials once the agent joins."""
    phone = "+12025550181"
    fake.numbers[phone] = Callee.answers(talk_seconds=5)
    fake.agent_join_seconds = None
    config = livekit_app_config(
        tmp_path, fake.url, agent_join_timeout_seconds=10, agent_join_failure_limit=3
    )
    running = await start_on_fake(start_app, fake, clock, config)

    async def contact() -> dict[str, Any]:
        return dict((await running.detail(job_id))["contacts"][0])

    async def not_joined(times: int) -> dict[str, Any]:
        """Let the `times`-th attempt's wait for the agent run out; the contact as recorded."""
        await until(lambda: len(fake.dispatches) == times)
        await _agent_awaited(clock, fake, times)
        await clock.advance(10)
        ended_at = clock.now()
        await until(lambda: len(fake.deleted) == times)
        found: dict[str, Any] = {}

        async def recorded() -> bool:
            nonlocal found
            found = await contact()
            return bool(found["status"] == "queued")

        await wait_until(recorded)
        assert found["nextRetryAt"] == service.iso(ended_at + NOT_PLACED_BACKOFF_SECONDS)
        return found

    with capture_logs() as logs:
        created = await running.create_json([{"phone": phone}], concurrentCallLimit=1)
        job_id = created["batchJobId"]
        for times in (1, 2):
            found = await not_joined(times)
            assert found["attemptCount"] == 0
            assert (await running.detail(job_id))["status"] == "running"
            await clock.advance(NOT_PLACED_BACKOFF_SECONDS)  # the retry is due
        await not_joined(3)
        body = await running.wait_status(job_id, "paused")

    assert body["pauseReason"] == "Agent 'agent-a' did not join within 10 s, 3 times in a row"
    [paused_contact] = body["contacts"]
    assert (paused_contact["status"], paused_contact["attemptCount"]) == ("queued", 0)
    contact_id = int(paused_contact["id"].removeprefix("contact_"))
    assert await running.store.list_attempts(contact_id) == []
    assert fake.dials == [] and "SIP/CreateSIPParticipant" not in fake.calls
    assert len(fake.deleted_dispatches) == 3 and len(fake.deleted) == 3
    assert len([e for e in logs if e["event"] == "agent_not_joined"]) == 3
    assert running.engine.provider_outage is None  # LiveKit answered: no outage
    metadata = json.loads(fake.dispatches[0].metadata)
    assert metadata["contactId"] == paused_contact["id"]  # the id the API shows
    assert metadata["jobId"] == job_id and metadata["attempt"] == 1
    assert metadata["callerNumber"] == "+12025550100" and metadata["phoneNumber"] == phone

    resp = await running.client.post(f"/batch/jobs/{job_id}/resume", headers=running.headers())
    assert resp.status == 200
    await clock.advance(NOT_PLACED_BACKOFF_SECONDS)  # the contact's retry is due
    await not_joined(4)
    assert (await running.detail(job_id))["status"] == "running"  # a fresh count: 1 of 3
    fake.agent_join_seconds = 0.0  # the agent worker is back
    await clock.advance(NOT_PLACED_BACKOFF_SECONDS)
    await until(lambda: len(fake.dials) == 1)
    await answered(provider_of(running), _request_for(running, phone))
    await clock.advance(5)
    body = await running.wait_status(job_id, "completed")
    done = body["contacts"][0]
    assert (done["status"], done["attemptCount"], done["callDuration"]) == ("completed", 1, 5)


async def test_agent_reads_its_metadata_and_reports_through_the_callback_url(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, tmp_path: Path
) -> None:
    """The agent's side of the loop on LiveKit: the dispatch metadata names the API's contact id
    and a callbackUrl on this service; a voicemail posted there with the token while the call is
    live queues the contact for a retry once the call ends."""
    fake.numbers["+12025550141"] = Callee.answers(talk_seconds=20)
    config = livekit_app_config(tmp_path, fake.url)
    running = await start_on_fake(start_app, fake, clock, config)
    running.engine.public_url = str(running.client.make_url("/")).rstrip("/")
    created = await running.create_json(
        [{"phone": "+12025550141", "name": "Ada"}], maxAttempts=2, name="Reminders"
    )
    job_id = created["batchJobId"]
    await until(lambda: len(fake.dials) == 1)
    await answered(provider_of(running), _request_for(running, "+12025550141"))
    meta = json.loads(fake.dispatches[0].metadata)
    detail = await running.detail(job_id)
    assert (meta["contactId"], meta["jobName"], meta["callerNumber"]) == (
        detail["contacts"][0]["id"],
        "Reminders",
        "+12025550100",
    )
    path = meta["callbackUrl"].removeprefix(running.engine.public_url)
    assert path == f"/calls/{detail['contacts'][0]['roomName']}/result"
    resp = await running.client.post(
        path,
        json={"disposition": "voicemail", "summary": "machine"},
        headers={"Authorization": f"Bearer {meta['callbackToken']}"},
    )
    assert resp.status == 200, await resp.text()
    await clock.advance(20)  # the callee hangs up

    async def retry_queued() -> bool:
        contact = (await running.detail(job_id))["contacts"][0]
        return contact["status"] == "queued"

    await wait_until(retry_queued)
    contact = (await running.detail(job_id))["contacts"][0]
    assert (contact["disposition"], contact["summary"], contact["attemptCount"]) == (
        "voicemail",
        "machine",
        1,
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


async def test_a_call_is_in_the_dial_log_from_its_dial_not_from_its_agent_wait(
    start_app: StartApp, fake: FakeLiveKit, clock: FakeClock, tmp_path: Path
) -> None:
    """While its agent is dispatched and awaited (up to 10 s), nobody has been dialed: the dial
    log does not list the attempt, so a crash then gives the contact back with its attempt
    uncounted. It is listed once LiveKit is asked to dial. (Listed from the start, a crash in
    the wait cost an attempt for nobody: with maxAttempts 1, the person was never called.)"""
    phone = "+12025550191"
    fake.numbers[phone] = Callee.answers(talk_seconds=5)
    fake.agent_join_for[phone] = 5.0
    config = livekit_app_config(tmp_path, fake.url, agent_join_timeout_seconds=10)
    running = await start_on_fake(start_app, fake, clock, config)
    dial_log = Path(running.store.path + ".dialed")
    created = await running.create_json([{"phone": phone}], maxAttempts=1)
    await until(lambda: len(fake.dispatches) == 1)
    await _agent_awaited(clock, fake, 1)
    [contact] = (await running.detail(created["batchJobId"]))["contacts"]
    listed = f"{contact['id'].removeprefix('contact_')} 1"
    assert contact["status"] == "dialing"
    assert listed not in lines(dial_log)
    await clock.advance(5)  # the agent joins
    await until(lambda: len(fake.dials) == 1)
    assert listed in lines(dial_log)
    await answered(provider_of(running), _request_for(running, phone))
    await clock.advance(5)
    body = await running.wait_status(created["batchJobId"], "completed")
    assert body["contacts"][0]["attemptCount"] == 1
