-- Results the agent reports back: what happened on a call beyond what SIP said (a voicemail, a
-- callback request, an opt-out), kept per attempt with their whole history.

-- The secret that signs each attempt's callback token (HMAC of the room name): made once per
-- database, so tokens handed to agents before a restart still verify after it.
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO secrets (name, value) VALUES ('callback_token', lower(hex(randomblob(32))));

-- Whether a voicemail result is retried under the job's retry policy (1) or ends the contact
-- as no_answer (0).
ALTER TABLE jobs ADD COLUMN retry_on_voicemail INTEGER NOT NULL DEFAULT 1;

-- The latest result of the contact's latest attempt, as the API shows it.
ALTER TABLE contacts ADD COLUMN disposition TEXT;
ALTER TABLE contacts ADD COLUMN summary TEXT;
ALTER TABLE contacts ADD COLUMN result_data TEXT;             -- JSON object

-- Every result posted, in order. applied_at: when its effect on the contact was made (NULL
-- while the call it reports on is still live: the engine applies it when the call's outcome
-- is written, in that same transaction).
CREATE TABLE call_results (
    id              INTEGER PRIMARY KEY,
    organization_id TEXT NOT NULL,
    job_id          TEXT NOT NULL,
    contact_id      INTEGER NOT NULL,
    attempt_no      INTEGER NOT NULL,
    room_name       TEXT NOT NULL,
    disposition     TEXT NOT NULL CHECK (disposition IN
                      ('completed', 'not_interested', 'voicemail', 'callback_requested',
                       'do_not_call')),
    callback_at     REAL,
    summary         TEXT,
    data            TEXT,                                    -- JSON object
    source          TEXT NOT NULL,                           -- 'token', 'api_key' or 'simulated'
    received_at     REAL NOT NULL,
    applied_at      REAL
);
CREATE INDEX call_results_attempt ON call_results (contact_id, attempt_no, id);
CREATE INDEX call_results_job ON call_results (job_id, id);
CREATE INDEX call_results_pending ON call_results (contact_id, attempt_no)
    WHERE applied_at IS NULL;

-- The contact document gains the agent's latest result.
DROP VIEW contact_documents;
CREATE VIEW contact_documents AS
SELECT c.id, c.job_id, c.seq, c.status,
    CASE WHEN c.status IN ('pending', 'queued')
         THEN max(coalesce(c.next_call_at, 0), coalesce(c.next_retry_at, 0)) END AS wait_until,
    json_object(
    'id', 'contact_' || c.id, 'phoneNumber', c.phone, 'contactData', json(c.contact_data),
    'status', c.status, 'errorCode', c.error_code, 'attemptCount', c.attempt_count,
    'maxAttempts', c.max_attempts,
    'lastAttemptAt', strftime('%Y-%m-%dT%H:%M:%SZ', c.last_attempt_at, 'unixepoch'),
    'nextRetryAt', strftime('%Y-%m-%dT%H:%M:%SZ', c.next_retry_at, 'unixepoch'),
    'completedAt', strftime('%Y-%m-%dT%H:%M:%SZ', c.completed_at, 'unixepoch'),
    'roomName', c.room_name, 'failureReason', c.failure_reason,
    'callDuration', c.call_duration, 'timezone', c.timezone, 'nextCallAt', NULL,
    'disposition', c.disposition, 'summary', c.summary,
    'resultData', json(c.result_data)) AS doc
FROM contacts AS c;

-- The job document shows whether voicemails are retried.
DROP VIEW job_documents;
CREATE VIEW job_documents AS
SELECT j.id, j.organization_id, j.created_at, j.status, j.deleted_at, json_object(
    'id', j.id, 'name', j.name, 'description', j.description, 'status', j.status,
    'organizationId', j.organization_id, 'agentId', j.agent_id,
    'fromPhoneNumberId', j.phone_number_id, 'totalContacts', j.total_contacts,
    'contactsProcessed', j.successful + j.failed, 'successfulCalls', j.successful,
    'failedCalls', j.failed,
    'scheduledStartTime', strftime('%Y-%m-%dT%H:%M:%SZ', j.scheduled_start_time, 'unixepoch'),
    'actualStartTime', strftime('%Y-%m-%dT%H:%M:%SZ', j.actual_start_time, 'unixepoch'),
    'completedAt', strftime('%Y-%m-%dT%H:%M:%SZ', j.completed_at, 'unixepoch'),
    'createdAt', strftime('%Y-%m-%dT%H:%M:%SZ', j.created_at, 'unixepoch'),
    'concurrentCallLimit', j.concurrent_call_limit,
    'retryPolicy', json_object(
        'maxAttempts', j.max_attempts, 'retryableStatuses', json(j.retry_statuses),
        'retryDelaySeconds', j.retry_delay_seconds, 'backoffMultiplier', j.retry_backoff),
    'retryOnVoicemail', json(CASE WHEN j.retry_on_voicemail THEN 'true' ELSE 'false' END),
    'statusReason', j.status_reason,
    'pauseReason', CASE WHEN j.status = 'paused' THEN j.status_reason END,
    'retryRounds', j.retry_rounds, 'callingWindows', json(j.calling_windows),
    'windowTimezone', j.window_timezone,
    'expiresAt', strftime('%Y-%m-%dT%H:%M:%SZ', j.expires_at, 'unixepoch')) AS doc
FROM (
    SELECT jobs.*,
        coalesce((SELECT n FROM job_status_counts
                  WHERE job_id = jobs.id AND status = 'completed'), 0) AS successful,
        coalesce((SELECT sum(n) FROM job_status_counts
                  WHERE job_id = jobs.id AND status IN ('no_answer', 'busy', 'timeout',
                        'blocked', 'invalid_number', 'carrier_error', 'failed')), 0) AS failed
    FROM jobs) AS j;

-- contact.result: an agent's result, once per result posted (with the result itself).
CREATE TRIGGER webhook_contact_result AFTER INSERT ON call_results
WHEN EXISTS (SELECT 1 FROM webhook_endpoints WHERE organization_id = NEW.organization_id)
BEGIN
    INSERT INTO webhook_outbox (organization_id, type, created_at, data, contact_id, attempt_id)
    VALUES (NEW.organization_id, 'contact.result', NEW.received_at, json_object(
        'contactId', 'contact_' || NEW.contact_id, 'jobId', NEW.job_id,
        'attemptNumber', NEW.attempt_no, 'roomName', NEW.room_name,
        'disposition', NEW.disposition,
        'callbackAt', strftime('%Y-%m-%dT%H:%M:%SZ', NEW.callback_at, 'unixepoch'),
        'summary', NEW.summary, 'resultData', json(NEW.data),
        'receivedAt', strftime('%Y-%m-%dT%H:%M:%SZ', NEW.received_at, 'unixepoch')),
        NULL, NULL);
END;

-- A number an agent was asked never to call again names the job of that call.
ALTER TABLE dnc_numbers ADD COLUMN job_id TEXT;
