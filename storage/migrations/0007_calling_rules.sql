-- Calling within the law: calling windows per contact, job expiry, do-not-call lists,
-- per-number caps and the call records (who called whom, when) on every attempt.

-- A job's windows (JSON list as the API shows them; NULL: always open, as jobs made before
-- windows existed), the zone they are read in ('recipient': each contact's own zones), when its
-- open contacts expire, and the caller number its calls came from.
ALTER TABLE jobs ADD COLUMN calling_windows TEXT;
ALTER TABLE jobs ADD COLUMN window_timezone TEXT NOT NULL DEFAULT 'recipient';
ALTER TABLE jobs ADD COLUMN expires_at REAL;
ALTER TABLE jobs ADD COLUMN from_number TEXT;
CREATE INDEX jobs_expiring ON jobs (expires_at) WHERE expires_at IS NOT NULL;

-- A contact's zones (comma-separated), and the interval it may be dialed in: not before
-- next_call_at (NULL: now), not at or after call_until (NULL: no end). Kept by the events that
-- change them (create, an outcome, the interval ending, a number reaching its cap), so that a
-- claim reads them from its indexes and never evaluates windows.
ALTER TABLE contacts ADD COLUMN timezone TEXT;
ALTER TABLE contacts ADD COLUMN next_call_at REAL;
ALTER TABLE contacts ADD COLUMN call_until REAL;
-- Claims read fresh contacts (next_call_at NULL) in upload order and waiting ones in the
-- order their windows opened; and when a job next has work.
CREATE INDEX contacts_job_status_next_call ON contacts (job_id, status, next_call_at, seq);
-- Contacts whose interval ends (rolled to their next one at that moment).
CREATE INDEX contacts_job_call_until ON contacts (job_id, call_until)
    WHERE call_until IS NOT NULL;
-- Open contacts by number (a number listed or capped affects them in every job).
CREATE INDEX contacts_open_phone ON contacts (phone) WHERE status IN ('pending', 'queued');

-- The call records regulators ask for: on every attempt, the organization, the number called
-- and the caller number.
ALTER TABLE attempts ADD COLUMN organization_id TEXT;
ALTER TABLE attempts ADD COLUMN to_number TEXT;
ALTER TABLE attempts ADD COLUMN from_number TEXT;
UPDATE attempts SET
    organization_id = (SELECT j.organization_id FROM jobs j WHERE j.id = attempts.job_id),
    to_number = (SELECT c.phone FROM contacts c WHERE c.id = attempts.contact_id);
-- Dials to one number within the last 24 h, and live calls to it (caps, one call at a time).
CREATE INDEX attempts_org_number ON attempts (organization_id, to_number, started_at);
-- The records export, by time.
CREATE INDEX attempts_org_started ON attempts (organization_id, started_at, id);

-- Do-not-call lists: one per organization, numbers in E.164.
CREATE TABLE dnc_numbers (
    organization_id TEXT NOT NULL,
    number          TEXT NOT NULL,
    reason          TEXT,
    source          TEXT NOT NULL,               -- 'api', 'import' or 'cli'
    added_at        REAL NOT NULL,
    PRIMARY KEY (organization_id, number)
) WITHOUT ROWID;

-- The contact document gains its zones and the stored time it waits for (a window's opening,
-- a retry, a cap); the page queries show it as nextCallAt only while it is in the future.
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
    'callDuration', c.call_duration, 'timezone', c.timezone, 'nextCallAt', NULL) AS doc
FROM contacts AS c;
