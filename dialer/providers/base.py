"""The provider interface, the call request/result types, and the SIP-code mapping table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import field
from typing import Any, Protocol, runtime_checkable

from dialer.states import ContactStatus
from storage.rows import value


@value
class DialRequest:
    job_id: str
    contact_id: int
    attempt_no: int
    room_name: str
    to_number: str  # E.164
    from_number: str  # E.164 caller number
    sip_trunk_id: str
    agent_name: str
    contact_data: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0  # when the attempt was claimed (used when re-attaching)
    ringing_timeout_seconds: float | None = None  # the job's own; None: the provider's default
    # The call's context for the agent (sent in the dispatch metadata).
    job_name: str = ""
    timezone: str | None = None  # the contact's zone (IANA), when known
    callback_url: str = ""  # where the agent posts the call's result
    callback_token: str = field(default="", repr=False)  # authorizes that one attempt; never logged
    # Or the secret it derives from (dialer.results.callback_token), for `agent_token` to
    # compute only when a provider sends it: an HMAC per call cost the engine 8% of its event
    # loop on instant calls.
    callback_secret: bytes = field(default=b"", repr=False)
    # Called by the provider once the call is answered: the provider is reachable. A dial that
    # probes a provider outage ends it then, rather than at the call's end minutes later (the
    # engine's hook; a provider that never calls it only delays that).
    on_answered: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    # For a provider that works before it places the call (`dials_late`: LiveKit dispatches the
    # agent and waits for it, up to agent_join_timeout_seconds), called right before it places
    # it: the engine writes the attempt to its dial log then, so that a crash before that point
    # gives the contact back undialed, its attempt not counted. False: no call may be placed
    # (return a not-placed result). Other providers place the call as their dial starts; the
    # engine writes the attempt before calling them.
    before_dial: Callable[[DialRequest], bool] | None = field(
        default=None, repr=False, compare=False
    )

    @property
    def agent_token(self) -> str:
        """The token the agent posts its result with (see callback_token); never logged."""
        if self.callback_token or not self.callback_secret:
            return self.callback_token
        from dialer.results import callback_token  # results imports the store

        return callback_token(self.callback_secret, self.room_name)


@value
class DialResult:
    """How one call ended."""

    status: ContactStatus
    sip_code: int | None = None
    reason: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    duration: int | None = None  # answered seconds
    room_name: str | None = None
    # The request never reached the provider: no call was placed, the attempt does not count.
    not_placed: bool = False
    # The job cannot proceed (rejected credentials, missing trunk): not the contact's fault.
    job_fatal: bool = False
    # The attempt was cut short (e.g. by a crash); retry it even if its status is not retryable.
    retryable: bool = False
    # The agent did not join the room in time: nobody was dialed, the attempt does not count,
    # and the contact is tried again a little later. Several in a row pause the job.
    agent_not_joined: bool = False
    # The provider itself failed after the dial was sent (a LiveKit 5xx, the connection lost):
    # the phone may have rung, so the attempt counts, but the engine stops dialing and probes as
    # for an unreachable provider, rather than spend every contact's attempts while it fails.
    provider_error: bool = False
    # The provider refused the dial at a limit of its project (LiveKit: concurrent calls or
    # agent sessions, request rate, a used-up quota): no call was placed (`not_placed` too).
    # With calls of this service live, the engine takes it for a limit on calls at once and
    # dials at most that many (see Engine._provider_at_limit); with none, as unreachable.
    at_limit: bool = False


# The reason of a dial the engine allowed no call for (see DialRequest.before_dial).
DIAL_LOG_STUCK = "the dial log beside the database can be neither written nor removed"


class Provider(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def dial(self, request: DialRequest) -> DialResult:
        """Place one call and return when it has ended (or failed)."""
        ...

    async def resume(self, request: DialRequest) -> DialResult:
        """A call found in `dialing` after a restart: re-attach if it is still live, else report.

        Never dials again.
        """
        ...


class WebhookRejected(Exception):
    """The webhook's signature or body hash does not verify."""


@runtime_checkable
class WebhookSink(Protocol):
    """A provider that learns about calls from signed webhooks (served without an API key)."""

    def receive_webhook(self, body: str, authorization: str) -> str:
        """Verify and apply one webhook; raise WebhookRejected if it does not verify."""
        ...


# SIP response code -> contact status. Documented in the README; keep the two in step.
SIP_STATUS_TABLE: dict[int, ContactStatus] = {
    486: ContactStatus.BUSY,
    600: ContactStatus.BUSY,
    480: ContactStatus.NO_ANSWER,
    487: ContactStatus.NO_ANSWER,
    408: ContactStatus.TIMEOUT,
    504: ContactStatus.TIMEOUT,
    404: ContactStatus.INVALID_NUMBER,
    484: ContactStatus.INVALID_NUMBER,
    604: ContactStatus.INVALID_NUMBER,
    410: ContactStatus.INVALID_NUMBER,
    403: ContactStatus.BLOCKED,
    603: ContactStatus.BLOCKED,
    607: ContactStatus.BLOCKED,
    608: ContactStatus.BLOCKED,
    500: ContactStatus.CARRIER_ERROR,
    502: ContactStatus.CARRIER_ERROR,
    503: ContactStatus.CARRIER_ERROR,
}

# A representative SIP code per outcome (used by the simulated provider).
DEFAULT_SIP_CODE: dict[ContactStatus, int | None] = {
    ContactStatus.COMPLETED: None,
    ContactStatus.BUSY: 486,
    ContactStatus.NO_ANSWER: 480,
    ContactStatus.TIMEOUT: 408,
    ContactStatus.INVALID_NUMBER: 404,
    ContactStatus.BLOCKED: 603,
    ContactStatus.CARRIER_ERROR: 503,
    ContactStatus.FAILED: None,
}


def sip_code(value: object) -> int | None:
    """`value` as a SIP status code (100-699), else None: what a provider reports is kept only
    when it can be one (a code of 20 digits once stopped the engine at every start, as SQLite
    cannot store it)."""
    if isinstance(value, str):
        value = value.strip()
        if not (value.isascii() and value.isdigit() and len(value) == 3):
            return None
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 699:
        return value
    return None


def status_for_sip_code(code: int) -> ContactStatus:
    """Map a SIP final response code to a contact status; unknown codes are `failed`."""
    return SIP_STATUS_TABLE.get(code, ContactStatus.FAILED)
