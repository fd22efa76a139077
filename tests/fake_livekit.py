"""A wire-faithful fake LiveKit server for tests, driven by the real `livekit-api` client.

It speaks what the dialer uses and nothing more: Twirp over HTTP on 127.0.0.1 with protobuf
bodies, HS256 JWTs checked against the API secret (issuer = API key, grants per method), Twirp
JSON errors (`meta.sip_status_code` as a string, like the SIP bridge), and signed webhooks
(`application/webhook+json`, `Authorization: <raw JWT>` with a `sha256` claim) posted back to
the engine. Each callee number is scripted with a `Callee`; the dispatched agent joins the room
at once, after a delay, or never (`agent_join_seconds`, or per number in `agent_join_for`); time
(agent joins, talk, ring-out) runs on the test's FakeClock.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jwt
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import Message
from livekit import api

from dialer.clock import FakeClock

API_KEY = "APIfake"
API_SECRET = "fake-secret-0123456789abcdef0123456789"
TRUNK = "ST_fake"

# SIP final response -> (Twirp code, HTTP status), as LiveKit's SIP service reports a failed dial.
TWIRP_FOR_SIP: dict[int, tuple[str, int]] = {
    **dict.fromkeys((486, 600, 480), ("resource_exhausted", 429)),
    **dict.fromkeys((408, 504), ("deadline_exceeded", 408)),
    487: ("aborted", 409),
    **dict.fromkeys((404, 604), ("not_found", 404)),
    **dict.fromkeys((403, 603, 401), ("permission_denied", 403)),
    **dict.fromkeys((500, 502, 503), ("failed_precondition", 412)),
    **dict.fromkeys((400, 484, 488), ("invalid_argument", 400)),
}
UNLISTED_SIP = ("unavailable", 503)

SIP_PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    410: "Gone",
    480: "Temporarily Unavailable",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    500: "Server Internal Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    607: "Unwanted",
    608: "Rejected",
}


@dataclass(frozen=True)
class Callee:
    """How one phone number behaves when dialed."""

    # "answer" | "sip" | "ring_out" | "hang" | "disconnect" | "server_error"
    behaviour: str
    sip_code: int = 0
    talk_seconds: float | None = None  # answered: hangs up after this (None: when told to)
    ring_seconds: float | None = None  # ring-out: cancelled after this (None: ringing_timeout)

    @classmethod
    def answers(cls, talk_seconds: float | None = None) -> Callee:
        return cls("answer", talk_seconds=talk_seconds)

    @classmethod
    def fails(cls, sip_code: int) -> Callee:
        return cls("sip", sip_code=sip_code)

    @classmethod
    def rings_out(cls, ring_seconds: float | None = None) -> Callee:
        return cls("ring_out", ring_seconds=ring_seconds)

    @classmethod
    def hangs(cls) -> Callee:
        """The dial request never gets an answer (forces the client's timeout)."""
        return cls("hang")

    @classmethod
    def server_error(cls) -> Callee:
        """LiveKit fails the dial request itself (a 5xx without a SIP code)."""
        return cls("server_error")

    @classmethod
    def disconnects(cls) -> Callee:
        """The connection drops after the dial request was received."""
        return cls("disconnect")

    @classmethod
    def answers_unseen(cls, talk_seconds: float | None = None) -> Callee:
        """The callee answers, but the connection drops before the dial's answer leaves: the
        dialer cannot tell from the request whether the call was placed."""
        return cls("answer_unseen", talk_seconds=talk_seconds)


class TwirpFailure(Exception):
    def __init__(self, code: str, status: int, msg: str, meta: dict[str, str] | None = None):
        super().__init__(msg)
        self.code, self.status, self.msg, self.meta = code, status, msg, meta or {}

    def response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.meta:
            body["meta"] = self.meta
        return web.json_response(body, status=self.status)


@dataclass
class FakeRoom:
    name: str
    sid: str
    participants: dict[str, api.ParticipantInfo] = field(default_factory=dict)
    dispatches: list[api.CreateAgentDispatchRequest] = field(default_factory=list)
    dispatch_ids: list[str] = field(default_factory=list)  # those not deleted


Handler = Callable[[Any, dict[str, Any]], Awaitable[Message]]


class FakeLiveKit:
    """The fake server. `start()` returns its URL; `webhook_url` is where events are posted."""

    def __init__(
        self, clock: FakeClock, *, api_key: str = API_KEY, api_secret: str = API_SECRET
    ) -> None:
        self.clock = clock
        self.api_key = api_key
        self.api_secret = api_secret
        self.trunks = {TRUNK}
        self.numbers: dict[str, Callee] = {}
        self.default = Callee.answers()
        self.rooms: dict[str, FakeRoom] = {}
        self.dials: list[api.CreateSIPParticipantRequest] = []
        self.dispatches: list[api.CreateAgentDispatchRequest] = []
        self.deleted: list[str] = []
        self.deleted_dispatches: list[str] = []
        # When the dispatched agent joins its room, in seconds after the dispatch (None: never;
        # a join after the room or the dispatch is gone does not happen). Per callee number,
        # read from the dispatch metadata as an agent would, else the default.
        self.agent_join_seconds: float | None = 0.0
        self.agent_join_for: dict[str, float | None] = {}
        # (clock time, "Service/Method" or "AgentJoined", room) in the order things happened.
        self.timeline: list[tuple[float, str, str]] = []
        self.request_ids: list[str] = []
        self.calls: list[str] = []  # "Service/Method" of every authenticated request
        # Methods ("Service/Method") refused as a LiveKit Cloud project at one of its limits
        # (concurrent SIP calls or agent sessions, request rate, quota) refuses them: Twirp
        # `resource_exhausted`, HTTP 429, no SIP code. Such a dial request is not in `dials`.
        self.at_limit: set[str] = set()
        # Methods that fail the next n requests with HTTP 503 (Twirp `unavailable`), and methods
        # answered with a 200 whose body is not protobuf, after doing their work.
        self.failing: dict[str, int] = {}
        self.garbage: set[str] = set()
        self.webhook_url: str | None = None
        self.webhooks_enabled = True  # False: events are dropped (a lost webhook)
        self.webhook_statuses: list[int] = []
        self.sent: list[api.WebhookEvent] = []  # events posted to the engine, in order
        self.url = ""
        self._ids = itertools.count(1)
        self._queue: asyncio.Queue[api.WebhookEvent] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._routes: dict[str, tuple[type[Message], Handler]] = {
            "livekit.SIP/CreateSIPParticipant": (
                api.CreateSIPParticipantRequest,
                self._create_sip_participant,
            ),
            "livekit.AgentDispatchService/CreateDispatch": (
                api.CreateAgentDispatchRequest,
                self._create_dispatch,
            ),
            "livekit.AgentDispatchService/DeleteDispatch": (
                api.DeleteAgentDispatchRequest,
                self._delete_dispatch,
            ),
            "livekit.RoomService/ListParticipants": (
                api.ListParticipantsRequest,
                self._list_participants,
            ),
            "livekit.RoomService/DeleteRoom": (api.DeleteRoomRequest, self._delete_room),
        }

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/twirp/{method:.+}", self._twirp)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        self._spawn(self._deliver_webhooks())
        return self.url

    async def close(self) -> None:
        self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _spawn(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ test controls

    def room_of(self, number: str) -> FakeRoom | None:
        """The live room in which `number` was dialed."""
        for room in self.rooms.values():
            if any(
                p.attributes.get("sip.phoneNumber") == number for p in room.participants.values()
            ):
                return room
        return None

    def phone(self, room_name: str) -> api.ParticipantInfo | None:
        room = self.rooms.get(room_name)
        if room is None:
            return None
        return next(
            (p for p in room.participants.values() if p.kind == api.ParticipantInfo.SIP), None
        )

    def hang_up(self, room_name: str) -> None:
        """The callee hangs up: the SIP participant leaves (webhook `participant_left`)."""
        room = self.rooms[room_name]
        phone = self.phone(room_name)
        assert phone is not None, f"no phone participant in {room_name}"
        self._leave(room, phone.identity, api.DisconnectReason.CLIENT_INITIATED)

    def forget_room(self, room_name: str) -> None:
        """The room disappears without any event (e.g. it ended while the engine was down)."""
        self.rooms.pop(room_name, None)

    async def webhooks_delivered(self) -> None:
        """Wait until every queued webhook has been posted."""
        await self._queue.join()

    # ------------------------------------------------------------ Twirp

    async def _twirp(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        route = self._routes.get(method)
        try:
            if route is None:
                raise TwirpFailure("bad_route", 404, f"no handler for {method}")
            if request.content_type != "application/protobuf":
                raise TwirpFailure("malformed", 400, "expected application/protobuf")
            claims = self._verify(request)
            request_id = request.headers.get("X-Livekit-Request-Id", "")
            if not request_id:
                raise TwirpFailure("malformed", 400, "missing request id")
            self.request_ids.append(request_id)
            message_type, handler = route
            try:
                message = message_type.FromString(await request.read())
            except Exception:
                raise TwirpFailure("malformed", 400, "cannot decode the request") from None
            self.calls.append(method.removeprefix("livekit."))
            room_name = getattr(message, "room", "") or getattr(message, "room_name", "")
            self.timeline.append((self.clock.now(), method.removeprefix("livekit."), room_name))
            self._authorize(method, message, claims)
            name = method.removeprefix("livekit.")
            if name in self.at_limit:
                raise TwirpFailure("resource_exhausted", 429, "project limit exceeded")
            if self.failing.get(name):
                self.failing[name] -= 1
                raise TwirpFailure("unavailable", 503, "service unavailable")
            behaviour = (
                self._callee(message).behaviour
                if isinstance(message, api.CreateSIPParticipantRequest)
                else ""
            )
            if behaviour == "disconnect":
                self.dials.append(message)
                assert request.transport is not None
                request.transport.close()  # the request arrived; the answer never leaves
                return web.Response(status=500)
            reply = await handler(message, claims)
            if behaviour == "answer_unseen":
                assert request.transport is not None
                request.transport.close()  # answered; the answer never leaves
                return web.Response(status=500)
        except TwirpFailure as failure:
            return failure.response()
        if name in self.garbage:
            return web.Response(body=b"\xff\x00 not protobuf", content_type="application/protobuf")
        return web.Response(body=reply.SerializeToString(), content_type="application/protobuf")

    def _verify(self, request: web.Request) -> dict[str, Any]:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            raise TwirpFailure("unauthenticated", 401, "missing bearer token")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.api_secret,
                algorithms=["HS256"],
                issuer=self.api_key,
                options={"require": ["exp", "iss"]},
            )
        except jwt.InvalidTokenError as exc:
            raise TwirpFailure("unauthenticated", 401, f"invalid token: {exc}") from None
        return claims

    def _authorize(self, method: str, message: Any, claims: dict[str, Any]) -> None:
        video = claims.get("video", {})
        if method.endswith("CreateSIPParticipant"):
            allowed = bool(claims.get("sip", {}).get("call"))
        elif method.endswith("DeleteRoom"):
            allowed = bool(video.get("roomCreate"))
        else:  # ListParticipants, CreateDispatch, DeleteDispatch: admin of that room
            allowed = bool(video.get("roomAdmin")) and video.get("room") == message.room
        if not allowed:
            raise TwirpFailure("permission_denied", 403, "missing grant")

    # ------------------------------------------------------------ services

    async def _create_dispatch(self, req: Any, claims: dict[str, Any]) -> Message:
        room = self._room(req.room)
        room.dispatches.append(req)
        self.dispatches.append(req)
        dispatch_id = f"AD_{next(self._ids)}"
        room.dispatch_ids.append(dispatch_id)
        delay = self._agent_delay(req.metadata)
        if delay == 0:
            self._agent_joins(room.name, dispatch_id, req.agent_name)
        elif delay is not None:
            self._spawn(self._agent_joins_after(room.name, dispatch_id, req.agent_name, delay))
            await asyncio.sleep(0)  # the join timer is on the clock before the dispatch returns
        return api.AgentDispatch(
            id=dispatch_id,
            agent_name=req.agent_name,
            room=req.room,
            metadata=req.metadata,
        )

    def _agent_delay(self, metadata: str) -> float | None:
        try:
            number = json.loads(metadata).get("phoneNumber")
        except ValueError:
            number = None
        if number in self.agent_join_for:
            return self.agent_join_for[number]
        return self.agent_join_seconds

    async def _agent_joins_after(
        self, room_name: str, dispatch_id: str, agent_name: str, seconds: float
    ) -> None:
        await self.clock.sleep(seconds)
        self._agent_joins(room_name, dispatch_id, agent_name)

    def _agent_joins(self, room_name: str, dispatch_id: str, agent_name: str) -> None:
        """The agent worker takes the dispatch: an AGENT participant joins (webhook
        `participant_joined`), unless the room or the dispatch is gone by then."""
        room = self.rooms.get(room_name)
        if room is None or dispatch_id not in room.dispatch_ids:
            return
        agent = api.ParticipantInfo(
            sid=f"PA_{next(self._ids)}",
            identity=f"agent-{agent_name}",
            kind=api.ParticipantInfo.AGENT,
            state=api.ParticipantInfo.ACTIVE,
            joined_at=int(self.clock.now()),
        )
        room.participants[agent.identity] = agent
        self.timeline.append((self.clock.now(), "AgentJoined", room.name))
        self._emit("participant_joined", room, agent)

    async def _delete_dispatch(self, req: Any, claims: dict[str, Any]) -> Message:
        room = self.rooms.get(req.room)
        if room is None or req.dispatch_id not in room.dispatch_ids:
            raise TwirpFailure("not_found", 404, "dispatch not found")
        room.dispatch_ids.remove(req.dispatch_id)
        self.deleted_dispatches.append(req.dispatch_id)
        return api.AgentDispatch(id=req.dispatch_id, room=req.room)

    def joined_at(self, room_name: str) -> float | None:
        """When the agent joined `room_name`, from the timeline."""
        return next(
            (t for t, what, room in self.timeline if what == "AgentJoined" and room == room_name),
            None,
        )

    def requested_at(self, method: str, room_name: str) -> list[float]:
        """When `method` ("Service/Method") was requested for `room_name`, in order."""
        return [t for t, what, room in self.timeline if what == method and room == room_name]

    def _callee(self, req: Any) -> Callee:
        return self.numbers.get(req.sip_call_to, self.default)

    async def _create_sip_participant(self, req: Any, claims: dict[str, Any]) -> Message:
        self.dials.append(req)
        if req.sip_trunk_id not in self.trunks:
            raise TwirpFailure(
                "not_found", 404, f"requested sip trunk {req.sip_trunk_id} not found"
            )
        room = self._room(req.room_name)
        phone = api.ParticipantInfo(
            sid=f"PA_{next(self._ids)}",
            identity=req.participant_identity,
            name=req.participant_name,
            kind=api.ParticipantInfo.SIP,
            state=api.ParticipantInfo.JOINED,
            joined_at=int(self.clock.now()),
            attributes={"sip.callStatus": "dialing", "sip.phoneNumber": req.sip_call_to},
        )
        room.participants[phone.identity] = phone
        self._emit("participant_joined", room, phone)
        phone.attributes["sip.callStatus"] = "ringing"
        callee = self._callee(req)
        if callee.behaviour in ("answer", "answer_unseen"):
            phone.attributes["sip.callStatus"] = "active"
            phone.state = api.ParticipantInfo.ACTIVE
            if callee.talk_seconds is not None:
                self._spawn(self._hang_up_after(room.name, phone.identity, callee.talk_seconds))
                await asyncio.sleep(0)  # the hang-up timer is on the clock before we answer
            return api.SIPParticipantInfo(
                participant_id=phone.sid,
                participant_identity=phone.identity,
                room_name=room.name,
                sip_call_id=f"SCL_{next(self._ids)}",
            )
        if callee.behaviour == "server_error":
            self._leave(room, phone.identity, api.DisconnectReason.SERVER_SHUTDOWN)
            raise TwirpFailure("internal", 500, "sip service failed")
        if callee.behaviour == "hang":
            await self._closing.wait()
            raise TwirpFailure("unavailable", 503, "server shutting down")
        if callee.behaviour == "ring_out":
            ring = callee.ring_seconds
            if ring is None:
                ring = req.ringing_timeout.ToNanoseconds() / 1e9
            await self.clock.sleep(ring)
            self._leave(room, phone.identity, api.DisconnectReason.USER_UNAVAILABLE)
            raise TwirpFailure("canceled", 408, "call was not answered")
        code = callee.sip_code
        self._leave(room, phone.identity, api.DisconnectReason.USER_REJECTED)
        twirp_code, status = TWIRP_FOR_SIP.get(code, UNLISTED_SIP)
        phrase = SIP_PHRASES.get(code, "Unknown")
        raise TwirpFailure(
            twirp_code,
            status,
            f"INVITE failed: sip status: {code}: {phrase}",
            {"sip_status_code": str(code), "sip_status": phrase},
        )

    async def _list_participants(self, req: Any, claims: dict[str, Any]) -> Message:
        room = self.rooms.get(req.room)
        participants = list(room.participants.values()) if room is not None else []
        return api.ListParticipantsResponse(participants=participants)

    async def _delete_room(self, req: Any, claims: dict[str, Any]) -> Message:
        room = self.rooms.get(req.room)
        if room is None:
            raise TwirpFailure("not_found", 404, "room not found")
        for identity in list(room.participants):
            self._leave(room, identity, api.DisconnectReason.ROOM_DELETED)
        del self.rooms[room.name]
        self.deleted.append(room.name)
        self._emit("room_finished", room)
        return api.DeleteRoomResponse()

    # ------------------------------------------------------------ rooms and events

    def _room(self, name: str) -> FakeRoom:
        room = self.rooms.get(name)
        if room is None:
            room = FakeRoom(name=name, sid=f"RM_{next(self._ids)}")
            self.rooms[name] = room
            self._emit("room_started", room)
        return room

    def _leave(self, room: FakeRoom, identity: str, reason: int) -> None:
        participant = room.participants.pop(identity, None)
        if participant is None:
            return
        participant.state = api.ParticipantInfo.DISCONNECTED
        participant.disconnect_reason = reason
        if participant.kind == api.ParticipantInfo.SIP:
            participant.attributes["sip.callStatus"] = "hangup"
        self._emit("participant_left", room, participant)

    async def _hang_up_after(self, room_name: str, identity: str, seconds: float) -> None:
        await self.clock.sleep(seconds)
        room = self.rooms.get(room_name)
        if room is not None:
            self._leave(room, identity, api.DisconnectReason.CLIENT_INITIATED)

    def _emit(
        self, kind: str, room: FakeRoom, participant: api.ParticipantInfo | None = None
    ) -> None:
        event = api.WebhookEvent(
            event=kind,
            id=f"EV_{next(self._ids)}",
            created_at=int(self.clock.now()),
            room=api.Room(name=room.name, sid=room.sid),
        )
        if participant is not None:
            event.participant.CopyFrom(participant)
        if self.webhooks_enabled:
            self._queue.put_nowait(event)

    def sign(self, body: str) -> str:
        """The Authorization header LiveKit puts on a webhook: a raw JWT carrying the body hash."""
        now = int(time.time())  # token lifetime is checked against real time by the receiver
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        claims = {"iss": self.api_key, "nbf": now, "exp": now + 300, "sha256": digest}
        return jwt.encode(claims, self.api_secret, algorithm="HS256")

    async def post_webhook(
        self, event: api.WebhookEvent, *, authorization: str | None = None
    ) -> int:
        """Post one event to the engine as LiveKit does; returns the HTTP status."""
        assert self._session is not None and self.webhook_url is not None
        body = json_format.MessageToJson(event, indent=0)
        headers = {
            "Content-Type": "application/webhook+json",
            "Authorization": self.sign(body) if authorization is None else authorization,
        }
        async with self._session.post(self.webhook_url, data=body, headers=headers) as resp:
            return resp.status

    async def _deliver_webhooks(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                if self.webhook_url is not None:
                    with contextlib.suppress(aiohttp.ClientError):
                        self.webhook_statuses.append(await self.post_webhook(event))
                        self.sent.append(event)
            finally:
                self._queue.task_done()
