"""The store's rows and values: what its methods take and return (frozen dataclasses), the rules
the engine hands it (protocols), and the exceptions its methods raise."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, dataclass_transform

_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def value(cls: type[_T]) -> type[_T]:
    """A frozen dataclass to the type checker (mypy refuses any assignment to its fields), but
    built without the frozen machinery at run time: a frozen dataclass sets each field through
    `object.__setattr__`, six times slower than a plain one (17 fields: 1.7 us against 0.27 us).
    For the values the engine makes for every call (a claim, its request and result, the retry
    decision, the outcome): about 5 us a call. Hashed by value, as a frozen dataclass is."""
    made: type[_T] = dataclass(slots=True, unsafe_hash=True)(cls)
    return made


@dataclass(frozen=True, slots=True)
class NewJob:
    id: str
    organization_id: str
    name: str
    description: str | None
    status: str
    agent_id: str
    phone_number_id: str
    concurrent_call_limit: int
    max_attempts: int
    retry_statuses: Sequence[str]
    retry_delay_seconds: float
    retry_backoff: float
    timezone: str
    scheduled_start_time: float | None
    created_at: float
    estimated_cost_usd: float
    ringing_timeout_seconds: float | None = None  # None: the provider's configured one
    calling_windows: str | None = None  # JSON list; None: always open
    window_timezone: str = "recipient"
    expires_at: float | None = None
    from_number: str | None = None  # the caller number, for the call records
    retry_on_voicemail: bool = True  # a voicemail result is retried under the policy


@dataclass(frozen=True, slots=True)
class NewContact:
    phone: str
    data: dict[str, Any] | str  # a dict, or a JSON object's text already encoded
    zones: str | None = None  # the zones its windows are read in, comma-separated
    next_call_at: float | None = None  # not before (None: now)
    call_until: float | None = None  # not at or after (None: no end)
    status: str = "pending"  # or "cancelled" with a failure reason (e.g. no_common_window)
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class JobRow:
    id: str
    organization_id: str
    name: str
    description: str | None
    status: str
    agent_id: str
    phone_number_id: str
    concurrent_call_limit: int
    max_attempts: int
    retry_statuses: tuple[str, ...]
    retry_delay_seconds: float
    retry_backoff: float
    timezone: str
    scheduled_start_time: float | None
    actual_start_time: float | None
    completed_at: float | None
    created_at: float
    updated_at: float
    total_contacts: int
    status_reason: str | None
    estimated_cost_usd: float
    retry_rounds: int = 0  # operator retry rounds (migration 0002)
    calls_ended: int = 0  # attempts that ended (migration 0003)
    call_seconds: float = 0.0  # their total slot time, claim to end
    deleted_at: float | None = None  # hidden from every route (migration 0008)
    ringing_timeout_seconds: float | None = None  # None: the provider's configured one
    spent_usd: float = 0.0  # charged so far (migration 0006)
    calling_windows: str | None = None  # JSON list (migration 0007); None: always open
    window_timezone: str = "recipient"
    expires_at: float | None = None
    from_number: str | None = None
    retry_on_voicemail: bool = True  # migration 0010

    @property
    def average_call_seconds(self) -> float | None:
        """The observed average slot time of the job's ended attempts (None before any)."""
        return self.call_seconds / self.calls_ended if self.calls_ended else None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> JobRow:
        values = dict(row)
        values["retry_statuses"] = tuple(json.loads(values["retry_statuses"]))
        values["retry_on_voicemail"] = bool(values["retry_on_voicemail"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ContactRow:
    id: int
    job_id: str
    seq: int
    phone: str
    contact_data: dict[str, Any]
    status: str
    attempt_count: int
    max_attempts: int
    last_attempt_at: float | None
    next_retry_at: float | None
    completed_at: float | None
    error_code: str | None
    failure_reason: str | None
    room_name: str | None
    call_duration: int | None
    updated_at: float
    timezone: str | None = None  # zones used (migration 0007), comma-separated
    next_call_at: float | None = None
    call_until: float | None = None
    disposition: str | None = None  # the agent's latest result (migration 0010)
    summary: str | None = None
    result_data: dict[str, Any] | None = None

    def wait_until(self, now: float) -> float | None:
        """When an open contact may next be dialed, if later than `now` (else None)."""
        if self.status not in ("pending", "queued"):
            return None
        wait = max(self.next_call_at or 0.0, self.next_retry_at or 0.0)
        return wait if wait > now else None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ContactRow:
        values = dict(row)
        values["contact_data"] = json.loads(values["contact_data"])
        if values.get("result_data") is not None:
            values["result_data"] = json.loads(values["result_data"])
        return cls(**values)

    @classmethod
    def from_values(cls, values: list[Any]) -> ContactRow:
        """From a JSON array in column order (the `json_array(c.id, ...)` of queries.sql)."""
        return cls(*values)


@dataclass(frozen=True, slots=True)
class JobDetailRow:
    job: JobRow
    counts: dict[str, int]
    contacts_json: str  # the page of contacts, a JSON array in the API's contact shape
    contacts_total: int
    last_retry_due: float | None  # the latest nextRetryAt of the job's queued contacts
    last_call_due: float | None = None  # the latest window opening its pending contacts wait for
    # Until when the page reads the same with no write: the first of its contacts' nextCallAt.
    fresh_until: float = math.inf


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """A job with what the batch-calling routes report of it."""

    job: JobRow
    counts: dict[str, int]
    dispatched: int  # contacts dialed at least once
    retries: int  # dials made after each contact's first
    last_change: float = 0.0  # when one of its contacts last changed


@dataclass(frozen=True, slots=True)
class CallRow:
    """A contact with the times of its latest placed attempt (None before any)."""

    contact: ContactRow
    started_at: float | None
    answered_at: float | None
    ended_at: float | None

    @classmethod
    def from_values(cls, values: list[Any]) -> CallRow:
        """A contact's columns then its latest attempt's started, answered and ended times."""
        return cls(ContactRow(*values[:-3]), *values[-3:])


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which contacts `Store.list_calls` returns."""

    statuses: Sequence[str] | None = None
    external_id: str | None = None
    after_seq: int = 0  # keyset paging: only contacts after this upload position


@dataclass(frozen=True, slots=True)
class AttemptRow:
    id: int
    contact_id: int
    job_id: str
    attempt_no: int
    room_name: str
    started_at: float
    answered_at: float | None
    ended_at: float | None
    outcome: str | None
    sip_code: int | None
    reason: str | None
    duration: int | None
    charged_usd: float
    organization_id: str | None = None  # the call record's parties (migration 0007)
    to_number: str | None = None
    from_number: str | None = None


@value
class ClaimedContact:
    """A contact just moved to `dialing`, with the attempt row already written."""

    id: int
    job_id: str
    seq: int
    phone: str
    contact_data: dict[str, Any]
    attempt_no: int
    max_attempts: int
    room_name: str
    started_at: float
    zones: str | None = None  # the zones its calling windows are read in
    call_until: float | None = None  # when its calling interval ends (None: never)
    was: str = "pending"  # its status before the claim (pending or queued)

    def started(self, at: float) -> ClaimedContact:
        """This claim with its attempt started at `at` (as dataclasses.replace, in a fifth of
        its time: it runs for every call started from the contacts claimed ahead)."""
        return ClaimedContact(
            self.id,
            self.job_id,
            self.seq,
            self.phone,
            self.contact_data,
            self.attempt_no,
            self.max_attempts,
            self.room_name,
            at,
            self.zones,
            self.call_until,
            self.was,
        )


@dataclass(frozen=True, slots=True)
class JobClaim:
    """What one job got from `Store.claim`."""

    contacts: list[ClaimedContact]
    short: bool  # fewer contacts were ready than wanted: nothing more is ready now
    next_retry_due: float | None  # when short: the earliest queued retry (None: none queued)
    completed: bool  # when short: nothing was left open, the job is now completed


@dataclass(frozen=True, slots=True)
class JobVerdict:
    """The engine's decision to stop a running job: `failed` (it cannot proceed) or `paused`
    (most of its recent attempts failed at the carrier), with the reason shown to users."""

    job_id: str
    status: str  # "failed" | "paused"
    reason: str


@value
class Outcome:
    """What to record for one finished attempt (the next contact status is already decided)."""

    contact_id: int
    job_id: str
    organization_id: str
    attempt_no: int
    outcome: str  # the call's result status, or 'not_placed'
    next_status: str  # the contact's status after this attempt
    next_retry_at: float | None
    sip_code: int | None
    reason: str | None
    answered_at: float | None
    ended_at: float | None
    duration: int | None
    charged_usd: float
    started_at: float  # when the attempt was claimed (the call's slot was taken)
    give_back: bool = False  # the dial never happened: the attempt does not count
    next_call_at: float | None = None  # when waiting again: its calling interval
    call_until: float | None = None


@dataclass(frozen=True, slots=True)
class Activation:
    """What `Store.activate` did and found."""

    expired: list[str]  # jobs expired now
    started: list[str]  # jobs started now (pending, or scheduled and due)
    running: list[JobRow]  # every running job, oldest first
    next_scheduled: float | None  # the earliest start of a job still scheduled
    next_expiry: float | None  # the earliest expiresAt of a job still open


@dataclass(frozen=True, slots=True)
class CycleResult:
    completed: list[str]  # jobs that became completed
    refused: list[Outcome]  # outcomes whose contact was not `dialing` that attempt
    claims: dict[str, JobClaim]
    verdicts: list[JobVerdict]  # the verdicts that took effect
    # Results posted while their calls were live that changed their contacts here.
    resulted: list[AppliedResult] = field(default_factory=list)
    # The database's count of transactions that recorded outcomes, after this one (None: it
    # recorded none; see migration 0018 and dialer.dialed).
    epoch: int | None = None


@dataclass(frozen=True, slots=True)
class AppliedResult:
    """An agent's result that changed its contact when its call ended: to `status`."""

    job_id: str
    contact_id: int
    attempt_no: int
    disposition: str
    status: str


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: str
    organization_id: str
    key_hash: str
    prefix: str
    name: str | None
    created_at: float
    revoked_at: float | None


RoomNamer = Callable[[str, int, int], str]


# The status reason of a job the engine paused because its organization ran out of credits.
CREDITS_EXHAUSTED = "Credits exhausted"


@dataclass(frozen=True, slots=True)
class CreateLimits:
    """What an organization may hold, checked in the transaction that creates a job (None: no
    limit). Credits cover the spend plus the unspent estimates of unfinished jobs."""

    credits_usd: float | None = None
    max_active_jobs: int | None = None
    max_stored_contacts: int | None = None


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """The answer to keep for a create that carried an Idempotency-Key."""

    key: str
    fingerprint: str
    response: Callable[[int], str]  # the answer's JSON, given how many numbers were suppressed
    since: float  # a record older than this has expired


class IdempotencyReplay(Exception):
    """A create whose key was already used (within its lifetime) by the same organization."""

    def __init__(self, fingerprint: str, response: str) -> None:
        super().__init__("idempotency key already used")
        self.fingerprint = fingerprint
        self.response = response


class LimitExceeded(Exception):
    """A create that would pass one of its organization's limits: `limit` names it
    (credits_usd, max_active_jobs, max_stored_contacts), `available` is what is left."""

    def __init__(self, limit: str, available: float) -> None:
        super().__init__(f"{limit} exceeded ({available} left)")
        self.limit = limit
        self.available = available


class CallingRules(Protocol):
    """What the store asks the dialer about calling windows and caps (dialer.windows knows)."""

    def daily_cap(self, organization_id: str) -> int:
        """Dials to one number in any 24 h across the organization's jobs (0: no cap)."""
        ...

    def interval(
        self, windows_json: str | None, zones: str | None, at: float
    ) -> tuple[float, float | None] | None:
        """(from, until) of the first interval at or after `at` (`from` is `at` when open
        then; `until` None: no end); None when the windows are never open in all the zones."""
        ...


@dataclass(frozen=True, slots=True)
class ResultFacts:
    """What decides a result's effect: the result, its contact and attempt, and the job."""

    disposition: str
    callback_at: float | None
    attempt_no: int
    max_attempts: int  # the contact's
    zones: str | None  # the contact's
    job_status: str
    retry_statuses: tuple[str, ...]
    retry_delay_seconds: float
    retry_backoff: float
    retry_on_voicemail: bool
    calling_windows: str | None
    now: float


@dataclass(frozen=True, slots=True)
class ContactChange:
    """A contact's next state after an agent's result."""

    status: str
    next_retry_at: float | None
    next_call_at: float | None
    call_until: float | None
    max_attempts: int
    completed_at: float | None
    failure_reason: str | None
    do_not_call: bool = False  # its number goes on the organization's do-not-call list


class ResultRules(Protocol):
    """What the store asks the dialer about agents' results (dialer.results knows)."""

    def change(self, facts: ResultFacts) -> ContactChange: ...


class NoResultRules:
    """A store used without the dialer: results are kept, never applied."""

    def change(self, facts: ResultFacts) -> ContactChange:
        raise RuntimeError("no result rules: the store was opened without the dialer")


@dataclass(frozen=True, slots=True)
class NewResult:
    """A result an agent posted for one attempt (already validated)."""

    room_name: str
    contact_id: int
    attempt_no: int
    disposition: str
    callback_at: float | None
    summary: str | None
    data_json: str | None  # a JSON object's text
    source: str  # 'token', 'api_key' or 'simulated'


@dataclass(frozen=True, slots=True)
class ResultRow:
    id: int
    organization_id: str
    job_id: str
    contact_id: int
    attempt_no: int
    room_name: str
    disposition: str
    callback_at: float | None
    summary: str | None
    data: dict[str, Any] | None
    source: str
    received_at: float
    applied_at: float | None

    @classmethod
    def from_values(cls, values: list[Any]) -> ResultRow:
        return cls(*values)


@dataclass(frozen=True, slots=True)
class AttemptRef:
    """The attempt a room belongs to, as a result is checked against it."""

    organization_id: str
    job_id: str
    contact_id: int
    attempt_no: int
    outcome: str | None  # None while the call is live
    ended_at: float | None


class ResultRefused(Exception):
    """A result that cannot be taken: `code` is `result_window_closed` or `too_many_results`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ResultRecorded:
    result: ResultRow
    contact_status: str  # after the result (unchanged while the call is live)
    applied: bool  # its effect was made now (False: when the call's outcome is written)


class AlwaysOpen:
    """No windows, no caps (a store used without the dialer's rules)."""

    def daily_cap(self, organization_id: str) -> int:
        return 0

    def interval(
        self, windows_json: str | None, zones: str | None, at: float
    ) -> tuple[float, float | None] | None:
        return at, None


@dataclass(frozen=True, slots=True)
class WebhookEndpointRow:
    id: str
    organization_id: str
    url: str
    events: tuple[str, ...] | None  # None: every event type
    description: str | None
    secret: str = field(repr=False)
    created_at: float = 0.0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> WebhookEndpointRow:
        values = dict(row)
        events = values["events"]
        values["events"] = None if events is None else tuple(json.loads(events))
        return cls(**values)


@dataclass(frozen=True, slots=True)
class WebhookDeliveryRow:
    """A delivery of one event to one endpoint, as the deliveries route lists it."""

    id: int
    event_id: int
    endpoint_id: str
    organization_id: str
    status: str
    attempts: int
    next_attempt_at: float | None
    last_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    delivered_at: float | None
    webhook_id: str
    type: str
    sequence: int | None  # None until one of the organization's events at or after it is sent
    created_at: float


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery the sender is to make now, with what it sends."""

    id: int
    endpoint_id: str
    attempts: int  # made before this one
    webhook_id: str
    type: str
    sequence: int
    created_at: float
    data: Any  # the event's data, parsed


@dataclass(frozen=True, slots=True)
class WebhookPick:
    """A delivery the sender is about to send: taken already (a row), or not yet."""

    id: int
    event_id: int
    endpoint_id: str
    attempts: int
    due: float
    taken: bool


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """What one send of a delivery came to, and what the delivery becomes."""

    delivery_id: int
    attempts_before: int
    status: str  # pending (retried at next_attempt_at), delivered, failed
    next_attempt_at: float | None
    http_status: int | None
    error: str | None
    attempted_at: float
