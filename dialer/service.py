"""Job operations for the API: create, inspect, list, cancel, start, reschedule.

Every method takes the caller's organization and never touches another organization's jobs.
Errors are `ServiceError`s carrying the API error code.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dialer import estimates, intake, states
from dialer.clock import Clock
from dialer.config import Config
from dialer.scheduler import Engine
from dialer.states import ContactStatus, JobStatus
from storage.db import TransitionError
from storage.store import ContactRow, JobRow, NewContact, NewJob, Store


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


@dataclass(frozen=True, slots=True)
class Created:
    job: NewJob
    total_contacts: int
    estimated_duration: str
    estimated_cost: str


@dataclass(frozen=True, slots=True)
class Detail:
    job: JobRow
    counts: dict[str, int]
    contacts: list[ContactRow]
    contacts_total: int
    estimated_completion: float | None


def parse_schedule(value: str, tz_name: str, now: float) -> float:
    """ISO 8601 -> unix time. An explicit offset wins; a naive time is read in `tz_name`."""
    try:
        zone = ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ServiceError(400, "invalid_timezone", f"Unknown IANA timezone {tz_name!r}") from None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ServiceError(
            400,
            "invalid_scheduled_time",
            f"scheduledStartTime {value[:64]!r} is not an ISO 8601 date-time",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    timestamp = when.timestamp()
    if timestamp <= now:
        raise ServiceError(400, "past_scheduled_time", "scheduledStartTime is in the past")
    return timestamp


def validate_timezone(tz_name: str) -> None:
    try:
        ZoneInfo(tz_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ServiceError(400, "invalid_timezone", f"Unknown IANA timezone {tz_name!r}") from None


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class JobService:
    def __init__(self, config: Config, store: Store, engine: Engine, clock: Clock) -> None:
        self.config = config
        self.store = store
        self.engine = engine
        self.clock = clock

    # ------------------------------------------------------------ create

    async def create(
        self, org_id: str, request: CreateJob, parsed: intake.ParsedContacts
    ) -> Created:
        now = self.clock.now()
        number = self.config.phone_number(request.from_phone_number_id)
        if number is None or number.organization != org_id:
            raise ServiceError(
                404,
                "phone_number_not_found",
                f"Phone number {request.from_phone_number_id!r} not found",
            )
        if number.outbound_agent is None:
            raise ServiceError(
                400,
                "no_outbound_agent",
                f"Phone number {number.id!r} has no outbound agent assigned",
            )
        validate_timezone(request.timezone)
        scheduled = (
            parse_schedule(request.scheduled_start_time, request.timezone, now)
            if request.scheduled_start_time
            else None
        )
        engine_cfg = self.config.engine
        total = len(parsed.contacts)
        cost = estimates.cost_usd(
            total, engine_cfg.default_call_seconds, self.config.pricing.usd_per_minute
        )
        org = self.config.organization(org_id)
        if org is not None and org.credits_usd is not None:
            remaining = org.credits_usd - await self.store.organization_spend(org_id)
            if remaining < cost:
                raise ServiceError(
                    402,
                    "insufficient_credits",
                    f"Estimated cost {estimates.format_usd(cost)} exceeds remaining credits "
                    f"{estimates.format_usd(max(0.0, remaining))}",
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
            agent_id=number.outbound_agent,
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
        )
        await self.store.create_job(
            job, [NewContact(phone, data) for phone, data in parsed.contacts]
        )
        self.engine.notify()
        return Created(
            job=job,
            total_contacts=total,
            estimated_duration=estimates.format_duration(duration),
            estimated_cost=estimates.format_usd(cost),
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
            org_id, job_id, contact_status, page_size, (page - 1) * page_size
        )
        if found is None:
            raise not_found(job_id)
        job, counts, contacts, total, avg = found
        return Detail(
            job=job,
            counts=full_breakdown(counts),
            contacts=contacts,
            contacts_total=total,
            estimated_completion=self._estimated_completion(job, counts, avg),
        )

    def _estimated_completion(
        self, job: JobRow, counts: dict[str, int], avg_call: float | None
    ) -> float | None:
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
        return start + remaining

    async def list(
        self, org_id: str, status: str | None, page: int, page_size: int
    ) -> tuple[list[JobRow], int, dict[str, dict[str, int]]]:
        return await self.store.list_jobs(org_id, status, page_size, (page - 1) * page_size)

    # ------------------------------------------------------------ control

    async def cancel(self, org_id: str, job_id: str) -> tuple[JobRow, int]:
        job = await self.get(org_id, job_id)
        try:
            cancelled = await self.store.cancel_job(org_id, job_id, self.clock.now())
        except TransitionError:
            raise ServiceError(
                400,
                "job_not_cancellable",
                f"Batch job is already {job.status}; only pending, scheduled, running or paused "
                "jobs can be cancelled",
            ) from None
        self.engine.notify()
        return await self.get(org_id, job_id), cancelled

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


def pages(total: int, page: int, size: int) -> bool:
    """Whether there is a page after `page`."""
    return page * size < total if total else False


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b) if b else 0
