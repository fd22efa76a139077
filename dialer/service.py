"""Job operations for the API: create, inspect, list, cancel, start, reschedule, pause, resume,
retry, live progress and export.

Every method takes the caller's organization and never touches another organization's jobs.
Errors are `ServiceError`s carrying the API error code.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo
from typing import Any

from dialer import estimates, export, intake, states, windows
from dialer.clock import Clock
from dialer.config import Config, Organization
from dialer.scheduler import Engine
from dialer.states import ContactStatus, JobStatus
from storage.db import JobExpiredError, TransitionError
from storage.rows import (
    BatchSummary,
    CallFilter,
    CallRow,
    ContactRow,
    CreateLimits,
    IdempotencyRecord,
    IdempotencyReplay,
    JobDetailRow,
    JobRow,
    LimitExceeded,
    NewContact,
    NewJob,
)
from storage.store import Store


class ServiceError(Exception):
    """A request that cannot be carried out; `status` is the HTTP status to answer with."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


def not_found(job_id: str) -> ServiceError:
    return ServiceError(404, "job_not_found", f"Batch job {job_id!r} not found")


MANUAL_PAUSE_REASON = "Paused by operator"


def limit_error(exc: LimitExceeded, cost: float, contacts: int) -> ServiceError:
    """The answer to a create that would pass one of its organization's limits."""
    if exc.limit == "credits_usd":
        return ServiceError(
            402,
            "insufficient_credits",
            f"Estimated cost {estimates.format_usd(cost)} exceeds remaining credits "
            f"{estimates.format_usd(exc.available)} (spend plus what unfinished jobs reserve)",
        )
    if exc.limit == "max_active_jobs":
        what = "unfinished jobs (pending, scheduled, running or paused)"
        wanted = "1 more"
    else:
        what = "stored contacts"
        wanted = f"{contacts} more"
    return ServiceError(
        429,
        "quota_exceeded",
        f"Quota {exc.limit} reached: {wanted} {what} would pass it ({int(exc.available)} left)",
        {"quota": exc.limit},
    )


@dataclass(frozen=True, slots=True)
class CreateJob:
    """A validated create request (contacts already parsed)."""

    name: str
    description: str | None
    from_phone_number_id: str
    concurrent_call_limit: int
    max_attempts: int
    scheduled_start_time: str | None
    timezone: str
    # The batch-calling submit's: an explicit agent (else the caller number's outbound agent),
    # a start as unix time (one not in the future starts now), its own ringing timeout.
    agent_id: str | None = None
    scheduled_start_unix: float | None = None
    ringing_timeout_seconds: float | None = None
    calling_windows: windows.Windows | None = None  # None: the organization's default
    window_timezone: str = windows.RECIPIENT
    expires_at: str | None = None
    retry_on_voicemail: bool = True  # an agent's voicemail result is retried under the policy


@dataclass(frozen=True, slots=True)
class Created:
    job: NewJob
    total_contacts: int
    estimated_duration: str
    estimated_cost: str
    suppressed: int = 0  # on the do-not-call list: stored cancelled (do_not_call)
    no_common_window: tuple[str, ...] = ()  # numbers whose zones never share an open window


# How long an Idempotency-Key is remembered.
IDEMPOTENCY_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class Idempotency:
    """A create's Idempotency-Key, the fingerprint of its content, and how to render the
    answer that a retry with the same key and content gets again."""

    key: str
    fingerprint: str
    render: Callable[[Created], dict[str, Any]]


class Replayed(Exception):
    """The create was made before with the same key and content: its first answer (JSON)."""

    def __init__(self, response: str) -> None:
        super().__init__("replayed")
        self.response = response


def replay_or_conflict(fingerprint: str, found: tuple[str, str]) -> Exception:
    kept_fingerprint, response = found
    if kept_fingerprint == fingerprint:
        return Replayed(response)
    return ServiceError(
        409,
        "idempotency_key_reused",
        "This Idempotency-Key was used with a different request in the last 24 hours",
    )


@dataclass(frozen=True, slots=True)
class Detail:
    job: JobRow
    counts: dict[str, int]
    contacts_json: str  # a JSON array of contacts in the API's shape, rendered by the store
    contacts_total: int
    estimated_completion: float | None


@dataclass(frozen=True, slots=True)
class Retried:
    """What a retry did: the job as it is now, the contacts re-queued, the statuses used, and
    the contacts in those statuses left as they ended because their number is on the
    organization's do-not-call list."""

    job: JobRow
    requeued: int
    statuses: tuple[str, ...]
    suppressed: int


# 9999-12-31T23:59:59Z: a later time has no four-digit year to be shown with.
LATEST_SCHEDULE = 253_402_300_799.0


def iso_to_unix(value: str, zone: tzinfo) -> float:
    """ISO 8601 -> unix time: an explicit offset (or Z) wins, a naive time is read in `zone`.
    Raises ValueError when `value` is not an ISO 8601 date-time."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo is not None else when.replace(tzinfo=zone)).timestamp()


def parse_schedule(value: str, tz_name: str, now: float) -> float:
    """ISO 8601 -> unix time. An explicit offset wins; a naive time is read in `tz_name`."""
    try:
        zone = windows.load_zone(tz_name)
    except ValueError:
        raise ServiceError(400, "invalid_timezone", f"Unknown IANA timezone {tz_name!r}") from None
    try:
        timestamp = iso_to_unix(value, zone)
    except ValueError:
        raise ServiceError(
            400,
            "invalid_scheduled_time",
            f"scheduledStartTime {value[:64]!r} is not an ISO 8601 date-time",
        ) from None
    if timestamp > LATEST_SCHEDULE:
        raise ServiceError(
            400, "invalid_scheduled_time", "scheduledStartTime is after 9999-12-31T23:59:59Z"
        )
    if timestamp <= now:
        raise ServiceError(400, "past_scheduled_time", "scheduledStartTime is in the past")
    return timestamp


def parse_expiry(value: str, tz_name: str, now: float) -> float:
    """`expiresAt` (ISO 8601; a naive time is read in `tz_name`) -> unix time in the future."""
    try:
        return parse_schedule(value, tz_name, now)
    except ServiceError as exc:
        if exc.code == "past_scheduled_time":
            raise ServiceError(400, "invalid_expires_at", "expiresAt is in the past") from None
        if exc.code == "invalid_scheduled_time":
            raise ServiceError(
                400, "invalid_expires_at", f"expiresAt {value[:64]!r} is not an ISO 8601 date-time"
            ) from None
        raise


def validate_timezone(tz_name: str) -> None:
    try:
        windows.load_zone(tz_name)
    except ValueError:
        raise ServiceError(400, "invalid_timezone", f"Unknown IANA timezone {tz_name!r}") from None


# Responses repeat the same few seconds (a page of contacts claimed together): format each once.
_ISO_SECONDS: dict[int, str] = {}
# SQLite's julian-day epoch in milliseconds: iso() rounds exactly as SQLite's
# strftime(..., 'unixepoch') does (to the millisecond, then down to the second), so times
# rendered by the store's SQL and by Python always agree.
_JD_EPOCH_MS = 210866760000000.0


def iso(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC to the second (`2026-11-24T09:00:00Z`)."""
    if ts is None:
        return None
    second = (int(ts * 1000.0 + _JD_EPOCH_MS + 0.5) - int(_JD_EPOCH_MS)) // 1000
    text = _ISO_SECONDS.get(second)
    if text is None:
        if len(_ISO_SECONDS) >= 100_000:
            _ISO_SECONDS.clear()
        # Not strftime's %Y: the C library writes year 1 as `1`, SQLite (and ISO 8601) `0001`.
        t = time.gmtime(second)
        text = _ISO_SECONDS[second] = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}Z"
        )
    return text


# Jobs whose contacts' main zones the service keeps (see JobService._estimate_zones).
MAIN_ZONES_KEPT = 10_000


class JobService:
    def __init__(self, config: Config, store: Store, engine: Engine, clock: Clock) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.clock = clock
        self.rules = windows.Rules({})
        # job -> the zones most of its contacts are in (see _estimate_zones)
        self._main_zones: dict[str, tuple[str, ...]] = {}

    # ------------------------------------------------------------ create

    async def create(
        self,
        org_id: str,
        request: CreateJob,
        parsed: intake.ParsedContacts,
        idempotency: Idempotency | None = None,
    ) -> Created:
        """Create a job. With `idempotency`, a key the organization used in the last 24 hours
        raises Replayed (same content) or a 409 ServiceError (other content)."""
        now = self.clock.now()
        if idempotency is not None:
            found = await self.store.find_idempotency_key(
                org_id, idempotency.key, now - IDEMPOTENCY_SECONDS
            )
            if found is not None:
                raise replay_or_conflict(idempotency.fingerprint, found)
        number = self.config.phone_number(request.from_phone_number_id)
        if number is None or number.organization != org_id:
            raise ServiceError(
                404,
                "phone_number_not_found",
                f"Phone number {request.from_phone_number_id!r} not found",
            )
        agent_id = self._agent_for(org_id, request.agent_id, number.id, number.outbound_agent)
        validate_timezone(request.timezone)
        scheduled = (
            parse_schedule(request.scheduled_start_time, request.timezone, now)
            if request.scheduled_start_time
            else None
        )
        if request.scheduled_start_unix is not None and request.scheduled_start_unix > now:
            scheduled = request.scheduled_start_unix
        if request.window_timezone != windows.RECIPIENT:
            validate_timezone(request.window_timezone)
        expires = (
            parse_expiry(request.expires_at, request.timezone, now) if request.expires_at else None
        )
        if expires is not None and scheduled is not None and expires <= scheduled:
            raise ServiceError(
                400, "invalid_expires_at", "expiresAt must be after scheduledStartTime"
            )
        engine_cfg = self.config.engine
        total = len(parsed.contacts)
        cost = estimates.cost_usd(
            total, engine_cfg.default_call_seconds, self.config.pricing.usd_per_minute
        )
        org = self.config.organization(org_id) or Organization(id=org_id)
        job_windows = request.calling_windows or org.default_windows()
        # From now, even for a scheduled job: it may be started early. An interval that has ended
        # by the time the job dials is moved to the next one then. Worked out on a thread: about
        # 30 ms for 10,000 contacts, which on the event loop would hold every request and every
        # slot refill of the engine meanwhile.
        contacts, without_window = await asyncio.to_thread(
            _contacts_in_windows,
            parsed,
            job_windows,
            request.window_timezone,
            request.timezone,
            now,
        )
        duration = estimates.duration_seconds(
            total,
            request.concurrent_call_limit,
            estimates.expected_attempts(request.max_attempts, engine_cfg.expected_answer_rate),
            engine_cfg.default_call_seconds,
        )
        job = NewJob(
            id="batch_" + secrets.token_hex(8),
            organization_id=org_id,
            name=request.name,
            description=request.description,
            status=JobStatus.SCHEDULED if scheduled is not None else JobStatus.PENDING,
            agent_id=agent_id,
            phone_number_id=number.id,
            concurrent_call_limit=request.concurrent_call_limit,
            max_attempts=request.max_attempts,
            retry_statuses=[s.value for s in states.DEFAULT_RETRY_STATUSES],
            retry_delay_seconds=engine_cfg.retry_delay_seconds,
            retry_backoff=engine_cfg.retry_backoff,
            timezone=request.timezone,
            scheduled_start_time=scheduled,
            created_at=now,
            estimated_cost_usd=cost,
            ringing_timeout_seconds=request.ringing_timeout_seconds,
            calling_windows=json.dumps(windows.windows_json(job_windows)),
            window_timezone=request.window_timezone,
            expires_at=expires,
            from_number=number.number,
            retry_on_voicemail=request.retry_on_voicemail,
        )
        limits = CreateLimits(
            credits_usd=org.credits_usd,
            max_active_jobs=org.max_active_jobs,
            max_stored_contacts=org.max_stored_contacts,
        )

        def created(suppressed: int) -> Created:
            return Created(
                job=job,
                total_contacts=total,
                estimated_duration=estimates.format_duration(duration),
                estimated_cost=estimates.format_usd(cost),
                suppressed=suppressed,
                no_common_window=tuple(without_window),
            )

        record = None
        if idempotency is not None:
            render = idempotency.render
            record = IdempotencyRecord(
                key=idempotency.key,
                fingerprint=idempotency.fingerprint,
                response=lambda suppressed: json.dumps(render(created(suppressed))),
                since=now - IDEMPOTENCY_SECONDS,
            )
        try:
            suppressed = await self.store.create_job(job, contacts, limits, record)
        except LimitExceeded as exc:
            raise limit_error(exc, cost, total) from None
        except IdempotencyReplay as exc:  # the same key, committed while this one was checked
            raise replay_or_conflict(
                idempotency.fingerprint if idempotency else "", (exc.fingerprint, exc.response)
            ) from None
        self.engine.notify()
        return created(suppressed)

    def _agent_for(
        self, org_id: str, wanted: str | None, number_id: str, outbound_agent: str | None
    ) -> str:
        """The job's agent: the one asked for (an agent of the organization), else the caller
        number's outbound agent."""
        if wanted is not None:
            agent = self.config.agent(wanted)
            if agent is None or agent.organization != org_id:
                raise ServiceError(404, "agent_not_found", f"Agent {wanted!r} not found")
            return agent.id
        if outbound_agent is None:
            raise ServiceError(
                400,
                "no_outbound_agent",
                f"Phone number {number_id!r} has no outbound agent assigned",
            )
        return outbound_agent

    def caller_number_for_agent(self, org_id: str, agent_id: str) -> str | None:
        """The organization's first caller number whose outbound agent is `agent_id` (an agent
        of the organization)."""
        self._agent_for(org_id, agent_id, "", None)
        return next(
            (
                n.id
                for n in self.config.phone_numbers
                if n.organization == org_id and n.outbound_agent == agent_id
            ),
            None,
        )

    # ------------------------------------------------------------ read

    async def get(self, org_id: str, job_id: str) -> JobRow:
        job = await self.store.get_job(org_id, job_id)
        if job is None:
            raise not_found(job_id)
        return job

    async def detail(
        self, org_id: str, job_id: str, contact_status: str | None, page: int, page_size: int
    ) -> Detail:
        found = await self.store.job_detail(
            org_id, job_id, contact_status, page_size, (page - 1) * page_size, self.clock.now()
        )
        if found is None:
            raise not_found(job_id)
        counts = full_breakdown(self.engine.shown_counts(job_id, found.counts))
        contacts_json, contacts_total = found.contacts_json, found.contacts_total
        if contact_status == ContactStatus.DIALING and self.engine.has_not_live(job_id):
            # Listed as the counts show them: the live calls, not the contacts the database
            # shows dialing whose call has not started (claimed ahead) or has ended.
            live = [
                doc
                for doc in json.loads(contacts_json)
                if not self.engine.is_not_live(int(doc["id"].removeprefix("contact_")))
            ]
            contacts_json = json.dumps(live, separators=(",", ":"), ensure_ascii=False)
            contacts_total = counts[ContactStatus.DIALING.value]
        return Detail(
            job=found.job,
            counts=counts,
            contacts_json=contacts_json,
            contacts_total=contacts_total,
            estimated_completion=self._estimated_completion(
                found,
                await self._estimate_zones(found.job)
                if found.job.calling_windows is not None
                and found.job.status not in states.TERMINAL_JOB_STATUSES
                else (),
            ),
        )

    async def _estimate_zones(self, job: JobRow) -> tuple[str, ...]:
        """The zones a job's windows are read in for its estimate: its window zone, or with
        windows read in each recipient's zones, those most of its contacts are in (read once a
        job: they do not change). It read them in the job's own zone (UTC by default): a list
        of numbers in India, called 10:00-11:00, was estimated to finish at 15:30 there."""
        if job.window_timezone != windows.RECIPIENT:
            return (job.window_timezone,)
        zones = self._main_zones.get(job.id)
        if zones is None:
            if len(self._main_zones) >= MAIN_ZONES_KEPT:
                self._main_zones.clear()
            stored = await self.store.main_zones(job.id)
            zones = self._main_zones[job.id] = (
                windows.split_zones(stored) if stored else (job.timezone,)
            )
        return zones

    def _estimated_completion(self, found: JobDetailRow, zones: tuple[str, ...]) -> float | None:
        job, counts, avg_call = found.job, found.counts, found.job.average_call_seconds
        if job.status in states.TERMINAL_JOB_STATUSES:
            return job.completed_at if job.status == JobStatus.COMPLETED else None
        now = self.clock.now()
        start = now
        if job.status == JobStatus.SCHEDULED and job.scheduled_start_time is not None:
            start = max(now, job.scheduled_start_time)
        open_contacts = counts.get(ContactStatus.PENDING, 0) + counts.get(ContactStatus.QUEUED, 0)
        call_seconds = avg_call if avg_call else self.config.engine.default_call_seconds
        remaining = estimates.remaining_seconds(
            open_contacts,
            counts.get(ContactStatus.DIALING, 0),
            job.concurrent_call_limit,
            call_seconds,
        )
        if job.calling_windows is not None:
            # Calls are only made while the windows are open: the remaining work is spread
            # over open time (read in the job's window zone, else its contacts' main zones),
            # and no contact finishes before its window first opens.
            job_windows = self.rules.windows(job.calling_windows)
            try:
                finish = windows.advance_open(job_windows, zones, start, remaining)
            except (ValueError, OverflowError):  # past year 9999: no date to tell
                return None
            if found.last_call_due is not None:
                finish = max(finish, found.last_call_due + call_seconds)
        else:
            finish = start + remaining
        if found.last_retry_due is not None:
            # A queued retry cannot finish before it is due.
            finish = max(finish, found.last_retry_due + call_seconds)
        return finish if finish <= LATEST_SCHEDULE else None  # (shown with a 4-digit year)

    async def list(
        self, org_id: str, status: str | None, page: int, page_size: int
    ) -> tuple[str, int]:
        """A page of jobs as a JSON array in the API's shape (rendered by the store), and the
        total matching."""
        return await self.store.list_jobs_json(org_id, status, page_size, (page - 1) * page_size)

    # ------------------------------------------------------------ control

    async def cancel(self, org_id: str, job_id: str) -> tuple[JobRow, int]:
        job = await self.get(org_id, job_id)
        # As in pause. The contacts claimed ahead are `dialing` until their give-back is
        # written (then `cancelled`, their job being cancelled): counted with those cancelled
        # here (the answer fell short of them).
        given_back = self.engine.give_back_claimed_ahead(job_id)
        try:
            cancelled = await self.store.cancel_job(org_id, job_id, self.clock.now())
        except TransitionError:
            job = await self.get(org_id, job_id)  # as it is now (another request may have won)
            raise ServiceError(
                400,
                "job_not_cancellable",
                f"Batch job is already {job.status}; only pending, scheduled, running or paused "
                "jobs can be cancelled",
            ) from None
        self.engine.notify()
        return await self.get(org_id, job_id), cancelled + given_back

    async def start_now(self, org_id: str, job_id: str) -> JobRow:
        job = await self.get(org_id, job_id)
        if job.status == JobStatus.RUNNING:
            return job  # idempotent
        started = await self.store.start_jobs(
            [job_id], [JobStatus.SCHEDULED, JobStatus.PENDING], self.clock.now()
        )
        if not started:
            raise ServiceError(
                400,
                "job_not_startable",
                f"Batch job is {job.status}; only scheduled or pending jobs can be started",
            )
        self.engine.notify()
        return await self.get(org_id, job_id)

    async def reschedule(
        self, org_id: str, job_id: str, when_text: str, tz_name: str | None
    ) -> JobRow:
        job = await self.get(org_id, job_id)
        tz = tz_name or job.timezone
        validate_timezone(tz)
        now = self.clock.now()
        when = parse_schedule(when_text, tz, now)
        expires = job.expires_at if job.status in states.RESCHEDULABLE_JOB_STATUSES else None
        if expires is not None and when >= expires:  # as create refuses it
            raise ServiceError(
                400,
                "invalid_expires_at",
                f"scheduledStartTime must be before the job's expiresAt ({iso(expires)})",
            )
        try:
            await self.store.reschedule_job(org_id, job_id, when, tz, now)
        except TransitionError:
            raise ServiceError(
                400,
                "job_not_reschedulable",
                f"Batch job is {job.status}; only pending or scheduled jobs can be rescheduled",
            ) from None
        self.engine.notify()
        return await self.get(org_id, job_id)

    # ------------------------------------------------------------ job controls

    async def pause(self, org_id: str, job_id: str, reason: str | None) -> JobRow:
        """Stop dialing for a job; its live calls finish and are recorded. Idempotent."""
        job = await self.get(org_id, job_id)
        if job.status == JobStatus.PAUSED:
            return job
        # No contact claimed ahead is dialed from now on (and again once it is written, see
        # notify: any claimed meanwhile were claimed while the job still ran).
        self.engine.give_back_claimed_ahead(job_id)
        _, status = await self.store.pause_job(
            job_id,
            reason or MANUAL_PAUSE_REASON,
            self.clock.now(),
            states.PAUSABLE_JOB_STATUSES,
            organization_id=org_id,
        )
        # Judged on the status the write saw: another request may change it again before the
        # job is read back (a pause racing a resume is still a pause, then a resume).
        if status is None:  # deleted meanwhile: 404, as a request after the delete
            await self.get(org_id, job_id)
        if status != JobStatus.PAUSED:
            raise ServiceError(
                400,
                "job_not_pausable",
                f"Batch job is {status}; only pending, scheduled or running jobs can be paused",
            )
        self.engine.notify()
        return await self.get(org_id, job_id)

    async def resume(self, org_id: str, job_id: str) -> JobRow:
        """Let a paused job dial again. Resuming an active job that is not paused is a no-op.
        While the organization's spend is at its credits, a paused job stays paused (402)."""
        job = await self.get(org_id, job_id)
        org = self.config.organization(org_id)
        if job.status == JobStatus.PAUSED and org is not None and org.credits_usd is not None:
            spent = await self.store.organization_spend(org_id)
            if spent > 0 and spent >= org.credits_usd and await self._has_open_contacts(job_id):
                raise ServiceError(
                    402,
                    "insufficient_credits",
                    f"Credits exhausted: {estimates.format_usd(spent)} spent of "
                    f"{estimates.format_usd(org.credits_usd)}; raise credits_usd before resuming",
                )
        resumed, status = await self.store.resume_job(org_id, job_id, self.clock.now())
        if status is None:  # deleted meanwhile: 404, as a request after the delete
            await self.get(org_id, job_id)
        if resumed:
            self.engine.job_resumed(job_id)
        elif status not in states.PAUSABLE_JOB_STATUSES:
            raise ServiceError(
                400,
                "job_not_resumable",
                f"Batch job is {status}; only paused jobs can be resumed",
            )
        return await self.get(org_id, job_id)

    async def _has_open_contacts(self, job_id: str) -> bool:
        """Whether the job has contacts still to be dialed or in a call: a paused job with
        none resumes (and completes) without credits, as nothing it does can spend them."""
        counts = await self.store.status_counts(job_id)
        open_statuses = (ContactStatus.PENDING, ContactStatus.QUEUED, ContactStatus.DIALING)
        return any(counts.get(status.value, 0) for status in open_statuses)

    async def retry(
        self, org_id: str, job_id: str, statuses: Sequence[str] | None, attempts: int
    ) -> Retried:
        """Re-queue contacts that ended in `statuses` (default: the job's retryable ones),
        except those whose number is on the do-not-call list (left as they ended)."""
        job = await self.get(org_id, job_id)
        wanted = tuple(statuses) if statuses else job.retry_statuses
        try:
            requeued, suppressed = await self.store.retry_contacts(
                org_id, job_id, wanted, attempts, self.clock.now(), states.RETRYABLE_JOB_STATUSES
            )
        except JobExpiredError:
            raise ServiceError(
                400,
                "job_expired",
                f"Batch job expired at {iso(job.expires_at)}; its contacts keep their outcomes "
                "and cannot be retried (create a new job to call them again)",
            ) from None
        except TransitionError:
            raise ServiceError(
                400,
                "job_not_retryable",
                f"Batch job is {job.status}; only running, paused, completed or failed jobs "
                "can be retried",
            ) from None
        if requeued:
            self.engine.job_resumed(job_id)
        return Retried(await self.get(org_id, job_id), requeued, wanted, suppressed)

    async def snapshot(self, org_id: str, job_id: str) -> tuple[JobRow, dict[str, int]]:
        """The job and its contact status counts, read together."""
        found = await self.store.job_with_counts(org_id, job_id)
        if found is None:
            raise not_found(job_id)
        return found[0], self.engine.shown_counts(job_id, found[1])

    async def batch_contacts(self, job_id: str, limit: int, offset: int) -> Sequence[ContactRow]:
        """A page of a job's contacts in upload order (the job's organization already checked
        by `batch_summary`)."""
        return await self.store.list_contacts(job_id, None, limit, offset)

    async def batch_summary(self, org_id: str, job_id: str) -> BatchSummary:
        """A job with its batch figures (no contacts)."""
        found = await self.store.batch_summary(org_id, job_id)
        if found is None:
            raise not_found(job_id)
        return self._shown(found)

    def _shown(self, summary: BatchSummary) -> BatchSummary:
        """The summary with the counts the engine shows (see Engine.shown_counts)."""
        job_id = summary.job.id
        shown = self.engine.shown_counts(job_id, summary.counts)
        dispatched, retries = self.engine.shown_dials(job_id, summary.dispatched, summary.retries)
        if shown is summary.counts and (dispatched, retries) == (
            summary.dispatched,
            summary.retries,
        ):
            return summary
        return replace(summary, counts=shown, dispatched=dispatched, retries=retries)

    async def batches(
        self, org_id: str, agent_id: str | None, after_id: str | None, limit: int
    ) -> tuple[Sequence[BatchSummary], bool]:
        """Up to `limit` jobs newest first after the job `after_id`, and whether more follow."""
        found = await self.store.list_batches(org_id, agent_id, after_id, limit + 1)
        if found is None:
            raise ServiceError(404, "cursor_not_found", f"No batch {after_id!r} to page after")
        return [self._shown(b) for b in found[:limit]], len(found) > limit

    async def calls(
        self, org_id: str, job_id: str, where: CallFilter, limit: int, offset: int
    ) -> tuple[Sequence[CallRow], int]:
        """A page of a job's contacts with their latest attempt, and the filtered total."""
        await self.get(org_id, job_id)
        calls, total = await self.store.list_calls(job_id, where, limit, offset, count=True)
        return calls, total or 0

    async def delete(self, org_id: str, job_id: str) -> None:
        """Hide a finished job from every route; its contacts and attempt rows stay."""
        job = await self.get(org_id, job_id)
        if not await self.store.delete_job(org_id, job_id, self.clock.now()):
            raise ServiceError(
                400,
                "job_not_deletable",
                f"Batch job is {job.status}; only completed, failed or cancelled jobs with no "
                "call still live can be deleted (cancel it first)",
            )

    async def export_csv(self, org_id: str, job_id: str) -> tuple[JobRow, AsyncIterator[bytes]]:
        """The job and its contacts as CSV chunks (read page by page, never all at once)."""
        job = await self.get(org_id, job_id)
        return job, export.csv_chunks(self.store, job.id, self.clock.now())

    def call_records(self, org_id: str, start: float, end: float) -> AsyncIterator[bytes]:
        """Every attempt of the organization started in [start, end) as CSV chunks."""
        return export.call_record_chunks(self.store, org_id, start, end)


def full_breakdown(counts: dict[str, int]) -> dict[str, int]:
    """All 12 contact statuses, zeros included, in the documented order."""
    return {s.value: int(counts.get(s.value, 0)) for s in ContactStatus}


def progress(job: JobRow, counts: dict[str, int]) -> dict[str, int]:
    """contactsProcessed / successfulCalls / failedCalls from the status counts."""
    successful = counts.get(ContactStatus.COMPLETED, 0)
    failed = sum(counts.get(s, 0) for s in states.FAILURE_STATUSES)
    return {
        "totalContacts": job.total_contacts,
        "contactsProcessed": successful + failed,
        "successfulCalls": successful,
        "failedCalls": failed,
    }


def _contacts_in_windows(
    parsed: intake.ParsedContacts,
    job_windows: windows.Windows,
    window_timezone: str,
    job_timezone: str,
    at: float,
) -> tuple[list[NewContact], list[str]]:
    """The contacts to store, each with its zones and the interval it may first be dialed in;
    those whose zones never share an open window are stored cancelled (no_common_window).
    Also the numbers of those."""
    contacts: list[NewContact] = []
    without: list[str] = []
    intervals: dict[tuple[str, ...], tuple[float, float | None] | None] = {}
    for phone, data in parsed.contacts:
        # Intake hands data over as JSON text; only a contact that names a zone is decoded.
        explicit = (
            (json.loads(data).get("timezone") if '"timezone"' in data else None)
            if isinstance(data, str)
            else data.get("timezone")
        )
        zones = windows.contact_zones(
            explicit if isinstance(explicit, str) and explicit else None,
            phone,
            window_timezone,
            job_timezone,
        )
        if zones not in intervals:
            intervals[zones] = windows.next_callable(job_windows, zones, at)
        found = intervals[zones]
        joined = windows.join_zones(zones)
        if found is None:
            without.append(phone)
            contacts.append(
                NewContact(
                    phone, data, joined, status="cancelled", failure_reason="no_common_window"
                )
            )
            continue
        start, until = found
        contacts.append(NewContact(phone, data, joined, start if start > at else None, until))
    return contacts, without
