"""Pydantic models of the API's answers, errors and query strings, for the OpenAPI document
(api.openapi). Request bodies are validated by their own models (api.batch, api.controls);
answers are held to these by the schemathesis run and the tests. Unknown extra fields are
allowed in answers, so adding a field never breaks a client."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dialer.states import ContactStatus, JobStatus


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


# ----------------------------------------------------------------- errors


class ErrorEnvelope(_Answer):
    """`/batch/...` errors; some carry details (invalidRows, invalidIndexes, quota...)."""

    success: Literal[False]
    error: str
    code: str


class BatchCallingErrorDetail(_Answer):
    status: str
    message: str


class ValidationProblem(_Answer):
    loc: list[str | int]
    msg: str
    type: str


class BatchCallingError(_Answer):
    """`{"detail": {"status", "message"}}`; validation errors (422): `detail` a list."""

    detail: BatchCallingErrorDetail | list[ValidationProblem]


class CallBatchesErrorBody(_Answer):
    code: str
    details: list[str]


class CallBatchesError(_Answer):
    status_code: int
    message: str
    error: CallBatchesErrorBody
    data: None


# ----------------------------------------------------------------- /batch answers


class HealthChecks(_Answer):
    engine: str = Field(description='"ok", or why the engine loop is not running')
    storage: str = Field(description='"ok", or why storage is failing')
    provider: str = Field(description='"ok", or since when the provider is unreachable')


class Health(_Answer):
    """200 while the engine runs and storage works; otherwise 503 with the same shape."""

    ok: bool
    checks: HealthChecks
    engineRunning: bool
    liveCalls: int


class WebhookAnswer(_Answer):
    ok: bool


class InvalidRow(_Answer):
    row: int
    value: str
    reason: str


class CreateAnswer(_Answer):
    success: Literal[True]
    batchJobId: str
    totalContacts: int
    estimatedDuration: str
    estimatedCost: str
    status: JobStatus
    scheduledStartTime: str | None
    message: str
    duplicatesRemoved: int
    invalidRows: list[InvalidRow] | None = None
    invalidCount: int | None = None


class RetryPolicy(_Answer):
    maxAttempts: int
    retryableStatuses: list[str]
    retryDelaySeconds: float
    backoffMultiplier: float


class JobSummary(_Answer):
    id: str
    name: str
    description: str | None
    status: JobStatus
    organizationId: str
    agentId: str
    fromPhoneNumberId: str
    totalContacts: int
    contactsProcessed: int
    successfulCalls: int
    failedCalls: int
    scheduledStartTime: str | None
    actualStartTime: str | None
    completedAt: str | None
    createdAt: str
    concurrentCallLimit: int
    retryPolicy: RetryPolicy
    statusReason: str | None
    pauseReason: str | None
    retryRounds: int
    retryOnVoicemail: bool


class JobList(_Answer):
    success: Literal[True]
    total: int
    page: int
    pageSize: int
    batchJobs: list[JobSummary]


class Contact(_Answer):
    id: str
    phoneNumber: str
    contactData: dict[str, Any]
    status: ContactStatus
    errorCode: str | None
    attemptCount: int
    maxAttempts: int
    lastAttemptAt: str | None
    nextRetryAt: str | None
    completedAt: str | None
    roomName: str | None
    failureReason: str | None
    callDuration: int | None
    disposition: str | None = Field(
        default=None, description="The agent's latest result for the latest attempt"
    )
    summary: str | None = None
    resultData: dict[str, Any] | None = None


class JobDetail(JobSummary):
    statusBreakdown: dict[str, int]
    estimatedCompletionTime: str | None
    contactsTotal: int
    contactsPage: int
    contactsPageSize: int
    contactsHasMore: bool
    contacts: list[Contact]


class CancelAnswer(_Answer):
    success: Literal[True]
    batchJobId: str
    status: JobStatus
    contactsCancelled: int
    message: str


class StartAnswer(_Answer):
    success: Literal[True]
    batchJobId: str
    status: JobStatus
    actualStartTime: str | None
    message: str


class RescheduleAnswer(_Answer):
    success: Literal[True]
    batchJobId: str
    status: JobStatus
    scheduledStartTime: str | None
    timezone: str
    message: str


class ControlAnswer(_Answer):
    success: Literal[True]
    batchJobId: str
    status: JobStatus
    pauseReason: str | None
    message: str


class RetryAnswer(ControlAnswer):
    contactsRequeued: int
    statuses: list[str]
    retryRounds: int
    suppressedCount: int  # in those statuses, left as they ended: their numbers are listed


class ProgressEvent(_Answer):
    """The data of one `progress` or `end` Server-Sent Event."""

    batchJobId: str
    status: JobStatus
    pauseReason: str | None
    statusReason: str | None
    totalContacts: int
    contactsProcessed: int
    successfulCalls: int
    failedCalls: int
    statusBreakdown: dict[str, int]
    completedAt: str | None


class ProgressFrame(_Answer):
    """One Server-Sent Event of the events route: its data is a ProgressEvent as JSON."""

    event: Literal["progress", "end"]
    id: str
    data: str = Field(json_schema_extra={"contentMediaType": "application/json"})


# ----------------------------------------------------------------- compatibility answers


class BatchRecipient(_Answer):
    id: str
    status: str
    created_at_unix: int
    updated_at_unix: int
    phone_number: str
    whatsapp_user_id: None
    conversation_id: str | None
    conversation_initiation_client_data: dict[str, Any]


class BatchCallSummary(_Answer):
    """A batch in the ElevenLabs SDK's `BatchCallResponse` shape."""

    id: str
    name: str
    agent_id: str
    created_at_unix: int
    scheduled_time_unix: int
    last_updated_at_unix: int
    status: str
    agent_name: str
    phone_number_id: str
    phone_provider: str | None
    whatsapp_params: None
    telephony_call_config: dict[str, Any]
    timezone: str | None
    target_concurrency_limit: int | None
    total_calls_dispatched: int
    total_calls_scheduled: int
    total_calls_finished: int
    retry_count: int


class BatchCall(BatchCallSummary):
    """A batch with every recipient (`BatchCallDetailedResponse`)."""

    recipients: list[BatchRecipient]


class BatchCallPage(_Answer):
    batch_calls: list[BatchCallSummary]
    next_doc: str | None
    has_more: bool


class CallItem(_Answer):
    call_id: str
    external_id: str | None
    phone_number: str
    name: str | None
    status: str
    duration_seconds: int | None
    started_at: str | None
    ended_at: str | None
    metadata: dict[str, Any]


class CallsData(_Answer):
    items: list[CallItem]
    total: int
    page: int
    limit: int
    has_more: bool


class CallsPage(_Answer):
    status_code: int
    message: str
    error: None
    data: CallsData


# ----------------------------------------------------------------- query strings

PAGE = Field(default=1, ge=1, le=1_000_000_000)


class ListJobsQuery(BaseModel):
    organizationId: str = Field(min_length=1, max_length=200)
    status: JobStatus | None = None
    page: int = PAGE
    pageSize: int = Field(default=20, ge=1, le=100)


class DetailQuery(BaseModel):
    contactStatus: ContactStatus | None = None
    contactsPage: int = PAGE
    contactsPageSize: int = Field(default=50, ge=1, le=500)


CallStatus = Literal[
    "pending",
    "queued",
    "ringing",
    "answered",
    "in_progress",
    "completed",
    "failed",
    "no_answer",
    "busy",
    "cancelled",
]


class CallsQuery(BaseModel):
    status: CallStatus | None = None
    external_id: str | None = Field(default=None, max_length=200)
    limit: int = Field(default=100, ge=1, le=500)
    page: int = Field(default=1, ge=1, le=1_000_000)
