"""What an agent's result does to its contact: a pure mapping from a disposition (and the facts
of the contact, its attempt and its job) to the contact's next state, like `retry` does for a
call's outcome; and the per-attempt callback tokens that authorize an agent to report.

Dispositions:
- `completed`, `not_interested`: the person was reached; the contact is `completed`.
- `voicemail`: the person was not reached; the contact ends `no_answer` and is retried under
  the job's policy (unless the job says `retryOnVoicemail: false`).
- `callback_requested`: queued for `callbackAt` (moved to the next opening of its calling
  windows); a callback never uses up the retry budget (one more attempt if none is left).
- `do_not_call`: `completed`, and the number goes on the organization's do-not-call list.

A job that is cancelled or failed dials no one again: a result that would queue the contact
leaves it final instead (`no_answer` for a voicemail, `completed` for a callback request).
"""

from __future__ import annotations

import base64
import hmac
from typing import Final, Literal, get_args

from dialer import retry
from dialer.states import ContactStatus, JobStatus
from storage.rows import CallingRules, ContactChange, ResultFacts

Disposition = Literal[
    "completed", "not_interested", "voicemail", "callback_requested", "do_not_call"
]
DISPOSITIONS: Final[tuple[str, ...]] = get_args(Disposition)

# How long after a call ended its result is still taken.
RESULT_WINDOW_SECONDS: Final = 15 * 60
# Results kept per attempt at most (an agent stuck in a loop cannot fill the disk).
MAX_RESULTS_PER_ATTEMPT: Final = 20
MAX_SUMMARY_CHARS: Final = 2000
MAX_DATA_BYTES: Final = 16 * 1024
# How far ahead a callback may be asked for.
MAX_CALLBACK_DAYS: Final = 365

# Jobs that will not dial again: a result never queues their contacts.
_CLOSED_JOBS = frozenset({JobStatus.CANCELLED, JobStatus.FAILED})


class ResultRules:
    """The store's `ResultRules`: the contact's next state after a result (see the module)."""

    def __init__(self, calling: CallingRules) -> None:
        self._calling = calling

    def change(self, facts: ResultFacts) -> ContactChange:
        d = facts.disposition
        closed = facts.job_status in _CLOSED_JOBS
        if d in ("completed", "not_interested", "do_not_call"):
            return _final(ContactStatus.COMPLETED, facts, do_not_call=d == "do_not_call")
        if d == "voicemail":
            if closed or not facts.retry_on_voicemail:
                return _final(ContactStatus.NO_ANSWER, facts, reason="voicemail")
            policy = retry.RetryPolicy(
                max_attempts=facts.max_attempts,
                retry_statuses=facts.retry_statuses,
                delay_seconds=facts.retry_delay_seconds,
                backoff=facts.retry_backoff,
            )
            decision = retry.decide(
                ContactStatus.NO_ANSWER, facts.attempt_no, facts.max_attempts, policy, facts.now
            )
            if decision.next_retry_at is None:
                return _final(ContactStatus.NO_ANSWER, facts, reason="voicemail")
            return self._queued(facts, decision.next_retry_at, facts.max_attempts, "voicemail")
        if d == "callback_requested":
            if closed:
                return _final(ContactStatus.COMPLETED, facts)
            at = max(facts.callback_at or facts.now, facts.now)
            # A callback never uses up the retry budget.
            return self._queued(
                facts, at, max(facts.max_attempts, facts.attempt_no + 1), "callback_requested"
            )
        raise ValueError(f"unknown disposition {d!r}")

    def _queued(
        self, facts: ResultFacts, at: float, max_attempts: int, reason: str
    ) -> ContactChange:
        """Waiting again from `at`, within its calling windows (a time outside them moves to
        their next opening)."""
        next_call_at: float | None = None
        call_until: float | None = None
        interval = self._calling.interval(facts.calling_windows, facts.zones, at)
        if interval is None:  # no common window any more: cancelled at the next claim
            call_until = facts.now  # (see Engine._outcome)
        else:
            next_call_at = interval[0] if interval[0] > facts.now else None
            call_until = interval[1]
            at = max(at, interval[0])
        return ContactChange(
            status=ContactStatus.QUEUED.value,
            next_retry_at=at,
            next_call_at=next_call_at,
            call_until=call_until,
            max_attempts=max_attempts,
            completed_at=None,
            failure_reason=reason,
        )


def _final(
    status: ContactStatus,
    facts: ResultFacts,
    *,
    reason: str | None = None,
    do_not_call: bool = False,
) -> ContactChange:
    return ContactChange(
        status=status.value,
        next_retry_at=None,
        next_call_at=None,
        call_until=None,
        max_attempts=facts.max_attempts,
        completed_at=facts.now,
        failure_reason=reason,
        do_not_call=do_not_call,
    )


# ----------------------------------------------------------------- callback tokens


def callback_token(secret: bytes, room_name: str) -> str:
    """The token that authorizes a result for the attempt in `room_name`, and nothing else."""
    mac = hmac.digest(secret, b"callback-token:" + room_name.encode(), "sha256")
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def token_matches(secret: bytes, room_name: str, presented: str) -> bool:
    """Whether `presented` is the callback token of that one attempt (constant time)."""
    return hmac.compare_digest(callback_token(secret, room_name), presented)


def default_public_url(host: str, port: int) -> str:
    """`[server] public_url` when it is not set: the listening address (a wildcard host read as
    127.0.0.1, the agents then being on the same machine)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def callback_url(public_url: str, room_name: str) -> str:
    return f"{public_url.rstrip('/')}/calls/{room_name}/result"
