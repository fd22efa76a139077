"""Results from the agent: POST /calls/{roomName}/result with the attempt's callback token or an
API key, and what each disposition does to the contact, its job and the do-not-call list."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from dialer import results
from dialer.clock import FakeClock
from dialer.providers.base import DialRequest, DialResult
from dialer.providers.livekit import agent_metadata
from dialer.states import ContactStatus
from tests.conftest import (
    NO_CALLING_RULES,
    ORG,
    OTHER_ORG,
    Running,
    StartApp,
    make_config,
    wait_until,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()  # the fake clock's start


class AgentLine:
    """A provider whose calls are answered at once and stay live until the test hangs up."""

    name = "agent-line"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.requests: dict[str, DialRequest] = {}
        self.order: list[str] = []
        self._ends: dict[str, asyncio.Future[ContactStatus]] = {}

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def dial(self, request: DialRequest) -> DialResult:
        self.requests[request.room_name] = request
        self.order.append(request.room_name)
        end = self._ends[request.room_name] = asyncio.get_running_loop().create_future()
        answered = self.clock.now()
        status = await end
        return DialResult(
            status=status,
            answered_at=answered if status is ContactStatus.COMPLETED else None,
            ended_at=self.clock.now(),
            duration=round(self.clock.now() - answered),
            room_name=request.room_name,
        )

    def hang_up(self, room: str, status: ContactStatus = ContactStatus.COMPLETED) -> None:
        self._ends[room].set_result(status)

    async def resume(self, request: DialRequest) -> DialResult:
        return DialResult(status=ContactStatus.FAILED, reason="interrupted", retryable=True)

    def live(self) -> list[str]:
        return [room for room, end in self._ends.items() if not end.done()]


async def start(start_app: StartApp, tmp_path: Path, **overrides: Any) -> tuple[Running, AgentLine]:
    clock = FakeClock()
    line = AgentLine(clock)
    running = await start_app(make_config(tmp_path, **overrides), provider=line, clock=clock)
    return running, line


async def one_call(
    running: Running, line: AgentLine, phone: str = "+12025550101", **fields: Any
) -> tuple[str, str]:
    """Create a one-contact job; return (job id, room) once its call is live."""
    created = await running.create_json([{"phone": phone, "name": "Ada"}], **fields)
    job_id = created["batchJobId"]
    await wait_until(lambda: has_live(line, job_id))
    room = next(r for r in line.live() if r.startswith(job_id))
    return job_id, room


async def has_live(line: AgentLine, job_id: str) -> bool:
    return any(r.startswith(job_id) for r in line.live())


async def parked(running: Running) -> bool:
    """The engine has looked and has nothing to do until a later time."""
    return running.engine.idle.is_set()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def post(
    running: Running, room: str, body: Any, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    resp = await running.client.post(f"/calls/{room}/result", json=body, headers=headers)
    return resp.status, await resp.json()


async def contact(running: Running, job_id: str) -> dict[str, Any]:
    contacts: list[dict[str, Any]] = (await running.detail(job_id))["contacts"]
    return contacts[0]


async def ended(running: Running, line: AgentLine, job_id: str, room: str, **hang: Any) -> None:
    """Hang up and wait until the outcome is written."""
    line.hang_up(room, **hang)

    async def written() -> bool:
        return (await contact(running, job_id))["status"] != "dialing"

    await wait_until(written)


def token_of(line: AgentLine, room: str) -> str:
    return line.requests[room].agent_token


# ----------------------------------------------------------------- the call's context


async def test_every_call_carries_its_callback_url_token_and_context(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path, server={"public_url": "https://dialer.test"})
    _, room = await one_call(running, line, name="Renewals")
    request = line.requests[room]
    assert request.job_name == "Renewals"
    assert request.callback_url == f"https://dialer.test/calls/{room}/result"
    assert request.timezone == "America/New_York"  # +1 202: Washington DC
    secret = await running.store.callback_secret()
    assert results.token_matches(secret, room, request.agent_token)
    shown = repr(request)
    assert "callback_token" not in shown and "callback_secret" not in shown
    assert request.agent_token not in shown and repr(secret) not in shown
    # The token authorizes that attempt only.
    assert not results.token_matches(secret, room + "x", request.agent_token)


# ----------------------------------------------------------------- dispositions


async def test_a_result_posted_while_live_takes_effect_when_the_call_ends(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path)
    job_id, room = await one_call(running, line)
    body = {"disposition": "not_interested", "summary": "Has a plan", "data": {"score": 2}}
    status, answer = await post(running, room, body, bearer(token_of(line, room)))
    assert status == 200, answer
    assert (answer["applied"], answer["contactStatus"]) == (False, "dialing")
    assert answer["result"]["source"] == "token"
    shown = await contact(running, job_id)
    assert (shown["status"], shown["disposition"], shown["summary"]) == (
        "dialing",
        "not_interested",
        "Has a plan",
    )
    await ended(running, line, job_id, room)
    detail = await running.wait_status(job_id, "completed")
    shown = detail["contacts"][0]
    assert (shown["status"], shown["disposition"], shown["resultData"]) == (
        "completed",
        "not_interested",
        {"score": 2},
    )
    history = await (
        await running.client.get(f"/calls/{room}/result", headers=running.headers())
    ).json()
    assert [r["disposition"] for r in history["history"]] == ["not_interested"]
    assert history["latest"]["appliedAt"] is not None


async def test_voicemail_is_retried_under_the_job_policy(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path)
    job_id, room = await one_call(running, line, maxAttempts=2)
    await post(running, room, {"disposition": "voicemail"}, bearer(token_of(line, room)))
    await ended(running, line, job_id, room)
    shown = await contact(running, job_id)
    assert (shown["status"], shown["attemptCount"], shown["disposition"]) == (
        "queued",
        1,
        "voicemail",
    )
    assert shown["failureReason"] == "voicemail"
    retry_at = datetime.fromisoformat(shown["nextRetryAt"].replace("Z", "+00:00")).timestamp()
    assert retry_at == pytest.approx(running.clock.now() + 300, abs=1)
    # The ElevenLabs-shaped route shows the recipient as a voicemail.
    resp = await running.client.get(f"/v1/convai/batch-calling/{job_id}", headers=running.headers())
    assert (await resp.json())["recipients"][0]["status"] == "voicemail"
    await running.clock.advance(301)
    await wait_until(lambda: has_live(line, job_id))
    assert len(line.order) == 2  # dialed again, once
    second = line.live()[0]
    assert line.requests[second].attempt_no == 2


async def test_voicemail_ends_the_contact_when_the_job_does_not_retry_them(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path)
    job_id, room = await one_call(running, line, maxAttempts=3, retryOnVoicemail=False)
    assert (await running.detail(job_id))["retryOnVoicemail"] is False
    await post(running, room, {"disposition": "voicemail"}, bearer(token_of(line, room)))
    with capture_logs() as logs:
        await ended(running, line, job_id, room)
        detail = await running.wait_status(job_id, "completed")
    assert detail["contacts"][0]["status"] == "no_answer"
    assert detail["failedCalls"] == 1
    # The log tells the same: the call ended completed, then the result made it no_answer.
    events = [e for e in logs if e["event"] in ("call_attempt_finished", "agent_result_applied")]
    assert [(e["event"], e["next_status"]) for e in events] == [
        ("call_attempt_finished", "completed"),
        ("agent_result_applied", "no_answer"),
    ]
    assert events[1]["disposition"] == "voicemail" and events[1]["attempt"] == 1


async def test_a_late_callback_request_reopens_the_job_and_is_dialed_at_its_time(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path)
    job_id, room = await one_call(running, line, maxAttempts=1)
    await ended(running, line, job_id, room)
    await running.wait_status(job_id, "completed")
    await running.clock.advance(60)  # a minute after the call: still within the window
    at = running.clock.now() + 3600
    body = {"disposition": "callback_requested", "callbackAt": _iso(at)}
    status, answer = await post(running, room, body, bearer(token_of(line, room)))
    assert status == 200, answer
    assert (answer["applied"], answer["contactStatus"]) == (True, "queued")
    detail = await running.wait_status(job_id, "running")
    shown = detail["contacts"][0]
    assert (shown["nextRetryAt"], shown["maxAttempts"], shown["attemptCount"]) == (_iso(at), 2, 1)
    assert detail["completedAt"] is None
    await running.clock.advance(3599)
    await wait_until(lambda: parked(running))
    assert line.live() == []  # not before its time
    await running.clock.advance(2)
    await wait_until(lambda: has_live(line, job_id))
    assert line.requests[line.live()[0]].attempt_no == 2


async def test_a_callback_outside_the_calling_window_moves_to_its_next_opening(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path)
    window = [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "00:00"}]
    window[0]["end"] = "12:00"
    job_id, room = await one_call(
        running, line, callingWindows=window, windowTimezone="UTC", maxAttempts=2
    )
    evening = T0 + 20 * 3600  # 20:00 UTC on the first day: closed
    body = {"disposition": "callback_requested", "callbackAt": _iso(evening)}
    assert (await post(running, room, body, bearer(token_of(line, room))))[0] == 200
    await ended(running, line, job_id, room)
    shown = await contact(running, job_id)
    assert (shown["status"], shown["nextRetryAt"]) == ("queued", _iso(T0 + 86_400))


async def test_do_not_call_lists_the_number_for_every_job_of_the_organization(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path)
    phone = "+12025550123"
    job_id, room = await one_call(running, line, phone=phone)
    waiting = await running.create_json(
        [{"phone": phone}], scheduledStartTime=_iso(T0 + 86_400), name="later"
    )
    await post(running, room, {"disposition": "do_not_call"}, bearer(token_of(line, room)))
    await ended(running, line, job_id, room)
    assert (await contact(running, job_id))["status"] == "completed"
    resp = await running.client.get("/dnc", params={"number": phone}, headers=running.headers())
    listed = (await resp.json())["numbers"]
    assert [(e["number"], e["source"], e["jobId"]) for e in listed] == [(phone, "agent", job_id)]
    other = await contact(running, waiting["batchJobId"])
    assert (other["status"], other["failureReason"]) == ("cancelled", "do_not_call")
    again = await running.create_json([{"phone": phone}, {"phone": "+12025550124"}])
    await wait_until(lambda: has_live(line, again["batchJobId"]))
    assert [line.requests[r].to_number for r in line.live()] == ["+12025550124"]


async def test_the_latest_result_wins_and_every_result_is_kept(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path)
    job_id, room = await one_call(running, line, maxAttempts=3)
    await ended(running, line, job_id, room)
    token = bearer(token_of(line, room))
    assert (await post(running, room, {"disposition": "voicemail"}, token))[0] == 200
    assert (await contact(running, job_id))["status"] == "queued"
    status, answer = await post(running, room, {"disposition": "completed"}, token)
    assert (status, answer["contactStatus"]) == (200, "completed")
    shown = (await running.wait_status(job_id, "completed"))["contacts"][0]
    assert (shown["status"], shown["disposition"], shown["nextRetryAt"]) == (
        "completed",
        "completed",
        None,
    )
    history = await (await running.client.get(f"/calls/{room}/result", headers=token)).json()
    assert [r["disposition"] for r in history["history"]] == ["voicemail", "completed"]
    assert history["latest"]["disposition"] == "completed"


# ----------------------------------------------------------------- who may post, and when


async def test_tokens_keys_and_rooms(start_app: StartApp, tmp_path: Path) -> None:
    running, line = await start(start_app, tmp_path)
    job_id, room = await one_call(running, line)
    other_job, other_room = await one_call(running, line, phone="+12025550102")
    done = {"disposition": "completed"}
    # Another attempt's token, a made-up one, none at all: 401.
    for headers in (bearer(token_of(line, other_room)), bearer("x" * 43), {}):
        status, answer = await post(running, room, done, headers)
        assert status == 401, (headers, answer)
    # The organization's API key works; another organization's does not see the call.
    status, answer = await post(running, room, done, running.headers())
    assert (status, answer["result"]["source"]) == (200, "api_key")
    status, answer = await post(running, other_room, done, running.headers(running.other_key))
    assert (status, answer["code"]) == (404, "call_not_found")
    # Rooms that do not exist, or are not ours at all.
    for unknown in (room[:-6] + "000000", "not-a-room", f"{job_id}_c999999_a1_abcdef"):
        status, answer = await post(running, unknown, done, bearer(token_of(line, room)))
        assert (status, answer["code"]) == (404, "call_not_found"), unknown
    assert (await contact(running, other_job))["disposition"] is None


async def test_a_result_after_the_window_is_refused(start_app: StartApp, tmp_path: Path) -> None:
    running, line = await start(start_app, tmp_path)
    job_id, room = await one_call(running, line)
    await ended(running, line, job_id, room)
    await running.clock.advance(15 * 60 - 1)
    token = bearer(token_of(line, room))
    assert (await post(running, room, {"disposition": "completed"}, token))[0] == 200
    await running.clock.advance(2)
    status, answer = await post(running, room, {"disposition": "voicemail"}, token)
    assert (status, answer["code"]) == (410, "result_window_closed")
    assert (await contact(running, job_id))["disposition"] == "completed"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"disposition": "callback_requested"}, "callbackAt is required"),
        ({"disposition": "hung_up"}, "disposition"),
        ({"disposition": "completed", "summary": "x" * 2001}, "summary"),
        ({"disposition": "completed", "data": {"blob": "x" * 17_000}}, "16 KB"),
        ({"disposition": "completed", "data": [1, 2]}, "data"),
        ({"disposition": "completed", "extra": 1}, "unknown field 'extra'"),
        ({"disposition": "callback_requested", "callbackAt": "tomorrow"}, "ISO 8601"),
        ({"disposition": "callback_requested", "callbackAt": "2999-01-01T00:00:00Z"}, "days"),
        ({"disposition": "callback_requested", "callbackAt": "0001-01-01T00:00:00+14:00"}, "1970"),
    ],
)
async def test_bad_bodies_are_400_and_change_nothing(
    start_app: StartApp, tmp_path: Path, body: dict[str, Any], problem: str
) -> None:
    running, line = await start(start_app, tmp_path)
    job_id, room = await one_call(running, line)
    status, answer = await post(running, room, body, bearer(token_of(line, room)))
    assert (status, answer["code"]) == (400, "validation_error"), answer
    assert problem in answer["error"]
    resp = await running.client.post(
        f"/calls/{room}/result", data=b"{nope", headers=bearer(token_of(line, room))
    )
    assert (resp.status, (await resp.json())["code"]) == (400, "invalid_json")
    history = await (
        await running.client.get(f"/calls/{room}/result", headers=running.headers())
    ).json()
    assert history["history"] == []
    assert (await contact(running, job_id))["disposition"] is None


async def test_a_result_body_past_64_kb_is_refused_unread(
    start_app: StartApp, tmp_path: Path
) -> None:
    """The largest valid result is ~20 KB (16 KB of data, a 2,000-character summary): a body
    past 64 KB is 413 payload_too_large, whether its length is announced or it is sent in
    chunks (before, the route read and parsed up to the general 8 MB)."""
    running, line = await start(start_app, tmp_path)
    job_id, room = await one_call(running, line)
    token = bearer(token_of(line, room))
    # Valid JSON, 65 KB of spaces: only its size is wrong.
    body = b'{"disposition": "completed"' + b" " * (64 * 1024) + b"}"

    async def chunks() -> Any:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    for data in (body, chunks()):
        resp = await running.client.post(
            f"/calls/{room}/result",
            data=data,
            headers={**token, "Content-Type": "application/json"},
        )
        answer = await resp.json()
        assert (resp.status, answer["code"]) == (413, "payload_too_large"), answer
        assert answer["error"] == "Request body is larger than 64 KB"
    # Just under it is read as usual.
    fits = b'{"disposition": "completed"' + b" " * (60 * 1024) + b"}"
    resp = await running.client.post(
        f"/calls/{room}/result", data=fits, headers={**token, "Content-Type": "application/json"}
    )
    assert resp.status == 200, await resp.text()
    history = await (
        await running.client.get(f"/calls/{room}/result", headers=running.headers())
    ).json()
    assert [r["disposition"] for r in history["history"]] == ["completed"]
    assert (await contact(running, job_id))["status"] == "dialing"


async def test_an_attempt_takes_a_bounded_number_of_results(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path)
    _, room = await one_call(running, line)
    token = bearer(token_of(line, room))
    for _ in range(results.MAX_RESULTS_PER_ATTEMPT):
        assert (await post(running, room, {"disposition": "completed"}, token))[0] == 200
    status, answer = await post(running, room, {"disposition": "completed"}, token)
    assert (status, answer["code"]) == (429, "too_many_results")


# ----------------------------------------------------------------- where results show


async def test_results_show_in_the_export_and_the_live_events(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path)
    job_id, room = await one_call(running, line)
    stream = await running.client.get(f"/batch/jobs/{job_id}/events", headers=running.headers())
    await stream.content.readuntil(b"\n\n")  # the first progress event
    body = {"disposition": "completed", "summary": "Booked", "data": {"slot": "tue"}}
    await post(running, room, body, bearer(token_of(line, room)))
    frame = (await stream.content.readuntil(b"\n\n")).decode()
    assert frame.startswith("event: result\n"), frame
    data = json.loads(frame.split("data: ", 1)[1])
    assert (data["roomName"], data["disposition"], data["data"]) == (
        room,
        "completed",
        {"slot": "tue"},
    )
    stream.close()
    await ended(running, line, job_id, room)
    resp = await running.client.get(f"/batch/jobs/{job_id}/export", headers=running.headers())
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert (rows[0]["disposition"], rows[0]["summary"], json.loads(rows[0]["result_data"])) == (
        "completed",
        "Booked",
        {"slot": "tue"},
    )


async def test_simulated_agents_report_scripted_results(
    start_app: StartApp, tmp_path: Path
) -> None:
    """The whole loop without LiveKit: a number prefix scripts the agent's result."""
    rules = [
        {"prefix": "+1202555010", "outcome": "completed", "disposition": "voicemail"},
        {
            "prefix": "+1202555020",
            "outcome": "completed",
            "disposition": "callback_requested",
            "callback_after_seconds": 7200,
            "summary": "Call after lunch",
        },
    ]
    config = make_config(
        tmp_path,
        telephony={"simulated": {"rules": rules}},
        organizations=[{"id": ORG, **NO_CALLING_RULES}, {"id": OTHER_ORG, **NO_CALLING_RULES}],
    )
    running = await start_app(config)
    created = await running.create_json(
        [{"phone": "+12025550101"}, {"phone": "+12025550201"}], maxAttempts=2
    )
    job_id = created["batchJobId"]

    async def both_waiting() -> bool:
        contacts = (await running.detail(job_id))["contacts"]
        return all(c["status"] == "queued" for c in contacts)

    await wait_until(both_waiting)
    voicemail, callback = (await running.detail(job_id))["contacts"]
    assert (voicemail["disposition"], voicemail["failureReason"]) == ("voicemail", "voicemail")
    assert (callback["disposition"], callback["summary"]) == (
        "callback_requested",
        "Call after lunch",
    )
    assert callback["nextRetryAt"] == _iso(running.clock.now() + 7200)
    history = await (
        await running.client.get(
            f"/calls/{voicemail['roomName']}/result", headers=running.headers()
        )
    ).json()
    assert history["latest"]["source"] == "simulated"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ----------------------------------------------------------------- the example agent's helper


def load_example_worker() -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / "agent_worker.py"
    spec = importlib.util.spec_from_file_location("agent_worker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["agent_worker"] = module
    spec.loader.exec_module(module)
    return module


async def test_the_example_workers_helper_reports_through_the_callback_url(
    start_app: StartApp, tmp_path: Path
) -> None:
    worker = load_example_worker()
    running, line = await start(start_app, tmp_path)
    running.engine.public_url = str(running.client.make_url("/")).rstrip("/")
    job_id, room = await one_call(running, line, name="Reminders")
    call = worker.CallContext.from_metadata(agent_metadata(line.requests[room]))
    assert (call.contact_id, call.job_name, call.attempt) == (
        (await contact(running, job_id))["id"],
        "Reminders",
        1,
    )
    at = datetime.fromtimestamp(running.clock.now() + 86_400, UTC)
    answer = await worker.post_result(call, "callback_requested", callback_at=at, summary="Busy")
    assert (answer["result"]["disposition"], answer["result"]["source"]) == (
        "callback_requested",
        "token",
    )
    with pytest.raises(worker.ResultRejected) as refused:
        await worker.post_result(call, "callback_requested")  # no time: 400
    assert refused.value.status == 400
    await ended(running, line, job_id, room)
    shown = await contact(running, job_id)
    assert (shown["status"], shown["nextRetryAt"], shown["summary"]) == (
        "queued",
        _iso(at.timestamp()),
        "Busy",
    )


async def test_a_callback_never_queues_a_number_listed_meanwhile(
    start_app: StartApp, tmp_path: Path
) -> None:
    running, line = await start(start_app, tmp_path)
    phone = "+12025550131"
    job_id, room = await one_call(running, line, phone=phone, maxAttempts=2)
    resp = await running.client.post("/dnc", json={"numbers": [phone]}, headers=running.headers())
    assert resp.status == 200, await resp.text()
    at = _iso(running.clock.now() + 600)
    token = bearer(token_of(line, room))
    body = {"disposition": "callback_requested", "callbackAt": at}
    assert (await post(running, room, body, token))[0] == 200
    await ended(running, line, job_id, room)
    shown = (await running.wait_status(job_id, "completed"))["contacts"][0]
    assert (shown["status"], shown["failureReason"]) == ("cancelled", "do_not_call")
    # And after the call, the same: still refused a place in the queue.
    assert (await post(running, room, body, token))[1]["contactStatus"] == "cancelled"
